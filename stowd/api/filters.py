"""Docker's `filters` query parameter: JSON in either of its two forms."""

import json
from collections.abc import Set

from stowd.engine.errors import InvalidParameter


def parse_filters(raw: str | None, accepted: Set[str]) -> dict[str, list[str]]:
    """{"key": {"v": true}} (the CLI's form) or {"key": ["v"]} (docker-py's) → {key: [v]}."""
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: `[[[[…` thousands deep
        raise InvalidParameter("invalid filter") from exc
    if not isinstance(doc, dict):
        raise InvalidParameter("invalid filter")
    out: dict[str, list[str]] = {}
    for key, value in doc.items():
        if key not in accepted:
            raise InvalidParameter(f"invalid filter '{key}'")
        if isinstance(value, dict):
            out[key] = [str(k) for k, v in value.items() if v]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        elif isinstance(value, str):
            out[key] = [value]
        else:
            raise InvalidParameter("invalid filter")
    return out
