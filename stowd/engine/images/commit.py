"""`docker commit`: a container's writable layer on top of its image, as a new image.

The upper directory is tarred back into a layer (overlay whiteouts turned into `.wh.`
entries) and fed straight into the layer store through a pipe, so the layer is hashed and
extracted once without a temporary tar. Blocking: call from a worker thread.
"""

import json
import os
import threading
from pathlib import Path
from typing import Any

from stowd import __version__
from stowd.engine.images import reference
from stowd.engine.images.archive import apply_changes
from stowd.engine.images.save import retar_layer
from stowd.engine.images.store import Image, ImageStore, now_rfc3339

# Container settings a committed image keeps, as Docker's commit merges them.
_KEPT = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr",
         "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck",
         "ArgsEscaped", "Volumes", "WorkingDir", "Entrypoint", "OnBuild", "Labels",
         "StopSignal", "Shell")


def commit_config(container_config: dict[str, Any], override: dict[str, Any] | None,
                  changes: list[str]) -> dict[str, Any]:
    """The new image's `config`: the container's, then the request's, then the changes."""
    config = {k: container_config[k] for k in _KEPT if container_config.get(k) is not None}
    config["Image"] = ""
    for key, value in (override or {}).items():
        if value is not None and key in _KEPT:
            config[key] = value
    return apply_changes(config, changes)


def commit_layer(images: ImageStore, upper: Path, image: Image, container_id: str,
                 config: dict[str, Any], author: str, comment: str, command: str,
                 tags: list[reference.Reference]) -> tuple[Image, list[Any]]:
    """Store upper as a layer over image and record the new image."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        with os.fdopen(write_fd, "wb", buffering=1 << 20) as out:
            try:
                retar_layer(upper, out)
            except BaseException as exc:  # reported by the consumer
                failure.append(exc)

    writer = threading.Thread(target=produce, name="commit-tar", daemon=True)
    writer.start()
    with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
        try:
            chain, diff_id, _ = images.store_layer(source, image.layers[-1] if image.layers
                                                   else None)
        finally:
            source.read()  # let the writer finish even if extraction stopped early
            writer.join()
    if failure:
        raise failure[0]
    base = image.config
    created = now_rfc3339()
    history = list(base.get("history") or [])
    history.append({"created": created, "created_by": command,
                    **({"author": author} if author else {}),
                    **({"comment": comment} if comment else {})})
    doc = {
        "architecture": base.get("architecture", ""),
        "os": base.get("os", "linux"),
        **({"variant": base["variant"]} if base.get("variant") else {}),
        "created": created,
        "author": author,
        "comment": comment,
        "container": container_id,
        "docker_version": f"stowd-{__version__}",
        "config": config,
        "rootfs": {"type": "layers",
                   "diff_ids": [*((base.get("rootfs") or {}).get("diff_ids") or []), diff_id]},
        "history": history,
    }
    config_bytes = json.dumps(doc, separators=(",", ":")).encode()
    # A committed image's Parent is the image its container ran (docker history's chain).
    new, replaced = images.add_image(config_bytes, [*image.layers, chain], tags,
                                     parent=image.id)
    return new, replaced
