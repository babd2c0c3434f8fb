"""One build from start to end: the context received, the Dockerfile parsed, the stages
built, the tags set; the build's scratch directory removed whatever happens."""

import asyncio
import json
import secrets
import shutil
from typing import BinaryIO

from stowd.engine.build import context
from stowd.engine.build.builder import Builder, BuildHost, BuildOptions, Emit
from stowd.engine.build.parse import parse
from stowd.engine.images.store import Image


def _label_line(labels: dict[str, str]) -> str:
    """dockerd adds `--label`s as a LABEL instruction at the end of the Dockerfile."""
    return "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}"
                               for k, v in sorted(labels.items()))


async def run_build(host: BuildHost, source: BinaryIO, options: BuildOptions,
                    emit: Emit) -> Image:
    scratch = host.images.tmp_root / f"build-{secrets.token_hex(8)}"
    try:
        root = scratch / "context"
        await asyncio.to_thread(context.receive, source, root)
        text = await asyncio.to_thread(context.prepare, root, options.dockerfile)
        if options.labels:
            text = text.rstrip("\n") + "\n" + _label_line(options.labels) + "\n"
        dockerfile = parse(text)
        builder = Builder(host, options, root, scratch / "work", emit)
        image = await builder.build(dockerfile)
        for ref in options.tags:
            await host.tag(image.id, ref)
        return image
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, scratch, True))
