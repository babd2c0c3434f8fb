"""The classic build cache: a step's image is reused when its parent and its container
config (the instruction, as the nop or RUN command, with the Env, Labels, ... it ran with)
are those of the step (dockerd's `image/cache`). COPY and ADD put the checksum of what
they copy into that command, so changed content misses. The cache is the image store
itself: every step's image is kept (untagged, with its parent), so it survives restarts.

`--cache-from` images also answer when their history continues the parent's with the
step's command (dockerd's imageSource), which works for pulled or loaded images that have
no parent chain here. Blocking: call from a worker thread.
"""

import json
from collections.abc import Callable
from typing import Any

from stowd.engine.images.store import Image, ImageStore

# What must match (dockerd's compare() looks at Cmd, Env, Labels, ExposedPorts, Entrypoint
# and Volumes; the others make a step differ in stowd so that no hit can be wrong).
KEY_FIELDS = ("Cmd", "Entrypoint", "Env", "Labels", "ExposedPorts", "Volumes", "User",
              "WorkingDir", "Shell", "Healthcheck", "StopSignal", "OnBuild")


def cache_key(container_config: dict[str, Any]) -> str:
    return json.dumps({k: container_config.get(k) or None for k in KEY_FIELDS},
                      sort_keys=True)


def find_local(images: ImageStore, parent_id: str, container_config: dict[str, Any]
               ) -> Image | None:
    """A child of parent_id built by the same step, newest first."""
    key = cache_key(container_config)
    for child in images.children(parent_id):
        if cache_key(child.config.get("container_config") or {}) == key:
            return child
    return None


def _history_matches(parent: list[dict[str, Any]], target: list[dict[str, Any]]) -> bool:
    if len(parent) >= len(target):
        return False
    return all(a.get("created_by") == b.get("created_by")
               and bool(a.get("empty_layer")) == bool(b.get("empty_layer"))
               for a, b in zip(parent, target, strict=False))


def find_in_sources(images: ImageStore, sources: list[Image], parent: Image | None,
                    created_by: str) -> tuple[Image, int, int] | None:
    """A `--cache-from` image whose history continues parent's with created_by.

    Returns the image, how many history entries and how many layers the cached step ends
    with."""
    parent_history = list(parent.config.get("history") or []) if parent else []
    parent_diffs = list((parent.config.get("rootfs") or {}).get("diff_ids") or []) \
        if parent else []
    for source in sources:
        history = list(source.config.get("history") or [])
        diffs = list((source.config.get("rootfs") or {}).get("diff_ids") or [])
        if not _history_matches(parent_history, history):
            continue
        if diffs[:len(parent_diffs)] != parent_diffs:
            continue
        entry = history[len(parent_history)]
        if entry.get("created_by") != created_by:
            continue
        layers = len(parent_diffs) + (0 if entry.get("empty_layer") else 1)
        if layers > len(diffs):
            continue
        return source, len(parent_history) + 1, layers
    return None


def is_build_step(image: Image) -> bool:
    """An untagged image a build made (each step's image is one): the build cache."""
    return (not image.repo_tags and not image.repo_digests
            and "container_config" in image.config and image.parent != "")


def usage(images: list[Image], in_use: set[str], layer_size: Callable[[str], int]
          ) -> list[dict[str, Any]]:
    """`docker system df`'s BuildCache records for the build steps kept as images.

    Size is the step's own layer (0 for a config-only step); Shared when an image that is
    not build cache also has that layer (pruning would not free it)."""
    kept_layers = {c for i in images if not is_build_step(i) for c in i.layers}
    out = []
    for image in images:
        if not is_build_step(image):
            continue
        history = image.config.get("history") or [{}]
        own = image.layers[-1] if image.layers and not history[-1].get("empty_layer") else None
        out.append({
            "ID": image.id.removeprefix("sha256:"),
            "Parent": image.parent.removeprefix("sha256:"),
            "Type": "regular",
            "Description": history[-1].get("created_by", ""),
            "InUse": image.id in in_use,
            "Shared": own is not None and own in kept_layers,
            "Size": layer_size(own) if own else 0,
            "CreatedAt": image.created,
            "LastUsedAt": image.created,
            "UsageCount": 0,
        })
    return out
