"""GET /events filters, as dockerd's daemon/events/filter.go matches them."""

from stowd.engine.core.events import Event, EventFilter


def _shown(filters: dict[str, list[str]], event: Event) -> bool:
    return EventFilter(filters).matches(event)


CREATE = Event("container", "create", "c0ffee" + "0" * 58,
               {"name": "web", "image": "127.0.0.1:5000/team/app:v2", "tier": "front"})
CONNECT = Event("network", "connect", "beef" + "0" * 60,
                {"name": "backend", "type": "bridge", "container": CREATE.actor_id})
EXEC = Event("container", "exec_start: sh -c true", CREATE.actor_id, {"name": "web"})
PULL = Event("image", "pull", "127.0.0.1:5000/team/app:v2", {"name": "127.0.0.1:5000/team/app"})


def test_network_and_other_objects_by_id_or_name_prefix() -> None:
    assert _shown({"network": ["backend"]}, CONNECT)
    assert _shown({"network": ["beef"]}, CONNECT)
    assert not _shown({"network": ["frontend"]}, CONNECT)
    assert not _shown({"network": ["backend"]}, CREATE)  # was ignored: every event passed
    assert _shown({"container": ["we"]}, CREATE) and _shown({"container": ["c0f"]}, CREATE)
    assert not _shown({"container": ["web"]}, CONNECT)
    assert not _shown({"daemon": ["x"]}, CREATE)


def test_event_exact_but_prefix_for_the_actions_dockerd_fuzzes() -> None:
    assert _shown({"event": ["create"]}, CREATE)
    assert not _shown({"event": ["creat"]}, CREATE)
    assert _shown({"event": ["exec_start"]}, EXEC)
    assert _shown({"event": ["die", "exec_start"]}, EXEC)


def test_image_by_reference_or_name_without_tag_even_behind_a_port() -> None:
    assert _shown({"image": ["127.0.0.1:5000/team/app"]}, CREATE)
    assert _shown({"image": ["127.0.0.1:5000/team/app:v2"]}, CREATE)
    assert not _shown({"image": ["127.0.0.1"]}, CREATE)
    assert _shown({"image": ["127.0.0.1:5000/team/app"]}, PULL)


def test_keys_all_apply_values_are_alternatives() -> None:
    assert _shown({"type": ["container", "image"], "label": ["tier=front"]}, CREATE)
    assert not _shown({"type": ["container"], "label": ["tier=back"]}, CREATE)
    assert not _shown({"scope": ["swarm"]}, CREATE)
    assert _shown({}, CONNECT)
