"""Which registry blobs each layer came from (dockerd's v2 metadata "blobsums").

A push sends a layer the registry may already hold: pulled layers keep the digest, media
type and size of their blob, and where they came from, so that pushing the image back sends
the same digests (the registry answers "Layer already exists") and pushing to another
repository of the same registry can mount the blob instead of uploading it.

A foreign (non-distributable) layer also keeps the URLs it is served from: a push does not
upload it but names it with them, as dockerd.

On disk: `<data-root>/images/distribution/<diff-id hex>.json`, a list of
`{digest, mediaType, size, domain, path[, urls]}`, replaced atomically. Blocking: call from a
thread.
"""

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stowd.engine.distribution.manifest import FOREIGN_LAYERS, Descriptor

MAX_SOURCES = 20  # per layer; the oldest are forgotten first


@dataclass(frozen=True)
class BlobSource:
    digest: str
    media_type: str
    size: int
    domain: str
    path: str
    urls: tuple[str, ...] = ()


class BlobSums:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _file(self, diff_id: str) -> Path:
        return self.root / (diff_id.removeprefix("sha256:") + ".json")

    def get(self, diff_id: str) -> list[BlobSource]:
        try:
            doc = json.loads(self._file(diff_id).read_bytes())
        except (OSError, ValueError):
            return []
        out = []
        for e in doc if isinstance(doc, list) else []:
            try:
                urls = tuple(u for u in e.get("urls") or [] if isinstance(u, str))
                out.append(BlobSource(e["digest"], e["mediaType"], int(e["size"]),
                                      e["domain"], e["path"], urls))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
        return out

    def add(self, diff_id: str, desc: Descriptor, domain: str, path: str) -> None:
        urls = tuple(desc.urls) if desc.media_type in FOREIGN_LAYERS else ()
        self.add_source(diff_id, BlobSource(desc.digest, desc.media_type, desc.size, domain,
                                            path, urls))

    def add_source(self, diff_id: str, source: BlobSource) -> None:
        with self._lock:
            known = [s for s in self.get(diff_id)
                     if (s.digest, s.domain, s.path) != (source.digest, source.domain,
                                                         source.path)]
            known = [*known, source][-MAX_SOURCES:]
            doc: list[dict[str, Any]] = [
                {"digest": s.digest, "mediaType": s.media_type, "size": s.size,
                 "domain": s.domain, "path": s.path, **({"urls": list(s.urls)} if s.urls else {})}
                for s in known]
            target = self._file(diff_id)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, target)
