"""`docker commit`: the container's writable layer as a new image over its own."""

import asyncio
from typing import Any

from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import RUNNING
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.images import commit as committing
from stowd.engine.images import events as image_events
from stowd.engine.images import reference
from stowd.engine.images.store import Image


async def commit(x: Ctx, ref: str, repo: str, tag: str, *, comment: str = "",
                 author: str = "", pause: bool = True, changes: list[str] | None = None,
                 config: dict[str, Any] | None = None) -> Image:
    c = x.core.handles.get(ref)
    tags = [reference.tag_reference(repo, tag)] if repo else []
    if config is not None and not isinstance(config, dict):
        raise InvalidParameter("the request body must be a container config object")
    new_config = committing.commit_config(c.config, config, changes or [])
    image = await asyncio.to_thread(x.images.find, c.image_id)
    if image is None:
        raise NotFound(f"No such image: {c.image_id}")
    paused_here = False
    async with x.core.handles.lock(c.id):
        if pause and c.state.status == RUNNING:
            # As Docker: freeze the processes so the layer is a consistent snapshot.
            await asyncio.to_thread(x.runtime.pause, c.id)
            paused_here = True
        try:
            new, replaced = await asyncio.to_thread(
                committing.commit_layer, x.images, x.core.dir(c).upper, image,
                c.id, new_config, author, comment, " ".join([c.path, *c.args]), tags)
        finally:
            if paused_here:
                await asyncio.to_thread(x.runtime.resume, c.id)
    x.core.event(c, "commit", comment=comment)
    image_events.tagged(x.core.events, new.id, tags)
    image_events.untagged(x.core.events, replaced)
    return new
