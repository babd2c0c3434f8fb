"""`docker top`: run ps on the host and keep the container's rows, as dockerd does.

dockerd runs `ps <ps_args> -q <pids>` (plain `ps <ps_args>` when ps refuses -q with those
options), takes the titles from the first line, splits each row on whitespace with the
overhanging fields joined into the last column (so CMD keeps its arguments), keeps rows
whose PID is the container's, and the `-` rows (threads, with `-L` or `m`) that follow one.
"""

import re
import shlex
import subprocess

from stowd.engine.errors import InvalidParameter, SystemError_

_PID_FORMAT = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


def validate_ps_args(ps_args: str) -> None:
    for key, value in _PID_FORMAT.findall(ps_args):
        if key != "pid":
            raise InvalidParameter(f'specifying "{key}={value}" is not allowed')


def parse_ps_output(output: str, pids: set[int]) -> tuple[list[str], list[list[str]]]:
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidParameter("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    rows: list[list[str]] = []
    follows_container = False
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split()
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":
            if follows_container:
                rows.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError as exc:
            raise SystemError_(f"Unexpected pid '{fields[pid_index]}': {exc}") from exc
        follows_container = pid in pids
        if follows_container:
            rows.append(_fit(fields, len(titles)))
    return titles, rows


def _fit(fields: list[str], columns: int) -> list[str]:
    if columns <= 0:
        return fields
    return [*fields[:columns - 1], " ".join(fields[columns - 1:])]


def ps_table(ps_args: str, pids: set[int]) -> tuple[list[str], list[list[str]]]:
    """Blocking: the Titles and Processes of `docker top`."""
    ps_args = ps_args or "-ef"
    validate_ps_args(ps_args)
    args = shlex.split(ps_args)
    proc = None
    if pids:
        proc = subprocess.run(["ps", *args, "-q", ",".join(str(p) for p in sorted(pids))],
                              capture_output=True, text=True, check=False)
    if proc is None or proc.returncode != 0:
        # some options (such as f) cannot be used together with -q
        proc = subprocess.run(["ps", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InvalidParameter(f"ps: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    return parse_ps_output(proc.stdout, pids)
