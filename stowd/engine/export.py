"""`docker export`: a tar of a container's whole filesystem, streamed from GNU tar.

The tar runs in a mount namespace of its own (`unshare --mount`, private propagation). There
it uses the container's rootfs mount when the container runs (the namespace holds a copy of
that mount, so an exit during the export does not pull the files away), and otherwise mounts
a read-only overlay of the container's layers (upperdir, init layer, image layers, all as
lower layers: no workdir, so nothing clashes with a start meanwhile). That mount disappears
with the namespace when tar ends: nothing to unmount, nothing left behind by a crash.

The archive is what dockerd's is: entries in name order without a leading `./`, numeric
owners, hard links, device nodes, `security.capability` attributes, no whiteouts (a merged
view), whole-second mtimes. No volume or bind-mount content, as dockerd.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncGenerator

from stowd.engine.errors import SystemError_

log = logging.getLogger("stowd.engine")

CHUNK = 1 << 18
# The kernel takes mount data up to one page; longer layer lists go through relative paths.
_MAX_MOUNT_DATA = 4000

_SCRIPT = r"""
set -e
target="$1"; base="$2"; data="$3"
if ! mountpoint -q "$target"; then
  cd "$base"
  mount -t overlay overlay -o "$data" "$target"
fi
cd "$target"
find . -mindepth 1 -maxdepth 1 -printf '%P\0' | LC_ALL=C sort -z | \
  tar --null -T - -cf - --numeric-owner --sort=name --xattrs \
      --xattrs-include=security.capability --pax-option=delete=atime,delete=ctime,delete=mtime
"""


def readonly_overlay_data(layers: list[str]) -> tuple[str, str]:
    """(working directory, mount data) for a read-only overlay of layers (topmost first)."""
    data = "lowerdir=" + ":".join(layers)
    if len(data) <= _MAX_MOUNT_DATA:
        return "/", data
    base = os.path.commonpath(layers)
    return base, "lowerdir=" + ":".join(os.path.relpath(d, base) for d in layers)


def tar_command(target: str, layers: list[str]) -> list[str]:
    """The command that writes the tar of `target` (or of the layers, mounted there)."""
    base, data = readonly_overlay_data(layers)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT,
            "stowd-export", target, base, data]


async def stream_tar(command: list[str]) -> AsyncGenerator[bytes, None]:
    """Run command and yield its stdout. The process starts on the first iteration, and a
    failure before the first byte raises SystemError_ there (before any answer is sent).
    Closing the iteration early kills the process group."""
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    finished = False
    try:
        while chunk := await proc.stdout.read(CHUNK):
            yield chunk
        rc = await proc.wait()
        finished = True
        err = (await stderr_task).decode(errors="replace").strip()
        if rc not in (0, 1):  # GNU tar: 1 = a file changed while it was read
            # Once bytes are out, all that can be done is end the body early (a truncated
            # tar is what dockerd sends on a mid-stream failure too).
            log.error("export: %s exited with %s: %s", command[0], rc, err)
            raise SystemError_(f"export failed: {err or f'exit status {rc}'}")
    finally:
        if not finished:
            _kill(proc)
            with contextlib.suppress(Exception):
                await proc.wait()
            stderr_task.cancel()


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
