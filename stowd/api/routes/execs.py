"""Exec routes: create, start (hijacked like attach), resize, inspect."""

import base64

from aiohttp import web

from stowd.api.common import Router, backend_of, json_ok
from stowd.api.hijack import finished, hijack, relay, stream_content_type
from stowd.api.params import api_version, int_param, json_body
from stowd.engine.errors import InvalidParameter

_EXEC_FIELDS = {name.lower(): name for name in (
    "User", "Privileged", "Tty", "ConsoleSize", "AttachStdin", "AttachStderr", "AttachStdout",
    "Detach", "DetachKeys", "Env", "WorkingDir", "Cmd")}


async def create(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    # dockerd decodes the body as Go does, field names in any case (docker-py sends
    # `detachKeys`): the known fields under their canonical names.
    body = {_EXEC_FIELDS.get(k.lower(), k): v for k, v in body.items()}
    if api_version(request) < (1, 42):
        body.pop("ConsoleSize", None)
    exec_id = backend_of(request).containers.create_exec(request.match_info["id"], body)
    return json_ok({"Id": exec_id}, status=201)


async def start(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    engine = backend_of(request)
    detach = bool(body.get("Detach"))
    tty = body.get("Tty")
    size = body.get("ConsoleSize") if api_version(request) >= (1, 42) else None
    inst = await engine.containers.start_exec(request.match_info["id"], detach,
                                   bool(tty) if tty is not None else None, size)
    if detach:
        return web.Response(status=200)
    conn = hijack(request, stream_content_type(request, framed=inst.framed))
    try:
        if await relay(conn, inst, not inst.framed):
            # Detached: the attachment ends, the process goes on (its output is dropped).
            engine.containers.detach_exec(inst)
        elif not conn.lost.is_set():
            # Output is complete when the process is: wait for its exit before closing.
            await inst.done.wait()
    finally:
        conn.close()
    return finished(request)


async def resize(request: web.Request) -> web.Response:
    inst = backend_of(request).containers.get_exec(request.match_info["id"])
    height = int_param(request, "h", 0) or 0
    width = int_param(request, "w", 0) or 0
    if not inst.running:
        raise InvalidParameter(f"exec {inst.id} is not running")
    inst.resize(height, width)
    return web.Response(status=200)


async def inspect(request: web.Request) -> web.Response:
    engine = backend_of(request)
    inst = engine.containers.get_exec(request.match_info["id"])
    return json_ok({
        "CanRemove": False,
        "ContainerID": inst.container_id,
        # the keys given at create, as dockerd shows them (bytes: base64), else ""
        "DetachKeys": base64.b64encode(inst.detach_keys).decode() if inst.detach_keys_given
        else "",
        "ExitCode": inst.exit_code,
        "ID": inst.id,
        "OpenStderr": inst.attach_stderr,
        "OpenStdin": inst.attach_stdin,
        "OpenStdout": inst.attach_stdout,
        "ProcessConfig": inst.inspect_process(),
        "Running": inst.running,
        "Pid": inst.pid,
    })


def register(router: Router) -> None:
    router.add("POST", "/containers/{id:.+}/exec", create)
    router.add("POST", "/exec/{id}/start", start)
    router.add("POST", "/exec/{id}/resize", resize)
    router.add("GET", "/exec/{id}/json", inspect)
