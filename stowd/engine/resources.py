"""Range checks of HostConfig's resource limits, with dockerd's messages.

dockerd decodes each of these into a Go integer of fixed width and then checks its range
(moby daemon/daemon_unix.go, verifyPlatformContainerResources); a value outside either is a
400 at create or update, never a record that the runtime refuses at start.
"""

from typing import Any

from stowd.engine.errors import InvalidParameter

INT64 = (-(1 << 63), (1 << 63) - 1)
UINT64 = (0, (1 << 64) - 1)
UINT16 = (0, (1 << 16) - 1)
MIN_MEMORY = 6 * 1024 * 1024

# The integer fields of HostConfig's Resources (and ShmSize, OomScoreAdj) and their Go types.
INT_FIELDS: dict[str, tuple[int, int]] = {
    "Memory": INT64, "MemoryReservation": INT64, "MemorySwap": INT64, "KernelMemory": INT64,
    "KernelMemoryTCP": INT64, "MemorySwappiness": INT64, "NanoCpus": INT64,
    "CpuShares": INT64, "CpuPeriod": INT64, "CpuQuota": INT64, "CpuRealtimePeriod": INT64,
    "CpuRealtimeRuntime": INT64, "CpuCount": INT64, "CpuPercent": INT64, "PidsLimit": INT64,
    "ShmSize": INT64, "OomScoreAdj": INT64, "BlkioWeight": UINT16,
    "IOMaximumIOps": UINT64, "IOMaximumBandwidth": UINT64,
}


def _int(hc: dict[str, Any], key: str) -> int:
    value = hc.get(key)
    if value is None:
        return 0
    low, high = INT_FIELDS[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"invalid {key}: {value!r} is not an integer")
    if not low <= value <= high:
        raise InvalidParameter(f"invalid {key}: {value} is out of range ({low} to {high})")
    return value


def check_resources(hc: dict[str, Any], ncpu: int, update: bool = False) -> None:
    """Refuse (InvalidParameter) what dockerd refuses in a HostConfig's resources; `update`
    for `docker update`, where an unset Memory keeps the container's."""
    values = {key: _int(hc, key) for key in INT_FIELDS}
    memory, swap, reservation = (values["Memory"], values["MemorySwap"],
                                 values["MemoryReservation"])
    for key in ("Memory", "MemoryReservation", "NanoCpus", "CpuShares", "ShmSize",
                "KernelMemory", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpuCount",
                "CpuPercent"):
        if values[key] < 0:
            raise InvalidParameter(f"invalid {key}: {values[key]} (must not be negative)")
    if memory and memory < MIN_MEMORY:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if memory > 0 and swap > 0 and swap < memory:
        raise InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage")
    if not memory and swap > 0 and not update:
        raise InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit, see usage")
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1 and not 0 <= swappiness <= 100:
        raise InvalidParameter(
            f"Invalid value: {swappiness}, valid memory swappiness range is 0-100")
    if reservation and reservation < MIN_MEMORY:
        raise InvalidParameter("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > 0 and memory < reservation:
        raise InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage")
    if values["NanoCpus"] > ncpu * 10**9:
        raise InvalidParameter(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                               f"{ncpu} CPUs available")
    if values["NanoCpus"] and values["CpuPeriod"]:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if values["NanoCpus"] and values["CpuQuota"]:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    period = values["CpuPeriod"]
    if period and not 1000 <= period <= 1_000_000:
        raise InvalidParameter("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                               "than 1s (i.e. 1000000)")
    if 0 < values["CpuQuota"] < 1000:
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    weight = values["BlkioWeight"]
    if weight and not 10 <= weight <= 1000:
        raise InvalidParameter("Range of blkio weight is from 10 to 1000")
    adj = values["OomScoreAdj"]
    if not -1000 <= adj <= 1000:
        raise InvalidParameter(
            f"Invalid value {adj}, range for oom score adj is [-1000, 1000]")
