"""The dispatchers: each instruction applied to the image being built, as dockerd's classic
builder does (`builder/dockerfile/dispatchers.go`, `internals.go`, `evaluator.go`).

Every step ends in an image of its own (untagged, its parent the step before), which is
what the cache finds again. Metadata steps (ENV, CMD, LABEL, ...) only write a new config;
RUN runs a container of the step's image and commits its writable layer; COPY and ADD
write their new layer straight into the layer store. The words streamed are dockerd's.
"""

import asyncio
import contextlib
import datetime
import email.utils
import json
import logging
import os
import platform as host_platform
import posixpath
import secrets
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from stowd import __version__
from stowd.engine.attach import STDERR
from stowd.engine.build import cache
from stowd.engine.build import copy as copying
from stowd.engine.build.parse import Dockerfile, Instruction, Stage, parse_duration, parse_trigger
from stowd.engine.build.shlex import ShellLexError, env_map, process_word, process_words
from stowd.engine.cpview import run_in_own_thread
from stowd.engine.errors import EngineError, InvalidParameter
from stowd.engine.images import reference
from stowd.engine.images.save import retar_layer
from stowd.engine.images.store import Image, ImageStore, now_rfc3339
from stowd.engine.runtime.spec import DEFAULT_PATH

log = logging.getLogger("stowd.build")

DEFAULT_SHELL = ["/bin/sh", "-c"]
_ERROR_BODY = 4096  # of a failed ADD <url>'s answer, quoted in the error (dockerd: all)
# Build args every build accepts without an ARG (dockerd's builtinAllowedBuildArgs).
BUILTIN_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}
HOST_ARCH = _ARCH.get(host_platform.machine(), host_platform.machine())

Emit = Callable[[dict[str, Any]], Awaitable[None]]


class BuildError(Exception):
    """A failed step: the message (and for RUN the exit code) of the errorDetail line."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BuildHost(Protocol):
    """What the builder needs from the engine."""

    images: ImageStore

    async def create_container(self, config: dict[str, Any], host_config: dict[str, Any]
                               ) -> tuple[str, list[str]]:
        """Create (not start) a container: its ID and the engine's warnings."""
        ...

    async def run_container(self, cid: str,
                            output: Callable[[int, bytes], Awaitable[None]]) -> int:
        """Start a created container and wait for it; its output (stream 1 or 2, the
        bytes) as it comes."""
        ...

    def upper_dir(self, container_id: str) -> Path: ...

    async def remove_container(self, container_id: str) -> None: ...

    async def tag(self, image_id: str, ref: reference.Reference) -> None: ...

    def pull(self, ref: reference.Reference, platform: str, auth: dict[str, Any]
             ) -> AsyncIterator[dict[str, Any]]:
        """Pull ref from its registry: dockerd's progress lines as they come."""
        ...


@dataclass
class BuildOptions:
    dockerfile: str = ""
    tags: list[reference.Reference] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    nocache: bool = False
    pull: bool = False
    rm: bool = True
    forcerm: bool = False
    network_mode: str = ""
    extra_hosts: list[str] = field(default_factory=list)
    shm_size: int = 0
    cache_from: list[str] = field(default_factory=list)
    platform: str = ""
    resources: dict[str, Any] = field(default_factory=dict)
    registry_auth: dict[str, Any] = field(default_factory=dict)  # X-Registry-Config


@dataclass
class StageState:
    name: str
    image: Image | None  # None: FROM scratch, nothing committed yet
    config: dict[str, Any]
    args: dict[str, str | None] = field(default_factory=dict)  # ARGs declared here

    @property
    def image_id(self) -> str:
        return self.image.id if self.image else ""

    @property
    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)


def go_quote_list(items: list[str]) -> str:
    """Go's `%q` of a []string: `["a" "b"]`."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def empty_config() -> dict[str, Any]:
    return {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
            "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
            "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
            "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None}


def config_from_image(image: Image) -> dict[str, Any]:
    config = empty_config()
    config.update(json.loads(json.dumps(image.container_config)))
    return config


class Builder:
    def __init__(self, host: BuildHost, options: BuildOptions, context: Path, scratch: Path,
                 emit: Emit) -> None:
        self.host = host
        self.images = host.images
        self.opts = options
        self.context = context
        self.scratch = scratch  # this build's own directory for views and staging
        self.emit = emit
        self.escape = "\\"
        self.meta_args: dict[str, str | None] = {}
        self.referenced: set[str] = set()
        self.stages: dict[str, Image | None] = {}
        self.stage_list: list[Image | None] = []
        self.cache_sources: list[Image] = []
        self.children_probe = not options.nocache

    # output ---------------------------------------------------------------------------

    async def say(self, text: str) -> None:
        await self.emit({"stream": text})

    async def step_done(self, st: StageState) -> None:
        await self.say(f" ---> {st.image_id.removeprefix('sha256:')[:12]}\n")

    # the build ------------------------------------------------------------------------

    async def build(self, df: Dockerfile) -> Image:
        self.escape = df.escape
        stages = df.stages
        if self.opts.target:
            names = [s.name for s in stages]
            if self.opts.target.lower() not in names:
                raise InvalidParameter(f"failed to reach build target {self.opts.target} in "
                                       "Dockerfile")
            stages = stages[:names.index(self.opts.target.lower()) + 1]
        for name in self.opts.cache_from:
            image = await asyncio.to_thread(self.images.find, name)
            if image is not None:
                self.cache_sources.append(image)
        total = len(df.meta_args) + sum(1 + len(s.commands) for s in stages)
        number = 0
        for ins in df.meta_args:
            number += 1
            await self.say(f"Step {number}/{total} : {ins.original}")
            await self.say("\n")
            for name, value in self._arg_pairs(ins, {}):
                self.meta_args[name] = value
                self.referenced.add(name)
        state: StageState | None = None
        for stage in stages:
            if stage.name and stage.name in self.stages:
                # dockerd's checkStageNameAvailable, before the stage's Step line.
                raise BuildError(f"{stage.name} stage name already used")
            number += 1
            await self.say(f"Step {number}/{total} : {stage.instruction.original}")
            await self.say("\n")
            state = await self.from_(stage)
            await self.step_done(state)
            for ins in stage.commands:
                number += 1
                await self.say(f"Step {number}/{total} : {ins.original}")
                await self.say("\n")
                await self.dispatch(state, ins)
                await self.step_done(state)
            await self.emit_stage_result(state)
            self.stages[stage.name or str(stage.index)] = state.image
            self.stage_list.append(state.image)
        assert state is not None
        if state.image is None:
            raise BuildError("No image was generated. Is your Dockerfile empty?")
        unused = sorted(k for k in self.opts.build_args
                        if k not in self.referenced and k not in BUILTIN_ARGS)
        if unused:
            await self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                           "consumed\n")
        return state.image

    async def emit_stage_result(self, state: StageState) -> None:
        if state.image is not None:
            await self.emit({"aux": {"ID": state.image.id}})

    # FROM -----------------------------------------------------------------------------

    def _meta_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for key, default in self.meta_args.items():
            value = self.opts.build_args.get(key)
            if value is None:
                value = default
            if value is not None:
                env[key] = value
        for key in BUILTIN_ARGS:
            if self.opts.build_args.get(key) is not None:
                env[key] = self.opts.build_args[key]  # type: ignore[assignment]
        return env

    async def from_(self, stage: Stage) -> StageState:
        ins = stage.instruction
        try:
            base = process_word(stage.base, self._meta_env(), self.escape)
        except ShellLexError as exc:
            raise BuildError(str(exc)) from None
        if stage.platform:
            self._check_platform(process_word(stage.platform, self._meta_env(), self.escape))
        if not base:
            raise BuildError(f"base name (${stage.base}) should not be blank")
        name = stage.name
        if base.lower() == "scratch":
            return StageState(name, None, _with_default_path(empty_config()))
        if base.lower() in self.stages:
            image = self.stages[base.lower()]
        elif base.isdigit() and int(base) < len(self.stage_list):
            image = self.stage_list[int(base)]
        else:
            image = await self._base_image(base, ins)
        if image is None:  # an earlier stage FROM scratch with nothing in it
            return StageState(name, None, _with_default_path(empty_config()))
        state = StageState(name, image, _with_default_path(config_from_image(image)))
        triggers = list(state.config.get("OnBuild") or [])
        state.config["OnBuild"] = None
        if triggers:
            plural = "s" if len(triggers) > 1 else ""
            await self.say(f"# Executing {len(triggers)} build trigger{plural}")
            await self.say("\n")
            for text in triggers:
                await self.dispatch(state, parse_trigger(text))
        return state

    def _check_platform(self, text: str) -> None:
        if not text:
            return
        parts = text.split("/")
        if parts[0] != "linux" or (len(parts) > 1 and parts[1] != HOST_ARCH):
            raise BuildError(f'"{text}" is not a platform stowd can run (linux/{HOST_ARCH})')

    async def _base_image(self, name: str, ins: Instruction) -> Image:
        try:
            ref = reference.parse(name)
        except InvalidParameter as exc:
            raise BuildError(str(exc)) from None
        image = await asyncio.to_thread(self.images.find, ref.full())
        if image is None and not self.opts.pull and reference.is_image_id_like(name):
            image = await asyncio.to_thread(self.images.find, name)
        if image is None or self.opts.pull:
            # As dockerd: a missing base image (or any, with pull=1) comes from its registry,
            # its progress in the build's stream.
            try:
                async for line in self.host.pull(ref, self.opts.platform,
                                                 self.opts.registry_auth):
                    await self.emit(line)
            except EngineError as exc:
                raise BuildError(exc.message) from None
            image = await asyncio.to_thread(self.images.find, ref.full())
        if image is None:
            raise BuildError(f"No such image: {name}")
        return image

    # dispatch -------------------------------------------------------------------------

    def stage_env(self, st: StageState) -> dict[str, str]:
        """What `$VAR` sees in a stage: the config's Env, then the build args it allows."""
        env = env_map(list(st.config.get("Env") or []))
        for key, value in self._allowed_args(st).items():
            env.setdefault(key, value)
        return env

    def _allowed_args(self, st: StageState) -> dict[str, str]:
        """dockerd's GetAllAllowed: declared ARGs with a value, and builtins given."""
        out: dict[str, str] = {}
        for key, default in st.args.items():
            given = self.opts.build_args.get(key)
            if given is not None:
                out[key] = given
            elif default is not None:
                out[key] = default
            elif self.meta_args.get(key) is not None:
                out[key] = self.meta_args[key]  # type: ignore[assignment]
        for key in BUILTIN_ARGS:
            if key not in out and self.opts.build_args.get(key) is not None:
                out[key] = self.opts.build_args[key]  # type: ignore[assignment]
        return out

    def expand(self, st: StageState, word: str) -> str:
        try:
            return process_word(word, self.stage_env(st), self.escape)
        except ShellLexError as exc:
            raise BuildError(str(exc)) from None

    def expand_words(self, st: StageState, word: str) -> list[str]:
        try:
            return process_words(word, self.stage_env(st), self.escape)
        except ShellLexError as exc:
            raise BuildError(str(exc)) from None

    async def dispatch(self, st: StageState, ins: Instruction) -> None:
        name = ins.name
        cfg = st.config
        if name == "RUN":
            await self.run(st, ins)
        elif name in ("COPY", "ADD"):
            await self.copy(st, ins)
        elif name == "ENV":
            env = list(cfg.get("Env") or [])
            parts = []
            for key, value in zip(ins.args[::2], ins.args[1::2], strict=False):
                k, v = self.expand(st, key), self.expand(st, value)
                parts.append(f"{k}={v}")
                env = [e for e in env if e.partition("=")[0] != k] + [f"{k}={v}"]
            cfg["Env"] = env
            await self.commit_meta(st, "ENV " + " ".join(parts))
        elif name == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            parts = []
            for key, value in zip(ins.args[::2], ins.args[1::2], strict=False):
                k, v = self.expand(st, key), self.expand(st, value)
                labels[k] = v
                parts.append(f"{k}={v}")
            cfg["Labels"] = labels
            await self.commit_meta(st, "LABEL " + " ".join(parts))
        elif name == "MAINTAINER":
            st.config["_Author"] = ins.args[0]
            await self.commit_meta(st, "MAINTAINER " + ins.args[0])
        elif name in ("CMD", "ENTRYPOINT"):
            command = self._command(st, ins)
            cfg["Cmd" if name == "CMD" else "Entrypoint"] = command
            if name == "ENTRYPOINT" and not st.config.get("_CmdSet"):
                cfg["Cmd"] = None  # as dockerd: an ENTRYPOINT resets the image's CMD
            if name == "CMD":
                st.config["_CmdSet"] = True
                if not ins.json:
                    cfg["ArgsEscaped"] = True
            await self.commit_meta(st, f"{name} {go_quote_list(command)}")
        elif name == "WORKDIR":
            path = self.expand(st, ins.args[0])
            if not path.startswith("/"):
                path = posixpath.join("/", cfg.get("WorkingDir") or "/", path)
            cfg["WorkingDir"] = posixpath.normpath(path)
            await self.workdir(st, cfg["WorkingDir"])
        elif name == "USER":
            cfg["User"] = self.expand(st, ins.args[0])
            await self.commit_meta(st, f"USER {cfg['User']}")
        elif name == "EXPOSE":
            ports: list[str] = []
            for arg in ins.args:
                ports.extend(self.expand_words(st, arg))
            exposed = dict(cfg.get("ExposedPorts") or {})
            for port in ports:
                exposed.update({p: {} for p in _port_specs(port)})
            cfg["ExposedPorts"] = exposed
            await self.commit_meta(st, "EXPOSE " + " ".join(ports))
        elif name == "VOLUME":
            volumes = dict(cfg.get("Volumes") or {})
            paths = []
            for arg in ins.args:
                for path in (self.expand_words(st, arg) if not ins.json
                             else [self.expand(st, arg)]):
                    if not path.strip():
                        raise BuildError("VOLUME specified can not be an empty string")
                    volumes[path] = {}
                    paths.append(path)
            cfg["Volumes"] = volumes
            await self.commit_meta(st, f"VOLUME [{' '.join(paths)}]")
        elif name == "STOPSIGNAL":
            cfg["StopSignal"] = self.expand(st, ins.args[0])
            await self.commit_meta(st, f"STOPSIGNAL {cfg['StopSignal']}")
        elif name == "SHELL":
            cfg["Shell"] = list(ins.args)
            await self.commit_meta(st, f"SHELL [{' '.join(ins.args)}]")
        elif name == "ARG":
            parts = []
            for key, arg_value in self._arg_pairs(ins, self.stage_env(st)):
                st.args[key] = arg_value
                self.referenced.add(key)
                parts.append(key if arg_value is None else f"{key}={arg_value}")
            await self.commit_meta(st, "ARG " + " ".join(parts))
        elif name == "ONBUILD":
            assert ins.trigger is not None
            text = ins.trigger.original
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), text]
            await self.commit_meta(st, f"ONBUILD {text}")
        elif name == "HEALTHCHECK":
            cfg["Healthcheck"] = self._healthcheck(st, ins)
            await self.commit_meta(st, "HEALTHCHECK " + _healthcheck_text(cfg["Healthcheck"]))
        else:  # parse.py lets nothing else through
            raise BuildError(f"unknown instruction: {name}")

    def _arg_pairs(self, ins: Instruction, env: dict[str, str]
                   ) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for arg in ins.args:
            key, sep, value = arg.partition("=")
            if not key:
                raise BuildError(f"dockerfile parse error line {ins.line}: ARG names can not "
                                 "be blank")
            if sep:
                try:
                    out.append((key, process_word(value, env, self.escape)))
                except ShellLexError as exc:
                    raise BuildError(str(exc)) from None
            else:
                out.append((key, None))
        return out

    def _command(self, st: StageState, ins: Instruction) -> list[str]:
        if ins.json:
            return list(ins.args)
        text = ins.args[0] if ins.args else ""
        if ins.heredocs and text.lstrip().startswith("<<"):
            text = ins.heredocs[0].content
        return [*st.shell, text]

    def _healthcheck(self, st: StageState, ins: Instruction) -> dict[str, Any]:
        if ins.args[0].upper() == "NONE":
            return {"Test": ["NONE"]}
        rest = ins.args[1:]
        test = ["CMD", *rest] if ins.json else ["CMD-SHELL", " ".join(rest)]
        check: dict[str, Any] = {"Test": test}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                          ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
            if ins.flags.get(flag):
                check[key] = parse_duration(ins.flags[flag], ins)
        if ins.flags.get("retries"):
            check["Retries"] = int(ins.flags["retries"])
        return check

    # images ---------------------------------------------------------------------------

    def _image_config(self, st: StageState) -> dict[str, Any]:
        """The config recorded in an image: the state's, without builder bookkeeping."""
        config = {k: v for k, v in st.config.items() if not k.startswith("_")}
        config["Image"] = st.image_id
        return config

    def _doc(self, st: StageState, container_config: dict[str, Any], created_by: str,
             diff_id: str | None, container_id: str = "") -> dict[str, Any]:
        base = st.image.config if st.image else {}
        created = now_rfc3339()
        history = list(base.get("history") or [])
        entry: dict[str, Any] = {"created": created, "created_by": created_by}
        if st.config.get("_Author"):
            entry["author"] = st.config["_Author"]
        if diff_id is None:
            entry["empty_layer"] = True
        history.append(entry)
        diff_ids = list((base.get("rootfs") or {}).get("diff_ids") or [])
        if diff_id is not None:
            diff_ids.append(diff_id)
        doc: dict[str, Any] = {
            "architecture": base.get("architecture") or HOST_ARCH,
            "config": self._image_config(st),
            "container": container_id,
            "container_config": container_config,
            "created": created,
            "docker_version": f"stowd-{__version__}",
            "history": history,
            "os": base.get("os") or "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        if st.config.get("_Author"):
            doc["author"] = st.config["_Author"]
        return doc

    async def _add_image(self, st: StageState, doc: dict[str, Any], chain: str | None) -> Image:
        chains = list(st.image.layers) if st.image else []
        if chain is not None:
            chains.append(chain)
        config_bytes = json.dumps(doc, separators=(",", ":")).encode()
        image, _ = await asyncio.to_thread(self.images.add_image, config_bytes, chains, [],
                                           None, st.image_id)
        return image

    def _container_config(self, st: StageState, cmd: list[str]) -> dict[str, Any]:
        config = self._image_config(st)
        config["Cmd"] = cmd
        return config

    async def probe(self, st: StageState, container_config: dict[str, Any]) -> bool:
        """Use the cached image for this step, if there is one."""
        if self.opts.nocache:
            return False
        hit = await asyncio.to_thread(cache.find_local, self.images, st.image_id,
                                      container_config)
        if hit is None and self.cache_sources:
            hit = await asyncio.to_thread(self._from_sources, st, container_config)
        if hit is None:
            return False
        await self.say(" ---> Using cache\n")
        st.image = hit
        return True

    def _from_sources(self, st: StageState, container_config: dict[str, Any]) -> Image | None:
        found = cache.find_in_sources(self.images, self.cache_sources, st.image,
                                      " ".join(container_config.get("Cmd") or []))
        if found is None:
            return None
        source, entries, layers = found
        if entries == len(source.config.get("history") or []):
            return source
        # An intermediate step of the source: an image of its own, as dockerd restores it.
        doc = dict(source.config)
        doc["history"] = list(source.config["history"][:entries])
        doc["rootfs"] = {"type": "layers",
                         "diff_ids": list(source.config["rootfs"]["diff_ids"][:layers])}
        doc["config"] = self._image_config(st)
        doc["container_config"] = container_config
        doc["created"] = doc["history"][-1].get("created") or now_rfc3339()
        config_bytes = json.dumps(doc, separators=(",", ":")).encode()
        image, _ = self.images.add_image(config_bytes, list(source.layers[:layers]), [],
                                         None, st.image_id)
        return image

    async def commit_meta(self, st: StageState, comment: str, single: bool = False) -> None:
        """A step that changes only the config: a new image without a new layer."""
        cmd = [*st.shell, "#(nop) " + comment] if single else [*st.shell, "#(nop) ", comment]
        container_config = self._container_config(st, cmd)
        if await self.probe(st, container_config):
            return
        await self.commit_step(st, container_config, None, None)

    async def commit_step(self, st: StageState, container_config: dict[str, Any],
                          chain: str | None, diff_id: str | None) -> None:
        """Commit a step that runs nothing (a config change, WORKDIR's directory) as
        dockerd's builder does: through a container of the step's image, created and never
        started, so that the stream (`Running in`, `Removing intermediate container`), the
        events and what `rm=0` leaves read as dockerd's. The first step after `FROM
        scratch` has no image to create one from (dockerd's can): it goes without."""
        cid = ""
        if st.image is not None:
            config = {k: v for k, v in container_config.items() if v is not None}
            config["Image"] = st.image.id
            cid = await self._create(config)
        try:
            if cid:
                container_config = _as_created(container_config, cid)
            doc = self._doc(st, container_config, " ".join(container_config["Cmd"]), diff_id,
                            cid)
            st.image = await self._add_image(st, doc, chain)
        except asyncio.CancelledError:
            if cid:  # the client is gone: nothing to tell it, the container goes
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.host.remove_container(cid))
            raise
        except BaseException:
            if cid and self.opts.forcerm:
                await self._remove(cid)
            raise
        if cid and (self.opts.rm or self.opts.forcerm):
            await self._remove(cid)

    async def _create(self, config: dict[str, Any]) -> str:
        """A step's container, announced as dockerd does (its warnings first). A build
        cancelled meanwhile (its client gone) lets the create finish and removes it."""
        creating = asyncio.ensure_future(
            self.host.create_container(config, self._host_config()))
        cid = ""
        try:
            cid, warnings = await asyncio.shield(creating)
            for warning in warnings:
                await self.say(f" ---> [Warning] {warning}\n")
            await self.say(f" ---> Running in {cid[:12]}\n")
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                cid = cid or (await creating)[0]
                await asyncio.shield(self.host.remove_container(cid))
            raise
        return cid

    async def workdir(self, st: StageState, path: str) -> None:
        """WORKDIR: the directory made in a layer of the step's own, as dockerd's container
        create makes it (root's, 0755, whatever USER is); an empty layer when the image
        has it already."""
        container_config = self._container_config(st, [*st.shell, f"#(nop) WORKDIR {path}"])
        if await self.probe(st, container_config):
            return
        dest_layers = self._layer_dirs(st.image)
        work = self.scratch / secrets.token_hex(6)

        def write() -> tuple[str | None, str | None]:
            copying.enter_private_namespace()
            view = copying.mount_view(dest_layers, work / "dest")
            staging = work / "layer"
            staging.mkdir()
            if not copying.make_workdir(copying.Stager(staging, view, (0, 0)), path):
                return None, None
            return self._store_dir(st, staging)

        try:
            chain, diff_id = await run_in_own_thread(write)
        except copying.CopyError as exc:
            raise BuildError(str(exc)) from None
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        await self.commit_step(st, container_config, chain, diff_id)

    # RUN ------------------------------------------------------------------------------

    async def run(self, st: StageState, ins: Instruction) -> None:
        if st.image is None:
            raise BuildError("Please provide a source image with `from` prior to run")
        cmd = self._command(st, ins)
        allowed = self._allowed_args(st)
        env = list(st.config.get("Env") or [])
        env_keys = {e.partition("=")[0] for e in env}
        build_env = [f"{k}={v}" for k, v in allowed.items() if k not in env_keys]
        save_cmd = list(cmd)
        if build_env:
            shown = sorted(e for e in build_env
                           if e.partition("=")[0] in self.referenced
                           or e.partition("=")[0] not in BUILTIN_ARGS)
            save_cmd = [f"|{len(shown)}", *shown, *cmd]
        container_config = self._container_config(st, save_cmd)
        if await self.probe(st, container_config):
            return
        run_config = {k: v for k, v in self._image_config(st).items() if v is not None}
        run_config.update({"Image": st.image.id, "Cmd": cmd, "Entrypoint": [],
                           "Env": env + build_env, "Healthcheck": {"Test": ["NONE"]},
                           "AttachStdout": True, "AttachStderr": True, "OnBuild": None})
        try:
            cid = await self._create(run_config)
        except asyncio.CancelledError:
            raise
        except EngineError as exc:  # the engine refused the container
            raise BuildError(exc.message) from exc

        async def output(stream: int, data: bytes) -> None:
            text = data.decode("utf-8", errors="replace")
            # dockerd's stderrFormatter: the RUN's stderr in red, write by write.
            await self.say(f"\x1b[91m{text}\x1b[0m" if stream == STDERR else text)

        try:
            code = await self.host.run_container(cid, output)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.host.remove_container(cid))
            raise
        except Exception as exc:  # the engine could not start it
            if self.opts.forcerm:
                await self._remove(cid)
            raise BuildError(str(exc)) from exc
        if code != 0:
            if self.opts.forcerm:
                await self._remove(cid)
            raise BuildError(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}",
                             code)
        try:
            chain, diff_id = await asyncio.to_thread(self._commit_upper, st, cid)
            container_config = _as_created(container_config, cid)
            doc = self._doc(st, container_config, " ".join(save_cmd), diff_id, cid)
            st.image = await self._add_image(st, doc, chain)
        except BaseException:
            if self.opts.forcerm:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.host.remove_container(cid))
            raise
        if self.opts.rm or self.opts.forcerm:
            await self._remove(cid)

    async def _remove(self, cid: str) -> None:
        await self.say(f"Removing intermediate container {cid[:12]}\n")
        await asyncio.shield(self.host.remove_container(cid))

    def _commit_upper(self, st: StageState, cid: str) -> tuple[str | None, str | None]:
        upper = self.host.upper_dir(cid)
        if not any(upper.iterdir()):
            return None, None  # nothing changed: an empty layer, as dockerd records it
        return self._store_dir(st, upper)

    def _store_dir(self, st: StageState, directory: Path) -> tuple[str, str]:
        read_fd, write_fd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            with os.fdopen(write_fd, "wb", buffering=1 << 20) as out:
                try:
                    retar_layer(directory, out)
                except BaseException as exc:  # reported below
                    failure.append(exc)

        import threading
        writer = threading.Thread(target=produce, name="build-tar", daemon=True)
        writer.start()
        with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
            try:
                chain, diff_id, _ = self.images.store_layer(
                    source, st.image.layers[-1] if st.image and st.image.layers else None)
            finally:
                source.read()
                writer.join()
        if failure:
            raise failure[0]
        return chain, diff_id

    def _host_config(self) -> dict[str, Any]:
        hc: dict[str, Any] = {"NetworkMode": self.opts.network_mode or "default"}
        if self.opts.extra_hosts:
            hc["ExtraHosts"] = list(self.opts.extra_hosts)
        if self.opts.shm_size:
            hc["ShmSize"] = self.opts.shm_size
        hc.update(self.opts.resources)
        return hc

    # COPY and ADD ---------------------------------------------------------------------

    def _layer_dirs(self, image: Image | None) -> list[str]:
        return self.images.layer_dirs(image) if image is not None else []

    async def copy(self, st: StageState, ins: Instruction) -> None:
        cmd_name = ins.name
        if "chmod" in ins.flags:
            # dockerd 20.10's classic builder accepts the flag when parsing and refuses it
            # here, in the step (an errorDetail line after its `Step` line).
            raise BuildError("the --chmod option requires BuildKit. Refer to "
                             "https://docs.docker.com/go/buildkit/ to learn how to build "
                             "images with BuildKit enabled")
        words = [self.expand(st, a) for a in ins.args]
        *sources, dest = words
        chown = self.expand(st, ins.flags["chown"]) if ins.flags.get("chown") else ""
        source_image: Image | None = None
        from_context = True
        if ins.flags.get("from"):
            from_context = False
            source_image = await self._copy_source_image(ins.flags["from"])
        work = self.scratch / secrets.token_hex(6)
        await asyncio.to_thread(work.mkdir, parents=True)
        try:
            urls = [s for s in sources if ins.name == "ADD" and _is_url(s)]
            downloads: list[copying.Source] = []
            for url in urls:
                downloads.append(await self._download(url, work, dest))
            local = [s for s in sources if s not in urls]
            src_layers = self._layer_dirs(source_image)

            def find() -> tuple[list[copying.Source], str]:
                found: list[copying.Source] = []
                if local:
                    if from_context:
                        root = str(self.context)
                    else:
                        copying.enter_private_namespace()
                        root = copying.mount_view(src_layers, work / "src")
                    found = copying.find_sources(root, local, cmd_name, from_context,
                                                 extract=cmd_name == "ADD" and from_context)
                    found = [*downloads, *found]
                else:
                    found = list(downloads)
                return found, copying.checksum(found)

            _, digest = await run_in_own_thread(find)
            # dockerd 20.10's words exactly, with no space after the chown
            # (`COPY --chown=1:1dir:<hex> in /d `): what `docker history` shows there.
            flags = f"--chown={chown}" if chown else ""
            comment = f"{cmd_name} {flags}{digest} in {dest} "
            container_config = self._container_config(st, [*st.shell, "#(nop) " + comment])
            if await self.probe(st, container_config):
                return
            dest_layers = self._layer_dirs(st.image)
            workdir = st.config.get("WorkingDir") or "/"

            def write() -> tuple[str, str]:
                copying.enter_private_namespace()
                src_root = str(self.context)
                if not from_context:
                    src_root = copying.mount_view(src_layers, work / "src")
                view = copying.mount_view(dest_layers, work / "dest")
                again = list(downloads)
                if local:
                    again += copying.find_sources(src_root, local, cmd_name, from_context,
                                                  extract=cmd_name == "ADD" and from_context)
                staging = work / "layer"
                staging.mkdir()
                stager = copying.Stager(staging, view, copying.parse_chown(chown, view))
                copying.stage(stager, again, workdir, dest, cmd_name)
                return self._store_dir(st, staging)

            try:
                chain, diff_id = await run_in_own_thread(write)
            except copying.CopyError as exc:
                raise BuildError(str(exc)) from None
            doc = self._doc(st, container_config, " ".join(container_config["Cmd"]), diff_id)
            st.image = await self._add_image(st, doc, chain)
        except copying.CopyError as exc:
            raise BuildError(str(exc)) from None
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _copy_source_image(self, name: str) -> Image | None:
        key = name.lower()
        if key in self.stages:
            return self.stages[key]
        if name.isdigit():
            index = int(name)
            if index < len(self.stage_list):
                return self.stage_list[index]
            raise BuildError(f"invalid from flag value {name}: refers to current build stage")
        try:
            return await self._base_image(name, None)  # type: ignore[arg-type]
        except BuildError as exc:  # as dockerd: the pull's own error
            raise BuildError(f"invalid from flag value {name}: {exc.message}") from None

    async def _download(self, url: str, work: Path, dest: str) -> copying.Source:
        name = posixpath.basename(urllib.parse.urlparse(url).path)
        if not name and dest.endswith("/"):
            raise BuildError(f"cannot determine filename from url: {url}")
        target = work / "download" / (name or "download")
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                if resp.status >= 400:
                    # dockerd's words, with the start of the server's answer.
                    body = (await resp.content.read(_ERROR_BODY)).decode(errors="replace")
                    raise BuildError(f"ADD failed: failed to GET {url} with status "
                                     f"{resp.status} {resp.reason}: {body}")
                modified = resp.headers.get("Last-Modified")
                f = await asyncio.to_thread(open, target, "wb")
                try:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        await asyncio.to_thread(f.write, chunk)
                finally:
                    await asyncio.to_thread(f.close)
        except aiohttp.ClientConnectorError as exc:
            errno = exc.os_error.errno
            reason = os.strerror(errno).lower() if errno else str(exc.os_error)
            raise BuildError(f'ADD failed: Get "{url}": dial tcp {exc.host}:{exc.port}: '
                             f"connect: {reason}") from None
        except aiohttp.ClientError as exc:
            raise BuildError(f'ADD failed: Get "{url}": {exc}') from None
        await asyncio.to_thread(os.chmod, target, 0o600)
        if modified:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(modified).timestamp()
                await asyncio.to_thread(os.utime, target, (when, when))
        return copying.Source(str(target), name or "download", False)


def _as_created(container_config: dict[str, Any], cid: str) -> dict[str, Any]:
    """A step's container_config as dockerd records it: its container's config after
    create (the short ID as hostname, no labels as `{}`)."""
    return {**container_config, "Hostname": cid[:12],
            "Labels": container_config.get("Labels") or {}}


def _with_default_path(config: dict[str, Any]) -> dict[str, Any]:
    """dockerd's setDefaultPath: a stage without PATH gets the default one."""
    env = list(config.get("Env") or [])
    if not any(e.partition("=")[0] == "PATH" for e in env):
        config["Env"] = [*env, f"PATH={DEFAULT_PATH}"]
    return config


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _port_specs(spec: str) -> list[str]:
    """`80`, `80/udp`, `8000-8002/tcp` as Docker's nat.ParsePortSpecs lists them."""
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if ":" in port:
        port = port.rsplit(":", 1)[-1]
    low, _, high = port.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise BuildError(f"Invalid containerPort: {port}")
    if not high:
        return [f"{int(low)}/{proto}"]
    if int(high) < int(low):
        raise BuildError(f"Invalid range specified for the Port: {port}")
    return [f"{p}/{proto}" for p in range(int(low), int(high) + 1)]


def _healthcheck_text(check: dict[str, Any]) -> str:
    """Close to dockerd's `%q` of its HealthConfig."""
    def dur(ns: int | None) -> str:
        return _go_duration(ns or 0)
    return (f"&{{{go_quote_list(check['Test'])} \"{dur(check.get('Interval'))}\" "
            f"\"{dur(check.get('Timeout'))}\" \"{dur(check.get('StartPeriod'))}\" "
            f"'\\x{check.get('Retries', 0):02x}'}}")


def _go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    seconds = ns / 1e9
    td = datetime.timedelta(seconds=seconds)
    hours, rem = divmod(int(td.total_seconds()), 3600)
    minutes, secs = divmod(rem, 60)
    frac = seconds - int(seconds)
    text = ""
    if hours:
        text += f"{hours}h"
    if hours or minutes:
        text += f"{minutes}m"
    text += f"{secs + frac:g}s"
    return text

