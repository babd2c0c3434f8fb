"""Docker's `label` filter, shared by containers, images, volumes and networks."""


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
