"""Restart policies: which exits restart, and the delay (dockerd's restartmanager rules)."""

from typing import Any

from stowd.engine import restart
from stowd.engine.core.container import EXITED, Container


def _ctr(policy: dict[str, Any], exit_code: int = 1, manual: bool = False,
         count: int = 0) -> Container:
    c = Container(id="c" * 64, name="x", created="", image_id="", config={},
                  host_config={"RestartPolicy": policy}, path="sh", args=[])
    c.state.exit_code = exit_code
    c.state.manually_stopped = manual
    c.state.status = EXITED
    c.state.has_been_started = True
    c.restart_count = count
    return c


def test_should_restart_by_policy() -> None:
    assert not restart.should_restart(_ctr({"Name": "no"}))
    assert restart.should_restart(_ctr({"Name": "always"}, 0))
    assert not restart.should_restart(_ctr({"Name": "always"}, manual=True))
    assert restart.should_restart(_ctr({"Name": "always"}, manual=True), daemon_start=True)
    assert restart.should_restart(_ctr({"Name": "unless-stopped"}, 0))
    assert not restart.should_restart(_ctr({"Name": "unless-stopped"}, manual=True),
                                      daemon_start=True)
    on_failure = {"Name": "on-failure", "MaximumRetryCount": 2}
    assert not restart.should_restart(_ctr(on_failure, 0))
    assert restart.should_restart(_ctr(on_failure, 1, count=1))
    assert not restart.should_restart(_ctr(on_failure, 1, count=2))
    assert restart.should_restart(_ctr({"Name": "on-failure"}, 1, count=99))


def test_delay_doubles_from_100ms_caps_at_a_minute_and_resets_after_10s() -> None:
    delays, previous = [], 0.0
    for ran_for in (1, 1, 1, 1, 11, 1):
        previous = restart.next_delay(previous, ran_for)
        delays.append(previous)
    for _ in range(12):
        previous = restart.next_delay(previous, 1)
    delays.append(previous)
    assert delays == [0.1, 0.2, 0.4, 0.8, 0.1, 0.2, 60.0]


def test_daemon_start_revives_by_policy() -> None:
    revived = [_ctr({"Name": "always"}, manual=True), _ctr({"Name": "on-failure"}, 1)]
    left = [_ctr({"Name": "no"}), _ctr({"Name": "unless-stopped"}, manual=True),
            _ctr({"Name": "on-failure", "MaximumRetryCount": 1}, 1, count=1),
            _ctr({"Name": "on-failure"}, 0)]
    never_started = _ctr({"Name": "always"})
    never_started.state.has_been_started = False
    assert [restart.revive_at_daemon_start(c) for c in revived] == [True, True]
    assert not any(restart.revive_at_daemon_start(c) for c in [*left, never_started])
