"""Restart policies, as pure rules: whether an exited container starts again, and when.

Docker's rules: `no` never; `always` after any exit; `unless-stopped` likewise unless the
user stopped it; `on-failure[:N]` after a non-zero exit while fewer than N restarts were
made (a user's start resets the count). A user's stop or kill cancels a pending restart.
The delay starts at 100 ms and doubles per restart up to a minute; a run of 10 s or more
resets it. When the daemon starts, stopped containers whose policy says so start again:
`always` even after a user's stop (dockerd's restore), the others only if not user-stopped.
The scheduling itself is containers/restarting.py.
"""

from stowd.engine.core.container import EXITED, Container

INITIAL_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0


def should_restart(c: Container, daemon_start: bool = False) -> bool:
    policy = c.host_config.get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if name == "no":
        return False
    if name == "always":
        # Docker restarts `always` containers at daemon start even if they were stopped.
        return daemon_start or not c.state.manually_stopped
    if c.state.manually_stopped:
        return False
    if name == "unless-stopped":
        return True
    if name == "on-failure":
        limit = policy.get("MaximumRetryCount") or 0
        return c.state.exit_code != 0 and (limit == 0 or c.restart_count < limit)
    return False


def next_delay(previous: float, ran_for: float) -> float:
    """The wait before the next restart: doubled from the previous one (0 = none yet),
    back to the start after a long enough run."""
    if ran_for >= RESET_AFTER or previous <= 0:
        return INITIAL_DELAY
    return min(max(previous * 2, INITIAL_DELAY), MAX_DELAY)


def revive_at_daemon_start(c: Container) -> bool:
    """dockerd's restore: does this stopped container start again with the daemon?
    `always` even after a user's stop; `unless-stopped` and `on-failure` (non-zero exit,
    retries left) only if the user did not stop it."""
    return (c.state.status == EXITED and c.state.has_been_started
            and should_restart(c, daemon_start=True))
