"""Restart policies: which exits restart, and the delay (dockerd's restartmanager rules)."""

import asyncio
import time
from typing import Any

from stowd.engine import restart
from stowd.engine.containers import EXITED, Container, rfc3339_nano


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


class _FakeEngine:
    def __init__(self) -> None:
        self.spawned: list[Any] = []

    def _persist(self, c: Container) -> None:
        pass

    def _spawn(self, coro: Any) -> None:
        self.spawned.append(coro)
        coro.close()


def test_delay_doubles_from_100ms_caps_at_a_minute_and_resets_after_10s() -> None:
    async def run() -> list[float]:
        rm = restart.RestartManager(_FakeEngine())  # type: ignore[arg-type]
        c = _ctr({"Name": "always"})
        delays = []
        for ran_for in (1, 1, 1, 1, 11, 1):
            c.state.started_at = rfc3339_nano(time.time() - ran_for)
            rm._schedule(c)
            delays.append(rm._delays[c.id])
        for _ in range(12):
            rm._schedule(c)
        delays.append(rm._delays[c.id])
        rm.cancel_all()
        return delays

    delays = asyncio.run(run())
    assert delays == [0.1, 0.2, 0.4, 0.8, 0.1, 0.2, 60.0]


def test_daemon_start_revives_by_policy() -> None:
    engine = _FakeEngine()
    rm = restart.RestartManager(engine)  # type: ignore[arg-type]
    revived = [_ctr({"Name": "always"}, manual=True), _ctr({"Name": "on-failure"}, 1)]
    left = [_ctr({"Name": "no"}), _ctr({"Name": "unless-stopped"}, manual=True),
            _ctr({"Name": "on-failure", "MaximumRetryCount": 1}, 1, count=1),
            _ctr({"Name": "on-failure"}, 0)]
    never_started = _ctr({"Name": "always"})
    never_started.state.has_been_started = False
    rm.revive_at_daemon_start([*revived, *left, never_started])
    assert len(engine.spawned) == len(revived)
