"""Looking inside a container's filesystem: changes, export, and `docker cp` both ways."""

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from stowd.engine import archive_path, cpview, rootfs
from stowd.engine import export as exporting
from stowd.engine.changes import Change, collect_changes
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import DEAD, REMOVING, Container
from stowd.engine.errors import Conflict, Forbidden, InvalidParameter, NotFound, SystemError_
from stowd.engine.images.pipe import ThreadPipe

log = logging.getLogger("stowd.engine")


async def layer_stack(x: Ctx, c: Container) -> list[str]:
    """The container's lower layers, topmost first: its init layer, then the image's."""
    image = await asyncio.to_thread(x.images.find, c.image_id)
    if image is None:
        raise NotFound(f"No such image: {c.image_id}")
    return [str(x.core.dir(c).init), *x.images.layer_dirs(image)]


async def changes(x: Ctx, ref: str) -> list[Change]:
    c = x.core.handles.get(ref)
    lowers = await layer_stack(x, c)
    return await asyncio.to_thread(collect_changes, str(x.core.dir(c).upper), lowers)


async def export(x: Ctx, ref: str) -> AsyncGenerator[bytes, None]:
    """The tar of the container's filesystem (see export.py); tar starts when the
    iteration does, and a failure to start raises at the first step."""
    c = x.core.handles.get(ref)
    if c.state.status == DEAD:
        raise Conflict(f"You cannot export container {c.id} which is Dead")
    if c.state.status == REMOVING:
        raise Conflict(f"You cannot export container {c.id} which is being removed")
    d = x.core.dir(c)
    layers = [str(d.upper), *await layer_stack(x, c)]
    x.core.event(c, "export")
    return exporting.stream_tar(exporting.tar_command(str(d.rootfs), layers))


def cp_view(x: Ctx, c: Container, layers: list[str], *, extract: bool) -> cpview.ViewSpec:
    """What `docker cp` sees (see cpview.py): a running container's rootfs, or its
    overlay mounted in the view, with its volumes, binds and /etc files. A stopped
    container's overlay is mounted read-write to extract, or to make the mount points of
    its volumes and binds (as dockerd does): then the caller holds its lock."""
    d = x.core.dir(c)
    running = c.state.live
    mounted = [cpview.Bind(b["source"], b["destination"], bool(b.get("readonly")))
               for b in x.volumes.spec_mounts(c)[0]]
    binds = mounted + [cpview.Bind(str(d.etc_file(name)), f"/etc/{name}")
                       for name in d.ETC_FILES]
    binds.sort(key=lambda b: b.destination.rstrip("/").count("/"))  # parents first
    return cpview.ViewSpec(rootfs=str(d.rootfs), upper=str(d.upper), work=str(d.work),
                           layers=layers, binds=binds,
                           writable=not running and (extract or bool(mounted)),
                           may_mount=not (extract and running))


@contextlib.asynccontextmanager
async def cp_session(x: Ctx, ref: str, *,
                     extract: bool) -> AsyncIterator[tuple[Container, cpview.ViewSpec]]:
    c = x.core.handles.get(ref)
    if c.state.status in (REMOVING, DEAD):
        raise Conflict(f"container {c.id} is marked for removal")
    layers = await layer_stack(x, c)
    spec = cp_view(x, c, layers, extract=extract)
    if not spec.writable:
        yield c, spec
        return
    async with x.core.handles.lock(c.id):
        yield c, cp_view(x, c, layers, extract=extract)  # it may run by now


async def archive_stat(x: Ctx, ref: str, path: str) -> archive_path.PathStat:
    async with cp_session(x, ref, extract=False) as (c, spec):

        def work() -> archive_path.PathStat:
            with cpview.enter(spec) as root:
                return archive_path.path_stat(
                    root, archive_path.resolve_resource(root, path, c.name))

        return await cpview.run_in_own_thread(work)


async def archive_get(x: Ctx, ref: str,
                      path: str) -> AsyncGenerator[archive_path.PathStat | bytes, None]:
    """`docker cp` out: first the PathStat, then the tar's bytes."""
    async with cp_session(x, ref, extract=False) as (c, spec):
        loop = asyncio.get_running_loop()
        pipe = ThreadPipe(loop)
        found: asyncio.Future[Any] = loop.create_future()

        def work() -> None:
            with cpview.enter(spec) as root:
                res = archive_path.resolve_resource(root, path, c.name)
                st = archive_path.path_stat(root, res)
                loop.call_soon_threadsafe(_settle, found, st)
                try:
                    archive_path.write_archive(root, res, pipe)  # type: ignore[arg-type]
                    pipe.finish()
                except BrokenPipeError:
                    pass  # the client went away
                except BaseException as exc:
                    log.error("archive of %s:%s failed: %s", c.short_id, path, exc)
                    pipe.fail(exc)

        done: asyncio.Future[None] = cpview.run_in_own_thread(work)
        try:
            await asyncio.wait([found, done], return_when=asyncio.FIRST_COMPLETED)
            if not found.done():
                await done  # raises what stopped it (NotFound, ...)
                raise SystemError_(f"archive of {path} ended without an answer")
            yield found.result()
            x.core.event(c, "archive-path")
            async for chunk in pipe.chunks():
                yield chunk
        finally:
            pipe.close()
            found.cancel()
            with contextlib.suppress(Exception):
                await done


async def archive_put(x: Ctx, ref: str, path: str, source: BinaryIO, *,
                      no_overwrite_dir_non_dir: bool, copy_uid_gid: bool) -> None:
    """`docker cp` in: unpack the tar `source` into the directory `path`. A stopped
    container's overlay is written under its lock, as dockerd does."""
    async with cp_session(x, ref, extract=True) as (c, spec):
        if c.host_config.get("ReadonlyRootfs"):
            raise Forbidden("container rootfs is marked read-only")
        await cpview.run_in_own_thread(lambda: _extract(
            c, spec, path, source, no_overwrite_dir_non_dir, copy_uid_gid))
    x.core.event(c, "extract-to-dir")


def _extract(c: Container, spec: cpview.ViewSpec, path: str, source: BinaryIO,
             no_overwrite: bool, copy_uid_gid: bool) -> None:
    if not path:
        raise InvalidParameter("bad parameter: path cannot be empty")
    with cpview.enter(spec) as root:
        dest = archive_path.resolve_in_scope(root, archive_path.absolute(path))
        try:
            fd = archive_path.open_in_root(root, dest, os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"Could not find the file {path} in container {c.name}") from None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidParameter("extraction point is not a directory")
        owner = None
        if copy_uid_gid and c.config.get("User"):
            user = rootfs.resolve_user(Path(f"/proc/self/fd/{root}"), c.config["User"])
            owner = (user.uid, user.gid)
        try:
            archive_path.extract(root, dest, source, archive_path.ExtractOptions(
                no_overwrite_dir_non_dir=no_overwrite, owner=owner))
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise InvalidParameter("mounted volume is marked read-only") from exc
            raise


def host_paths(x: Ctx, c: Container) -> dict[str, str]:
    """The host files behind the container's /etc files and its log (inspect shows them)."""
    d = x.core.dir(c)
    return {"resolv_conf": str(d.etc_file("resolv.conf")),
            "hostname": str(d.etc_file("hostname")), "hosts": str(d.etc_file("hosts")),
            "log": str(d.log)}


async def graph_driver(x: Ctx, c: Container) -> dict[str, str]:
    """inspect's GraphDriver.Data: the overlay's directories."""
    d = x.core.dir(c)
    image = await asyncio.to_thread(x.images.find, c.image_id)
    lowers = [str(d.init), *(x.images.layer_dirs(image) if image else [])]
    return {"LowerDir": ":".join(lowers), "MergedDir": str(d.rootfs),
            "UpperDir": str(d.upper), "WorkDir": str(d.work)}


def _settle(found: "asyncio.Future[Any]", st: archive_path.PathStat) -> None:
    if not found.done():
        found.set_result(st)
