"""Disk usage: a writable layer's size (SizeRw) and `docker system df`'s figures.

dockerd sizes a directory as the sum of the sizes of what is in it that is not a directory,
each inode counted once (hard links), symlinks by their own size (moby pkg/directory).
Blocking: call from a thread.
"""

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stowd.engine.images.store import Image


def dir_size(path: Path | str) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                if st.st_size == 0:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_size
    return total


@dataclass
class ImageUsage:
    image: Image
    containers: int
    shared_size: int


def image_usage(images: list[Image], users: Counter[str],
                layer_size: Callable[[str], int]) -> tuple[int, list[ImageUsage]]:
    """(LayersSize, per image: containers using it and the size of layers it shares)."""
    refs: Counter[str] = Counter()
    for image in images:
        refs.update(set(image.layers))
    sizes = {chain: layer_size(chain) for chain in refs}
    out = []
    for image in images:
        shared = sum(sizes[c] for c in set(image.layers) if refs[c] > 1)
        out.append(ImageUsage(image, users.get(image.id, 0), shared))
    return sum(sizes.values()), out
