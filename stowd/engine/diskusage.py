"""Disk usage: a writable layer's size (SizeRw) and `docker system df`'s figures.

Directories are sized by dirsize.dir_size (as dockerd). Blocking: call from a thread.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from stowd.engine.images.store import Image


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
