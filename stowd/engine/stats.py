"""Container resource statistics: cgroup v1 and v2 readers → one sample.

What each figure is made of follows dockerd's mapping (docs: shared/design/docker-api-notes.md,
"stats"): CPU in nanoseconds, `system_cpu_usage` from the first seven numbers of /proc/stat's
`cpu` line, `online_cpus` = the number of `cpuN` lines, the memory limit capped at the host's
memory, block I/O per device and operation, network counters from the container's own
network namespace (/proc/<pid>/net/dev, loopback left out).

The readers are plain functions over a cgroup directory, so unit tests run them on files
recorded from real v1 and v2 hierarchies. Everything here blocks: call it from a thread.
"""

import contextlib
import os
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NANOS = 1_000_000_000

# dockerd's memory_stats.stats keys on cgroup v1 (all are read from memory.stat).
V1_MEMORY_KEYS = (
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout",
    "pgfault", "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "hierarchical_memory_limit", "hierarchical_memsw_limit",
    "total_cache", "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty",
    "total_writeback", "total_pgpgin", "total_pgpgout", "total_pgfault", "total_pgmajfault",
    "total_inactive_anon", "total_active_anon", "total_inactive_file", "total_active_file",
    "total_unevictable",
)
# ... and on cgroup v2 (memory.stat keys; a key the kernel does not have reads 0).
V2_MEMORY_KEYS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file",
    "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault",
    "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim",
    "pgrefill", "pgscan", "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed",
    "thp_fault_alloc", "thp_collapse_alloc",
)
# The eight blkio lists, in dockerd's order; v1 CFQ file names (blkio.<name>) beside them.
BLKIO_LISTS = (
    ("io_service_bytes_recursive", "io_service_bytes_recursive"),
    ("io_serviced_recursive", "io_serviced_recursive"),
    ("io_queue_recursive", "io_queued_recursive"),
    ("io_service_time_recursive", "io_service_time_recursive"),
    ("io_wait_time_recursive", "io_wait_time_recursive"),
    ("io_merged_recursive", "io_merged_recursive"),
    ("io_time_recursive", "time_recursive"),
    ("sectors_recursive", "sectors_recursive"),
)


@dataclass
class BlkioEntry:
    major: int
    minor: int
    op: str
    value: int


@dataclass
class CpuSample:
    total: int = 0
    percpu: list[int] | None = None  # v1 only
    kernel: int = 0
    user: int = 0
    system: int = 0  # host CPU time, all CPUs, idle included
    online_cpus: int = 0
    periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0


@dataclass
class MemorySample:
    usage: int = 0
    max_usage: int = 0  # v1 only
    limit: int = 0
    failcnt: int = 0
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class NetSample:
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0


@dataclass
class Sample:
    read: float  # unix seconds
    cpu: CpuSample
    memory: MemorySample
    blkio: dict[str, list[BlkioEntry] | None]
    pids_current: int = 0
    pids_limit: int = 0
    networks: dict[str, NetSample] | None = None


# --- small file readers -----------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
        return None
    except OSError:
        return None


def _int(text: str | None, default: int = 0) -> int:
    if text is None:
        return default
    text = text.strip()
    if not text or text == "max":
        return default
    try:
        return int(text)
    except ValueError:
        return default


def parse_flat_keyed(text: str | None) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(system CPU time in ns, number of CPUs) from /proc/stat, as dockerd reads it."""
    system = 0
    cpus = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            fields = line.split()[1:8]
            system = sum(int(f) for f in fields) * NANOS // CLK_TCK
        elif line.startswith("cpu"):
            cpus += 1
        elif cpus:
            break
    return system, cpus


def parse_net_dev(text: str | None) -> dict[str, NetSample]:
    """/proc/<pid>/net/dev → counters per interface, loopback left out."""
    out: dict[str, NetSample] = {}
    for line in (text or "").splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if name == "lo":
            continue
        f = [int(x) for x in rest.split()]
        if len(f) < 12:
            continue
        out[name] = NetSample(rx_bytes=f[0], rx_packets=f[1], rx_errors=f[2], rx_dropped=f[3],
                              tx_bytes=f[8], tx_packets=f[9], tx_errors=f[10],
                              tx_dropped=f[11])
    return out


def parse_blkio_v1(text: str | None) -> list[BlkioEntry]:
    """`8:0 Read 4096` lines (and `8:0 4096` for sectors/time); `Total N` lines skipped."""
    out: list[BlkioEntry] = []
    for line in (text or "").splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) < 3:
            continue
        try:
            major, minor = int(fields[0]), int(fields[1])
            if len(fields) == 4:
                out.append(BlkioEntry(major, minor, fields[2], int(fields[3])))
            else:
                out.append(BlkioEntry(major, minor, "", int(fields[2])))
        except ValueError:
            continue
    return out


def parse_io_stat_v2(text: str | None) -> list[BlkioEntry]:
    """io.stat `8:0 rbytes=1 wbytes=2 ...` → read and write bytes per device."""
    out: list[BlkioEntry] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major_s, _, minor_s = parts[0].partition(":")
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        try:
            major, minor = int(major_s), int(minor_s)
            out.append(BlkioEntry(major, minor, "read", int(kv.get("rbytes", 0))))
            out.append(BlkioEntry(major, minor, "write", int(kv.get("wbytes", 0))))
        except ValueError:
            continue
    return out


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


# --- the two hierarchies ----------------------------------------------------------------

def read_v1(root: Path, rel: str, mem_total: int) -> tuple[CpuSample, MemorySample,
                                                           dict[str, list[BlkioEntry] | None],
                                                           int, int]:
    """One reading of a container's v1 cgroups: root/<controller>/<rel>/..."""
    rel = rel.strip("/")
    cpuacct = root / "cpuacct" / rel
    cpu_dir = root / "cpu" / rel
    mem = root / "memory" / rel
    blkio = root / "blkio" / rel
    pids = root / "pids" / rel

    acct = parse_flat_keyed(_read(cpuacct / "cpuacct.stat"))
    percpu_text = _read(cpuacct / "cpuacct.usage_percpu")
    throttle = parse_flat_keyed(_read(cpu_dir / "cpu.stat"))
    cpu = CpuSample(
        total=_int(_read(cpuacct / "cpuacct.usage")),
        percpu=[int(x) for x in percpu_text.split()] if percpu_text is not None else None,
        kernel=acct.get("system", 0) * NANOS // CLK_TCK,
        user=acct.get("user", 0) * NANOS // CLK_TCK,
        periods=throttle.get("nr_periods", 0),
        throttled_periods=throttle.get("nr_throttled", 0),
        throttled_time=throttle.get("throttled_time", 0),
    )

    raw = parse_flat_keyed(_read(mem / "memory.stat"))
    limit = _int(_read(mem / "memory.limit_in_bytes"))
    memory = MemorySample(
        usage=_int(_read(mem / "memory.usage_in_bytes")),
        max_usage=_int(_read(mem / "memory.max_usage_in_bytes")),
        limit=min(limit, mem_total) if mem_total and limit else limit,
        failcnt=_int(_read(mem / "memory.failcnt")),
        stats={k: raw.get(k, 0) for k in V1_MEMORY_KEYS} if raw else {},
    )

    lists: dict[str, list[BlkioEntry] | None] = {}
    if (blkio / "blkio.io_serviced_recursive").exists():  # CFQ: all eight lists
        for key, fname in BLKIO_LISTS:
            lists[key] = parse_blkio_v1(_read(blkio / f"blkio.{fname}"))
    else:  # blk-mq kernels: only the throttle counters exist
        for key, fname in BLKIO_LISTS:
            if key in ("io_service_bytes_recursive", "io_serviced_recursive"):
                lists[key] = parse_blkio_v1(_read(blkio / f"blkio.throttle.{fname}"))
            else:
                lists[key] = []
    return (cpu, memory, lists, _int(_read(pids / "pids.current")),
            _int(_read(pids / "pids.max")))


def read_v2(path: Path, mem_total: int) -> tuple[CpuSample, MemorySample,
                                                 dict[str, list[BlkioEntry] | None], int, int]:
    """One reading of a container's v2 cgroup directory."""
    stat = parse_flat_keyed(_read(path / "cpu.stat"))
    cpu = CpuSample(
        total=stat.get("usage_usec", 0) * 1000,
        percpu=None,
        kernel=stat.get("system_usec", 0) * 1000,
        user=stat.get("user_usec", 0) * 1000,
        periods=stat.get("nr_periods", 0),
        throttled_periods=stat.get("nr_throttled", 0),
        throttled_time=stat.get("throttled_usec", 0) * 1000,
    )
    raw = parse_flat_keyed(_read(path / "memory.stat"))
    limit_text = _read(path / "memory.max")
    limit = mem_total if limit_text is None or limit_text.strip() == "max" else _int(limit_text)
    memory = MemorySample(
        usage=_int(_read(path / "memory.current")),
        max_usage=0,
        limit=min(limit, mem_total) if mem_total and limit else limit,
        failcnt=parse_flat_keyed(_read(path / "memory.events")).get("oom", 0),
        stats={k: raw.get(k, 0) for k in V2_MEMORY_KEYS} if raw else {},
    )
    lists: dict[str, list[BlkioEntry] | None] = {key: None for key, _ in BLKIO_LISTS}
    io_text = _read(path / "io.stat")
    lists["io_service_bytes_recursive"] = parse_io_stat_v2(io_text) if io_text else None
    return (cpu, memory, lists, _int(_read(path / "pids.current")),
            _int(_read(path / "pids.max")))


def cgroup_v2_host(root: Path = CGROUP_ROOT) -> bool:
    """True on a unified (v2-only) hierarchy; hybrid hosts read the v1 controllers."""
    return (root / "cgroup.controllers").exists()


def read_sample(cgroup_rel: str, pid: int, *, root: Path = CGROUP_ROOT,
                proc: Path = Path("/proc"), v2: bool | None = None,
                mem_total: int | None = None) -> Sample:
    """One complete sample of a running container (its cgroup and its network namespace)."""
    if v2 is None:
        v2 = cgroup_v2_host(root)
    if mem_total is None:
        mem_total = host_memory(proc / "meminfo")
    if v2:
        cpu, memory, blkio, pids, pids_limit = read_v2(root / cgroup_rel.strip("/"), mem_total)
    else:
        cpu, memory, blkio, pids, pids_limit = read_v1(root, cgroup_rel, mem_total)
    cpu.system, cpu.online_cpus = parse_proc_stat(_read(proc / "stat") or "")
    networks = parse_net_dev(_read(proc / str(pid) / "net" / "dev")) if pid > 0 else None
    return Sample(read=time.time(), cpu=cpu, memory=memory, blkio=blkio, pids_current=pids,
                  pids_limit=pids_limit, networks=networks)


class StatsCollector:
    """Samples containers and keeps the last one of each, so `stream=false` can answer with
    a real earlier sample (precpu) instead of always waiting a second."""

    # A kept sample serves as precpu when it is at least MIN_SPAN old (shorter spans make
    # the CPU percentage coarse: /proc/stat counts in ticks) and at most MAX_AGE old.
    MIN_SPAN = 0.5
    MAX_AGE = 2.0

    def __init__(self) -> None:
        self._last: dict[str, Sample] = {}

    def sample(self, cid: str, cgroup_rel: str, net_pid: int) -> Sample:
        """net_pid: a process in the container's network namespace (0: no networks)."""
        s = read_sample(cgroup_rel, net_pid)
        self._last[cid] = s
        return s

    def previous(self, cid: str, now: float) -> Sample | None:
        """The kept sample if it is fit to be precpu now, else None."""
        s = self._last.get(cid)
        if s is None:
            return None
        age = now - s.read
        return s if self.MIN_SPAN <= age <= self.MAX_AGE else None

    def wait_needed(self, cid: str, now: float) -> float:
        """How long to wait before a sample taken now would pair with the kept one."""
        s = self._last.get(cid)
        if s is None or now - s.read > self.MAX_AGE:
            return -1.0
        return max(0.0, self.MIN_SPAN - (now - s.read))

    def last(self, cid: str) -> Sample | None:
        return self._last.get(cid)

    def prune(self, keep: Collection[str]) -> None:
        """Forget the containers that are gone."""
        for cid in [k for k in self._last if k not in keep]:
            del self._last[cid]
