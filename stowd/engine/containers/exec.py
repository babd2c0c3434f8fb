"""`docker exec`: record an exec on the container's handle, start it, report its end."""

import asyncio
import json
from pathlib import Path
from typing import Any

from stowd.engine import exec as execs
from stowd.engine import rootfs
from stowd.engine.attach import parse_detach_keys
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import PAUSED, RUNNING, Container
from stowd.engine.errors import Conflict, InvalidParameter
from stowd.engine.runtime.spec import host_capabilities


def _require_running(c: Container) -> None:
    if c.state.status == PAUSED:
        raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
    if c.state.status != RUNNING:
        raise Conflict(f"Container {c.id} is not running")


def create_exec(x: Ctx, ref: str, body: dict[str, Any]) -> str:
    """Record an exec; it runs when started. 409 unless the container runs."""
    c = x.core.handles.get(ref)
    _require_running(c)
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
        raise InvalidParameter("No exec command specified")
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidParameter("Env must be a list of strings")
    size = body.get("ConsoleSize") or None
    wd = body.get("WorkingDir") or ""
    if wd and not wd.startswith("/"):
        raise InvalidParameter(f"the working directory '{wd}' is invalid, it needs to be "
                               "an absolute path")
    inst = execs.ExecInstance(
        id=execs.new_exec_id(), container_id=c.id, cmd=cmd, tty=bool(body.get("Tty")),
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")), env=env,
        user=body.get("User") or "", working_dir=wd,
        privileged=bool(body.get("Privileged")),
        detach_keys=parse_detach_keys(body.get("DetachKeys")),
        detach_keys_given=bool(body.get("DetachKeys")),
        console_size=(size[0], size[1]) if isinstance(size, list) and len(size) == 2
        else None,
    )
    x.core.handles.add_exec(x.core.handles.of(c), inst)
    x.core.event(c, "exec_create: " + execs.event_command(cmd), execID=inst.id)
    return inst.id


async def start_exec(x: Ctx, exec_id: str, detach: bool, tty: bool | None = None,
                     console_size: list[int] | None = None) -> execs.ExecInstance:
    inst = x.core.handles.exec(exec_id)
    if inst.started:
        state = "is already running" if inst.running else "has already run"
        raise Conflict(f"exec command {inst.id} {state}")
    c = x.core.handles.get(inst.container_id)
    _require_running(c)
    # The process gets a terminal if the exec was created with one; the start's Tty
    # only chooses the stream's framing (as in Docker).
    inst.framed = not (inst.tty if tty is None else tty)
    if console_size and len(console_size) == 2 and all(console_size):
        inst.console_size = (console_size[0], console_size[1])
    inst.started = True
    spec_path = x.core.settings.exec_root / "execs" / f"{inst.id}.json"
    await asyncio.to_thread(write_exec_spec, x, c, inst, spec_path)
    x.core.event(c, "exec_start: " + execs.event_command(inst.cmd), execID=inst.id)
    await execs.run(inst, x.runtime.path, x.runtime.root, spec_path, detach)
    x.core.tasks.spawn(exec_finished(x, c, inst, spec_path))
    return inst


def write_exec_spec(x: Ctx, c: Container, inst: execs.ExecInstance, spec_path: Path) -> None:
    """Blocking: the exec's process spec, from the container's own with its changes."""
    d = x.core.dir(c)
    container_spec = execs.load_spec(d.config)
    user = rootfs.resolve_user(d.rootfs, inst.user or c.config.get("User") or "",
                               c.host_config.get("GroupAdd"))
    user_doc: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        user_doc["additionalGids"] = user.additional_gids
    caps = host_capabilities() if inst.privileged else None
    process = execs.process_spec(container_spec, inst, user_doc, caps)
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(process))


async def exec_finished(x: Ctx, c: Container, inst: execs.ExecInstance,
                        spec_path: Path) -> None:
    await inst.done.wait()
    await asyncio.to_thread(spec_path.unlink, True)
    x.core.event(c, "exec_die", execID=inst.id, exitCode=str(inst.exit_code))

