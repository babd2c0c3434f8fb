"""`docker import`: a root filesystem tar (plus Dockerfile-style changes) → a one-layer image."""

import json
import platform
import shlex
from typing import Any, BinaryIO

from stowd import __version__
from stowd.engine.errors import InvalidParameter
from stowd.engine.images.store import now_rfc3339

ALLOWED_CHANGES = {"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL",
                   "USER", "VOLUME", "WORKDIR"}

GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
          "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def host_arch() -> str:
    return GOARCH.get(platform.machine(), platform.machine())


def _json_or_shell(rest: str) -> list[str]:
    rest = rest.strip()
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", rest]


def _pairs(rest: str, instruction: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs (quoted as the shell quotes), or the legacy `KEY VALUE` form."""
    words = shlex.split(rest)
    if not words:
        raise InvalidParameter(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidParameter(f"{instruction} names can not be blank")
        return [(key, value.strip())]
    out = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"{instruction} names can not be blank")
        out.append((key, value))
    return out


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile-style change lines to an image's container config."""
    for line in changes:
        line = line.strip()
        if not line:
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction not in ALLOWED_CHANGES:
            raise InvalidParameter(f"{instruction} is not a valid change command")
        if instruction == "CMD":
            config["Cmd"] = _json_or_shell(rest)
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = _json_or_shell(rest)
        elif instruction == "ENV":
            env = [e for e in config.get("Env") or []]
            for key, value in _pairs(rest, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            config["Env"] = env
        elif instruction == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(rest, "LABEL"))
            config["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for port in rest.split():
                if "/" not in port:
                    port += "/tcp"
                number, proto = port.split("/", 1)
                if not number.split("-")[0].isdigit() or proto not in ("tcp", "udp", "sctp"):
                    raise InvalidParameter(f"invalid port: {port}")
                ports[port] = {}
            config["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            vols = dict(config.get("Volumes") or {})
            for v in _json_or_shell(rest) if rest.strip().startswith("[") else rest.split():
                vols[v] = {}
            config["Volumes"] = vols
        elif instruction == "WORKDIR":
            config["WorkingDir"] = rest.strip()
        elif instruction == "USER":
            config["User"] = rest.strip()
        elif instruction == "STOPSIGNAL":
            config["StopSignal"] = rest.strip()
        elif instruction == "ONBUILD":
            config["OnBuild"] = [*(config.get("OnBuild") or []), rest.strip()]
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
