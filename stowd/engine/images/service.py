"""What the API may do with images: import, load, save, tag, remove, prune, and look up.

Which containers use an image comes from the core's handles; the events are Docker's."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import BinaryIO

from stowd.engine.core.container import Container
from stowd.engine.core.core import Core
from stowd.engine.errors import Conflict, InvalidParameter, NotFound
from stowd.engine.images import archive, delete, load, reference, save
from stowd.engine.images import events as image_events
from stowd.engine.images import listing as images_listing
from stowd.engine.images.pipe import ThreadPipe
from stowd.engine.images.store import Image, ImageStore

log = logging.getLogger("stowd.images")


class ImageService:
    def __init__(self, core: Core, store: ImageStore) -> None:
        self.core = core
        self.store = store

    # looking up (blocking: call in a thread) -------------------------------------------

    def resolve(self, name: str) -> Image:
        return self.store.resolve(name)

    def find(self, image_id: str) -> Image | None:
        return self.store.find(image_id)

    def all(self) -> list[Image]:
        return self.store.all()

    def layer_size(self, chain: str) -> int:
        return self.store.layer_size(chain)

    def layer_dirs(self, image: Image) -> list[str]:
        return self.store.layer_dirs(image)

    def users(self, image_id: str) -> list[Container]:
        """The containers made from this image (on the loop)."""
        return [h.container for h in self.core.handles if h.container.image_id == image_id]

    # changing ---------------------------------------------------------------------------

    async def import_image(self, source: BinaryIO, repo: str, tag: str, changes: list[str],
                           message: str) -> Image:
        tags = []
        if repo:
            if reference.parse(repo, default_tag=False).digest:
                raise InvalidParameter("cannot import digest reference")
            tags.append(reference.tag_reference(repo, tag))
        # Validate changes before reading a byte of the body.
        archive.apply_changes({}, changes)
        image, replaced = await asyncio.to_thread(
            archive.import_rootfs, self.store, source, changes, message, tags)
        self.core.events.publish("image", "import", image.id, {"name": image.id})
        image_events.tagged(self.core.events, image.id, tags)
        image_events.untagged(self.core.events, replaced)
        return image  # type: ignore[no-any-return]

    async def load_images(self, source: BinaryIO, quiet: bool
                          ) -> AsyncGenerator[load.LayerProgress | load.LoadMessage, None]:
        """Docker's load: its progress and result lines as they happen; raises on failure."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[load.LayerProgress | load.LoadMessage | None] = asyncio.Queue()
        events = self.core.events

        def on_update(update: load.LoadUpdate) -> None:  # on the loop
            if isinstance(update, load.LoadedImage):
                image = update.image
                events.publish("image", "load", image.id, {"name": image.id})
                image_events.tagged(events, image.id, update.tags)
                image_events.untagged(events, update.replaced)
            else:
                lines.put_nowait(update)

        def run() -> None:
            try:
                load.load_archive(self.store, source, lambda u: _post(loop, on_update, u),
                                  not quiet)
            finally:
                loop.call_soon_threadsafe(lines.put_nowait, None)

        worker = asyncio.ensure_future(asyncio.to_thread(run))
        while (line := await lines.get()) is not None:
            yield line
        await worker

    async def save_images(self, names: list[str]) -> AsyncGenerator[bytes, None]:
        """Docker's save: NotFound here for an unknown name, then the archive's bytes."""
        items = await asyncio.to_thread(save.select_images, self.store, names)
        chains = [chain for item in items for chain in item.image.layers]
        pipe = ThreadPipe(asyncio.get_running_loop())
        store = self.store

        def run() -> None:
            try:
                save.write_archive(store, items, pipe)  # type: ignore[arg-type]
                pipe.finish()
            except BrokenPipeError:
                pass  # the client went away
            except BaseException as exc:
                log.error("saving %s failed: %s", ", ".join(names), exc)
                pipe.fail(exc)
            finally:
                store.unpin(chains)

        async def stream() -> AsyncGenerator[bytes, None]:
            store.pin(chains)  # until run() ends: an image removal keeps them
            worker = asyncio.ensure_future(asyncio.to_thread(run))
            try:
                async for chunk in pipe.chunks():
                    yield chunk
                await worker
            finally:
                pipe.close()
            for item in items:
                self.core.events.publish("image", "save", item.image.id,
                                         {"name": item.image.id})

        return stream()

    async def tag_image(self, source: str, repo: str, tag: str) -> None:
        image, ref = await asyncio.to_thread(self.store.tag, source, repo, tag)
        image_events.tagged(self.core.events, image.id, [ref])

    async def prune_images(self, filters: dict[str, list[str]]
                           ) -> tuple[list[dict[str, str]], int]:
        """`docker image prune`: dangling images (all unused ones with dangling=false) that
        no container uses, narrowed by until and label."""
        only_dangling = [v.lower() for v in filters.get("dangling", ["true"])] != ["false"]
        select_filters = {k: v for k, v in filters.items() if k in ("until", "label")}
        if only_dangling:
            select_filters["dangling"] = ["true"]
        listed = await asyncio.to_thread(
            lambda: images_listing.select(self.store.all(), select_filters,
                                          self.store.resolve, show_intermediate=False))
        report: list[dict[str, str]] = []
        reclaimed = 0
        for item in listed:
            if self.users(item.image.id):
                continue
            try:
                report += await self.remove_image(item.image.id, force=True)
            except (Conflict, NotFound):
                continue
            reclaimed += item.image.size
        self.core.events.publish("image", "prune", "", {"reclaimed": str(reclaimed)})
        return report, reclaimed

    async def remove_image(self, name: str, force: bool = False,
                           prune: bool = True) -> list[dict[str, str]]:
        """Docker's image delete (see images/delete.py); returns its Untagged/Deleted report."""
        image = await asyncio.to_thread(self.store.resolve, name)
        requested = None
        with contextlib.suppress(InvalidParameter):
            requested = reference.parse(name)
        refs = await asyncio.to_thread(
            lambda: self.store.tags_of(image.id) + self.store.digests_of(image.id))
        users = [delete.ImageUser(c.short_id, c.state.running) for c in self.users(image.id)]
        plan = delete.plan_delete(name, requested, image.id, refs, users, force)
        report: list[dict[str, str]] = []
        for ref in plan.untag:
            await asyncio.to_thread(self.store.untag, image.id, ref)
            report.append({"Untagged": ref.familiar()})
            self.core.events.publish("image", "untag", image.id, {"name": image.id})
        if plan.delete:
            await self._delete(image, report)
            # dockerd (unless noprune) then removes the parents left with no use: untagged,
            # without other children, used by no container (a build's intermediate images).
            parent_id = image.parent
            while prune and parent_id and not self.users(parent_id):
                parent = await asyncio.to_thread(self._unused_parent, parent_id)
                if parent is None:
                    break
                await self._delete(parent, report)
                parent_id = parent.parent
        return report

    async def _delete(self, image: Image, report: list[dict[str, str]]) -> None:
        removed = await asyncio.to_thread(self.store.remove_image, image)
        report.append({"Deleted": image.id})
        report.extend({"Deleted": chain} for chain in removed)
        self.core.events.publish("image", "delete", image.id, {"name": image.id})

    def _unused_parent(self, image_id: str) -> Image | None:
        """The image if it has no reference and no child image left, else None (thread)."""
        image = self.store.find(image_id)
        if image is None or self.store.tags_of(image.id) or self.store.digests_of(image.id):
            return None
        return None if self.store.children(image.id) else image


def _post(loop: asyncio.AbstractEventLoop, fn: "Callable[[load.LoadUpdate], None]",
          update: load.LoadUpdate) -> None:
    loop.call_soon_threadsafe(fn, update)
