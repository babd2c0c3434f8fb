"""Sizes: a container's writable layer and root filesystem, and `docker system df`."""

import asyncio
import collections

from stowd.engine import diskusage
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import Container
from stowd.engine.dirsize import dir_size
from stowd.engine.images.listing import intermediate_ids
from stowd.engine.volumes import Volume


async def container_sizes(x: Ctx, c: Container) -> tuple[int, int]:
    """(SizeRw, SizeRootFs): bytes in the writable layer, and with the image."""
    image = await asyncio.to_thread(x.images.find, c.image_id)
    rw = await asyncio.to_thread(dir_size, x.core.dir(c).upper)
    return rw, rw + (image.size if image else 0)


async def disk_usage(x: Ctx, kinds: set[str]) -> tuple[
        int, list[diskusage.ImageUsage], list[tuple[Container, int, int]],
        list[tuple[Volume, int, int]]]:
    """`docker system df`: LayersSize, images (with users and shared sizes), containers
    (with SizeRw and SizeRootFs), volumes (with size and users); only the kinds asked
    for are computed."""
    layers_size, images = 0, list[diskusage.ImageUsage]()
    if "image" in kinds:
        users = collections.Counter(h.container.image_id for h in x.core.handles)
        all_images = await asyncio.to_thread(x.images.all)
        layers_size, images = await asyncio.to_thread(
            diskusage.image_usage, all_images, users, x.images.layer_size)
        # As dockerd: every layer counts in LayersSize and in shared sizes, but a build's
        # intermediate images are not listed (they are the BuildCache rows).
        hidden = intermediate_ids(all_images)
        images = [u for u in images if u.image.id not in hidden]
    containers = []
    if "container" in kinds:
        for c in x.core.handles.containers():
            rw, rootfs_size = await container_sizes(x, c)
            containers.append((c, rw, rootfs_size))
    volumes = []
    if "volume" in kinds:
        for vol in x.volumes.all():
            size = await asyncio.to_thread(dir_size, x.volumes.mountpoint(vol.name))
            volumes.append((vol, size, len(x.volumes.users(vol.name))))
    return layers_size, images, containers, volumes
