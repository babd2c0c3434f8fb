"""Docker's shared filter rules: `label` (containers, images, volumes, networks, events)
and the name pattern of volumes and networks (moby's filters.Args.Match)."""

import re


def has_label(labels: dict[str, str], spec: str) -> bool:
    """`key` (present) or `key=value` (present with that value)."""
    key, sep, value = spec.partition("=")
    return key in labels and (not sep or labels[key] == value)


def labels_match(labels: dict[str, str] | None, wanted: list[str],
                 unwanted: list[str] | None = None) -> bool:
    """Every `label` filter holds and no `label!` filter does."""
    labels = labels or {}
    return (all(has_label(labels, w) for w in wanted)
            and not any(has_label(labels, u) for u in unwanted or []))


def pattern_match(pattern: str, value: str) -> bool:
    """Equal, or a regular expression found in the value (an invalid one matches nothing)."""
    if pattern == value:
        return True
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return False
