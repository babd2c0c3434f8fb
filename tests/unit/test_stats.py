"""Stats readers on files recorded from cgroup v1 (this host) and a v2 layout, and the JSON."""

from pathlib import Path

from stowd.api.routes.inspection import stats_json
from stowd.engine.core.container import Container
from stowd.engine.stats import (
    CLK_TCK,
    V1_MEMORY_KEYS,
    V2_MEMORY_KEYS,
    StatsCollector,
    parse_blkio_v1,
    parse_net_dev,
    parse_proc_stat,
    read_sample,
)

FIXTURES = Path(__file__).parent / "fixtures"
PROC = FIXTURES / "proc"
MEM_TOTAL = 25276502016


def _container() -> Container:
    return Container(id="c" * 64, name="probe", created="", image_id="sha256:x", config={},
                     host_config={}, path="sh", args=[])


def test_proc_stat_is_dockerds_system_usage() -> None:
    system, cpus = parse_proc_stat((PROC / "stat").read_text())
    assert cpus == 2
    # user nice system idle iowait irq softirq, in ticks → ns
    assert system == (66770 + 0 + 54370 + 496174 + 2495 + 0 + 693) * 1_000_000_000 // CLK_TCK


def test_net_dev_leaves_loopback_out() -> None:
    nets = parse_net_dev((PROC / "4242" / "net" / "dev").read_text())
    assert list(nets) == ["eth0"]
    eth0 = nets["eth0"]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.tx_bytes, eth0.tx_packets) == (4376, 54, 796, 10)
    assert eth0.rx_errors == eth0.rx_dropped == eth0.tx_errors == eth0.tx_dropped == 0


def test_v1_sample() -> None:
    s = read_sample("/stowd/ctr", 4242, root=FIXTURES / "cgroup_v1", proc=PROC, v2=False)
    assert s.cpu.total == 618474336
    assert s.cpu.percpu == [590306153, 28168183]
    assert s.cpu.user == 39 * 1_000_000_000 // CLK_TCK
    assert s.cpu.kernel == 21 * 1_000_000_000 // CLK_TCK
    assert s.cpu.online_cpus == 2
    assert s.memory.usage == 105775104
    assert s.memory.max_usage > 100 * 2**20
    assert s.memory.limit == MEM_TOTAL  # unlimited: capped to the host's memory
    assert list(s.memory.stats) == list(V1_MEMORY_KEYS)
    assert s.memory.stats["total_rss"] > 100 * 2**20
    assert s.pids_current == 3 and s.pids_limit == 0
    assert [(e.op, e.value) for e in s.blkio["io_service_bytes_recursive"] or []][:2] == [
        ("Read", 4096), ("Write", 10485760)]
    assert s.blkio["io_queue_recursive"] == []
    assert s.networks is not None and s.networks["eth0"].rx_bytes == 4376


def test_v2_sample() -> None:
    s = read_sample("/stowd/ctr", 4242, root=FIXTURES / "cgroup_v2", proc=PROC, v2=True)
    assert s.cpu.total == 2503541000
    assert s.cpu.percpu is None
    assert (s.cpu.user, s.cpu.kernel) == (2003541000, 500000000)
    assert (s.cpu.periods, s.cpu.throttled_periods, s.cpu.throttled_time) == (120, 7, 351000000)
    assert s.memory.usage == 105906176
    assert s.memory.max_usage == 0
    assert s.memory.limit == MEM_TOTAL  # "max"
    assert s.memory.failcnt == 2  # memory.events oom
    assert list(s.memory.stats) == list(V2_MEMORY_KEYS)
    assert s.memory.stats["anon"] == 104935424
    assert s.memory.stats["inactive_file"] == 724992
    assert s.memory.stats["workingset_refault"] == 0  # a key this kernel renamed reads 0
    assert [(e.major, e.minor, e.op, e.value) for e in s.blkio["io_service_bytes_recursive"]
            or []] == [(254, 0, "read", 4096), (254, 0, "write", 10485760),
                       (7, 1, "read", 8192), (7, 1, "write", 0)]
    assert s.blkio["io_serviced_recursive"] is None
    assert s.pids_current == 3 and s.pids_limit == 0


def test_v2_memory_limit(tmp_path: Path) -> None:
    ctr = tmp_path / "stowd" / "ctr"
    ctr.mkdir(parents=True)
    for f in (FIXTURES / "cgroup_v2" / "stowd" / "ctr").iterdir():
        (ctr / f.name).write_text(f.read_text())
    (ctr / "memory.max").write_text("314572800\n")
    (ctr / "pids.max").write_text("100\n")
    s = read_sample("/stowd/ctr", 0, root=tmp_path, proc=PROC, v2=True)
    assert s.memory.limit == 300 * 2**20
    assert s.pids_limit == 100
    assert s.networks is None


def test_cfq_blkio_lines() -> None:
    text = "8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n8:0 Async 0\n8:0 Total 30\nTotal 30\n"
    assert [(e.op, e.value) for e in parse_blkio_v1(text)] == [
        ("Read", 10), ("Write", 20), ("Sync", 30), ("Async", 0), ("Total", 30)]
    assert [(e.op, e.value) for e in parse_blkio_v1("8:0 4096\n")] == [("", 4096)]


def test_cli_formulas_on_two_samples() -> None:
    """The docker CLI's CPU % and memory from our JSON: the figures `docker stats` shows."""
    first = read_sample("/stowd/ctr", 4242, root=FIXTURES / "cgroup_v1", proc=PROC, v2=False)
    second = read_sample("/stowd/ctr", 4242, root=FIXTURES / "cgroup_v1", proc=PROC, v2=False)
    # one busy core for one second on a 2-CPU host
    second.cpu.total = first.cpu.total + 1_000_000_000
    second.cpu.system = first.cpu.system + 2_000_000_000
    body = stats_json(_container(), second, first)
    cpu, pre = body["cpu_stats"], body["precpu_stats"]
    delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    sys_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    assert delta / sys_delta * cpu["online_cpus"] * 100 == 100.0
    mem = body["memory_stats"]
    used = mem["usage"] - mem["stats"]["total_inactive_file"]
    assert 100 <= used / 2**20 <= 102
    assert body["name"] == "/probe" and body["id"] == "c" * 64
    assert body["networks"]["eth0"]["rx_packets"] == 54
    assert body["pids_stats"] == {"current": 3}


def test_empty_sample_is_dockerds() -> None:
    body = stats_json(_container(), None, None)
    assert body["read"] == body["preread"] == "0001-01-01T00:00:00Z"
    assert body["pids_stats"] == {} and body["memory_stats"] == {}
    assert body["blkio_stats"]["io_service_bytes_recursive"] is None
    assert body["cpu_stats"] == {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                                               "usage_in_usermode": 0},
                                 "throttling_data": {"periods": 0, "throttled_periods": 0,
                                                     "throttled_time": 0}}
    assert "networks" not in body


def test_one_shot_has_an_empty_precpu() -> None:
    s = read_sample("/stowd/ctr", 4242, root=FIXTURES / "cgroup_v1", proc=PROC, v2=False)
    body = stats_json(_container(), s, None)
    assert body["preread"] == "0001-01-01T00:00:00Z"
    assert body["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert "system_cpu_usage" not in body["precpu_stats"]


def test_collector_keeps_a_fit_previous_sample() -> None:
    collector = StatsCollector()
    s = read_sample("/stowd/ctr", 4242, root=FIXTURES / "cgroup_v1", proc=PROC, v2=False)
    collector._last["a"] = s
    assert collector.previous("a", s.read + 0.1) is None  # too close: CPU % would be coarse
    assert abs(collector.wait_needed("a", s.read + 0.1)
               - (StatsCollector.MIN_SPAN - 0.1)) < 1e-6
    assert collector.previous("a", s.read + 1.0) is s
    assert collector.previous("a", s.read + 5.0) is None  # stale
    assert collector.wait_needed("a", s.read + 5.0) < 0
    collector.prune({"b"})
    assert collector.last("a") is None
