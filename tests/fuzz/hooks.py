"""schemathesis hooks for `make fuzz` (loaded through SCHEMATHESIS_HOOKS)."""

from typing import Any

import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("application/x-tar")
def tar_body(ctx: Any, value: Any) -> bytes:
    """Archives (docker cp, load, import, plugin create) as raw bytes: mostly not a tar at
    all, which is what a fuzzer should send them."""
    return serialize_binary(value)
