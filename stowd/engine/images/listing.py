"""`GET /images/json` filters, as dockerd applies them.

- `dangling=true|false`: images without / with tags.
- `label=key` or `label=key=value`: every given label must match.
- `reference=pattern`: a tag whose familiar form (`busybox:latest`) or familiar name
  (`busybox`) matches the pattern in Go's `path.Match` syntax (`*` stops at `/`); only the
  matching tags are listed, and untagged images are left out.
- `before=image`, `since=image`: created before / after that image.
- `until=time`: created before a timestamp (unix seconds, RFC 3339, or a duration ago).
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from stowd.engine.errors import InvalidParameter
from stowd.engine.images.store import Image
from stowd.engine.labels import labels_match
from stowd.engine.timespec import parse_until

ACCEPTED = {"dangling", "label", "before", "since", "reference", "until"}


@dataclass
class Listed:
    image: Image
    repo_tags: list[str]  # the tags to show: all, or those a reference filter matched


def path_match_regex(pattern: str) -> re.Pattern[str]:
    """Go's path.Match pattern as a regular expression; InvalidParameter if malformed."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i == len(pattern):
                raise InvalidParameter(f"invalid reference pattern: {pattern}")
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("^", "]") else i + 1)
            if end < 0:
                raise InvalidParameter(f"invalid reference pattern: {pattern}")
            body = pattern[i + 1:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            if not body:
                raise InvalidParameter(f"invalid reference pattern: {pattern}")
            escaped = "".join("\\" + c if c in "\\]^[" else c for c in body)
            out.append(("[^/" if negate else "[") + escaped + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def reference_matches(patterns: list[re.Pattern[str]], tag: str) -> bool:
    name = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
    return any(p.match(tag) or p.match(name) for p in patterns)


def _created(image: Image) -> float:
    try:
        return datetime.fromisoformat(image.created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _bool_filter(filters: dict[str, list[str]], key: str) -> bool | None:
    values = filters.get(key)
    if not values:
        return None
    wanted = {v.lower() for v in values}
    if wanted <= {"true", "1"}:
        return True
    if wanted <= {"false", "0"}:
        return False
    raise InvalidParameter(f"Invalid filter '{key}=[{' '.join(values)}]'")


def intermediate_ids(images: list[Image]) -> set[str]:
    """Untagged images that other images name as their parent (a build's steps): what
    `docker images` without -a and `docker system df` leave out of their image lists."""
    parents = {i.parent for i in images if i.parent}
    return {i.id for i in images
            if not i.repo_tags and not i.repo_digests and i.id in parents}


def select(images: list[Image], filters: dict[str, list[str]],
           resolve: Callable[[str], Image], now: float | None = None,
           show_intermediate: bool = True) -> list[Listed]:
    """The images the filters let through, newest first.

    Without show_intermediate (`docker images` without -a), untagged images that other
    images name as their parent (a build's steps) are left out, as dockerd does."""
    hidden = set() if show_intermediate else intermediate_ids(images)
    now = time.time() if now is None else now
    dangling = _bool_filter(filters, "dangling")
    patterns = [path_match_regex(p) for p in filters.get("reference", [])]
    before = min((_created(resolve(n)) for n in filters.get("before", [])), default=None)
    since = max((_created(resolve(n)) for n in filters.get("since", [])), default=None)
    until = min((parse_until(v, now) for v in filters.get("until", [])), default=None)
    out = []
    for image in sorted(images, key=_created, reverse=True):
        created = _created(image)
        if image.id in hidden:
            continue
        if before is not None and created >= before:
            continue
        if since is not None and created <= since:
            continue
        if until is not None and created >= until:
            continue
        if dangling is not None and dangling != (not image.repo_tags):
            continue
        if not labels_match(image.container_config.get("Labels"), filters.get("label", [])):
            continue
        tags = image.repo_tags
        if patterns:
            tags = [t for t in tags if reference_matches(patterns, t)]
            if not tags:
                continue
        out.append(Listed(image, tags))
    return out


def shared_sizes(images: list[Image], layer_size: Callable[[str], int]) -> dict[str, int]:
    """Per image, the bytes of its layers that some other image uses too (`shared-size`)."""
    users: dict[str, int] = {}
    for image in images:
        for chain in set(image.layers):
            users[chain] = users.get(chain, 0) + 1
    return {image.id: sum(layer_size(c) for c in set(image.layers) if users[c] > 1)
            for image in images}
