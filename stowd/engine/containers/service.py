"""What the API may ask of containers (api/backend.py declares it): each call hands over to
the verb's module with the context it needs."""

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, BinaryIO

from stowd.engine import archive_path
from stowd.engine import exec as execs
from stowd.engine.attach import AttachSession
from stowd.engine.changes import Change
from stowd.engine.containers import (
    attach,
    commit,
    create,
    delete,
    exec,
    inspect_fs,
    links,
    monitor,
    start,
    stats,
    stop,
    task,
    top,
    update,
    usage,
)
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import Container
from stowd.engine.core.handles import ExitStatus
from stowd.engine.diskusage import ImageUsage
from stowd.engine.images.store import Image
from stowd.engine.stats import Sample
from stowd.engine.volumes import Volume


class ContainerService:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    # looking up
    def get(self, ref: str) -> Container:
        return self.ctx.core.handles.get(ref)

    def all(self) -> list[Container]:
        return self.ctx.core.handles.containers()

    def upper_dir(self, cid: str) -> Path:
        """The writable layer of a container (the builder commits it)."""
        return self.ctx.core.dir(cid).upper

    def log_path(self, c: Container) -> Path:
        return task.log_path(self.ctx, c)

    def host_paths(self, c: Container) -> dict[str, str]:
        return inspect_fs.host_paths(self.ctx, c)

    async def graph_driver(self, c: Container) -> dict[str, str]:
        return await inspect_fs.graph_driver(self.ctx, c)

    async def sizes(self, c: Container) -> tuple[int, int]:
        return await usage.container_sizes(self.ctx, c)

    # lifecycle
    async def create(self, name: str | None, body: dict[str, Any]) -> tuple[str, list[str]]:
        return await create.create_container(self.ctx, name, body)

    async def start(self, ref: str) -> None:
        await start.start(self.ctx, ref)

    async def stop(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        await stop.stop(self.ctx, ref, timeout, sig)

    async def restart(self, ref: str, timeout: int | None = None,
                      sig: str | None = None) -> None:
        await stop.restart(self.ctx, ref, timeout, sig)

    async def kill(self, ref: str, sig: str | None = None) -> None:
        await stop.kill(self.ctx, ref, sig)

    async def pause(self, ref: str) -> None:
        await stop.pause(self.ctx, ref)

    async def unpause(self, ref: str) -> None:
        await stop.unpause(self.ctx, ref)

    def wait(self, ref: str, condition: str) -> "asyncio.Future[ExitStatus]":
        return monitor.wait(self.ctx, ref, condition)

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        await delete.remove(self.ctx, ref, force, volumes)

    async def remove_link(self, name: str) -> None:
        await links.remove(self.ctx, name)

    async def prune(self, filters: dict[str, list[str]]) -> tuple[list[str], int]:
        return await delete.prune(self.ctx, filters)

    async def rename(self, ref: str, new_name: str) -> None:
        await update.rename(self.ctx, ref, new_name)

    async def update(self, ref: str, body: dict[str, Any]) -> list[str]:
        return await update.update(self.ctx, ref, body)

    # stdio
    async def attach(self, ref: str, *, stdin: bool, stdout: bool, stderr: bool,
                     detach_keys: str | None = None) -> tuple[Container, AttachSession]:
        return await attach.attach(self.ctx, ref, stdin=stdin, stdout=stdout, stderr=stderr,
                                   detach_keys=detach_keys)

    def detach(self, session: AttachSession) -> None:
        attach.detach(self.ctx, session)

    async def resize(self, ref: str, height: int, width: int) -> None:
        await attach.resize(self.ctx, ref, height, width)

    # exec
    def create_exec(self, ref: str, body: dict[str, Any]) -> str:
        return exec.create_exec(self.ctx, ref, body)

    def get_exec(self, exec_id: str) -> execs.ExecInstance:
        return self.ctx.core.handles.exec(exec_id)

    async def start_exec(self, exec_id: str, detach: bool, tty: bool | None = None,
                         console_size: list[int] | None = None) -> execs.ExecInstance:
        return await exec.start_exec(self.ctx, exec_id, detach, tty, console_size)

    def detach_exec(self, inst: execs.ExecInstance) -> None:
        """The client detached from a running exec: drain its output so it never blocks."""
        self.ctx.core.tasks.spawn(execs.drain(inst))

    # looking inside
    async def top(self, ref: str, ps_args: str = "-ef") -> tuple[list[str], list[list[str]]]:
        return await top.top(self.ctx, ref, ps_args)

    async def stats_sample(self, c: Container) -> Sample | None:
        return await stats.sample(self.ctx, c)

    async def stats_pair(self, c: Container) -> tuple[Sample | None, Sample | None]:
        return await stats.pair(self.ctx, c)

    def stats_previous(self, cid: str, now: float) -> Sample | None:
        return self.ctx.stats.previous(cid, now)

    async def changes(self, ref: str) -> list[Change]:
        return await inspect_fs.changes(self.ctx, ref)

    async def export(self, ref: str) -> AsyncGenerator[bytes, None]:
        return await inspect_fs.export(self.ctx, ref)

    async def archive_stat(self, ref: str, path: str) -> archive_path.PathStat:
        return await inspect_fs.archive_stat(self.ctx, ref, path)

    def archive_get(self, ref: str,
                    path: str) -> AsyncGenerator[archive_path.PathStat | bytes, None]:
        return inspect_fs.archive_get(self.ctx, ref, path)

    async def archive_put(self, ref: str, path: str, source: BinaryIO, *,
                          no_overwrite_dir_non_dir: bool, copy_uid_gid: bool) -> None:
        await inspect_fs.archive_put(self.ctx, ref, path, source,
                                     no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                                     copy_uid_gid=copy_uid_gid)

    async def commit(self, ref: str, repo: str, tag: str, *, comment: str = "",
                     author: str = "", pause: bool = True, changes: list[str] | None = None,
                     config: dict[str, Any] | None = None) -> Image:
        return await commit.commit(self.ctx, ref, repo, tag, comment=comment, author=author,
                                   pause=pause, changes=changes, config=config)

    async def disk_usage(self, kinds: set[str]) -> tuple[
            int, list[ImageUsage], list[tuple[Container, int, int]],
            list[tuple[Volume, int, int]]]:
        return await usage.disk_usage(self.ctx, kinds)
