"""`docker import`: a root filesystem tar (plus Dockerfile-style changes) → a one-layer image."""

import json
import platform
import posixpath
import shlex
from typing import Any, BinaryIO

from stowd import __version__
from stowd.engine.errors import InvalidParameter
from stowd.engine.images.store import now_rfc3339
from stowd.engine.timespec import parse_duration

# The Dockerfile instructions dockerd 20.10 accepts in `changes` (import and commit).
ALLOWED_CHANGES = {"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL", "ONBUILD",
                   "USER", "VOLUME", "WORKDIR"}
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
          "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def host_arch() -> str:
    return GOARCH.get(platform.machine(), platform.machine())


def _exec_form(rest: str) -> list[str] | None:
    """The arguments when rest is a JSON array of strings (the exec form), else None."""
    rest = rest.strip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _json_or_shell(rest: str) -> list[str]:
    """The exec form or the shell form of CMD and ENTRYPOINT."""
    exec_form = _exec_form(rest)
    if exec_form is not None:
        return exec_form
    return ["/bin/sh", "-c", rest.strip()] if rest.strip() else ["/bin/sh", "-c"]


def _words(rest: str, instruction: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError as exc:
        raise InvalidParameter(f"{instruction}: {exc}") from exc


def _pairs(rest: str, instruction: str) -> list[tuple[str, str]]:
    """ENV and LABEL arguments: `k=v` words (quoted as the shell quotes), or `KEY value`."""
    words = _words(rest, instruction)
    if not words:
        raise InvalidParameter(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        # The legacy form: one key, and the rest of the line as its value.
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidParameter(f"{instruction} must have two arguments")
        return [(key, value.strip())]
    out = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise InvalidParameter(f"Syntax error - can't find = in {json.dumps(word)}. "
                                   "Must be of the form: name=value")
        if not key:
            raise InvalidParameter(f"{instruction} names can not be blank")
        out.append((key, value))
    return out


def _exposed_ports(rest: str) -> list[str]:
    """EXPOSE arguments → `port/proto` keys; ranges (`80-82`) name each port."""
    words = rest.split()
    if not words:
        raise InvalidParameter("EXPOSE requires at least one argument")
    out = []
    for word in words:
        number, _, proto = word.partition("/")
        proto = proto.lower() or "tcp"
        if proto not in PORT_PROTOCOLS:
            raise InvalidParameter(f"Invalid proto: {proto}")
        low, dash, high = number.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()) or int(low) > 65535 \
                or (dash and (int(high) > 65535 or int(high) < int(low))):
            raise InvalidParameter(f"Invalid containerPort: {number}")
        for port in range(int(low), int(high if dash else low) + 1):
            out.append(f"{port}/{proto}")
    return out


def _healthcheck(rest: str) -> dict[str, Any]:
    words = rest.split(None, 1)
    check: dict[str, Any] = {}
    options = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
               "start-interval": "StartInterval", "retries": "Retries"}
    while words and words[0].startswith("--"):
        flag, _, value = words[0][2:].partition("=")
        if flag not in options:
            raise InvalidParameter(f"Unknown flag: {flag}")
        if flag == "retries":
            if not value.isdigit():
                raise InvalidParameter(f"invalid retries value: {value}")
            check["Retries"] = int(value)
        else:
            check[options[flag]] = parse_duration(value)
        words = words[1].split(None, 1) if len(words) > 1 else []
    if not words:
        raise InvalidParameter("Missing command after HEALTHCHECK")
    kind = words[0].upper()
    args = words[1] if len(words) > 1 else ""
    if kind == "NONE":
        if args or check:
            raise InvalidParameter("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise InvalidParameter(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    exec_form = _exec_form(args)
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", args.strip()]
    return {"Test": test, **check}


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile-style change lines to an image's container config.

    Instructions, arguments and error messages follow dockerd 20.10's `changes`."""
    for line in changes:
        line = line.strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        rest = rest.strip()
        if instruction not in ALLOWED_CHANGES:
            raise InvalidParameter(f"{word.lower()} is not a valid change command")
        if instruction == "CMD":
            config["Cmd"] = _json_or_shell(rest)
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = _json_or_shell(rest)
        elif instruction == "ENV":
            env = list(config.get("Env") or [])
            for key, value in _pairs(rest, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            config["Env"] = env
        elif instruction == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(rest, "LABEL"))
            config["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            ports.update({port: {} for port in _exposed_ports(rest)})
            config["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            paths = _exec_form(rest)
            if paths is None:
                paths = rest.split()
            if not paths:
                raise InvalidParameter("VOLUME requires at least one argument")
            config["Volumes"] = {**(config.get("Volumes") or {}), **{v: {} for v in paths}}
        elif instruction == "WORKDIR":
            if not rest:
                raise InvalidParameter("WORKDIR requires exactly one argument")
            config["WorkingDir"] = posixpath.join(config.get("WorkingDir") or "/", rest)
        elif instruction == "USER":
            if len(_words(rest, "USER")) != 1:
                raise InvalidParameter("USER requires exactly one argument")
            config["User"] = rest
        elif instruction == "HEALTHCHECK":
            config["Healthcheck"] = _healthcheck(rest)
        elif instruction == "ONBUILD":
            if not rest:
                raise InvalidParameter("ONBUILD requires at least one argument")
            config["OnBuild"] = [*(config.get("OnBuild") or []), rest]
    return config


def import_config(diff_id: str, changes: list[str], message: str) -> bytes:
    """The image config document for an imported root filesystem."""
    created = now_rfc3339()
    container_config = apply_changes({}, changes)
    history: dict[str, Any] = {"created": created, "created_by": "", "comment":
                               message or "Imported from -"}
    doc = {
        "architecture": host_arch(),
        "os": "linux",
        "created": created,
        "docker_version": f"stowd-{__version__}",
        "comment": message or "Imported from -",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [history],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def import_rootfs(images: Any, source: BinaryIO, changes: list[str], message: str,
                  tags: list[Any]) -> Any:
    """Store source as a layer and record the image; returns (image, replaced image IDs)."""
    chain, diff_id, _ = images.store_layer(source, None)
    config_bytes = import_config(diff_id, changes, message)
    return images.add_image(config_bytes, [chain], tags)
