"""The image events a change of tags publishes (Docker's words: tag, untag)."""

from stowd.engine.core.events import EventBus
from stowd.engine.images import reference


def tagged(events: EventBus, image_id: str, refs: list[reference.Reference]) -> None:
    for ref in refs:
        events.publish("image", "tag", image_id, {"name": ref.familiar()})


def untagged(events: EventBus, replaced: list[tuple[reference.Reference, str]]) -> None:
    """Images whose tag moved to another image."""
    for _, image_id in replaced:
        events.publish("image", "untag", image_id, {"name": image_id})
