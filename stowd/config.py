"""Daemon settings: flags over defaults."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HOST = "unix:///run/stowd.sock"
DEFAULT_DATA_ROOT = Path("/var/lib/stowd")
DEFAULT_EXEC_ROOT = Path("/run/stowd")


@dataclass
class Settings:
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    data_root: Path = DEFAULT_DATA_ROOT
    exec_root: Path = DEFAULT_EXEC_ROOT
    runtime: str = "runc"
    log_level: str = "info"
    tls_verify: bool = False
    tls_ca_cert: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_tcp: bool = False
    cgroup_parent: str = "stowd"
    socket_group: str = "docker"
    stop_timeout: int = 10
    # `--init`: the init run as PID 1 (dockerd's docker-init is tini; Debian's static one)
    init_path: str = "/usr/bin/tini-static"
    # `--default-ulimit`: [{Name, Soft, Hard}], each overridden by a container's own
    default_ulimits: list[dict[str, Any]] = field(default_factory=list)
    # networking: the default bridge's device and subnet ("" = pick a free one at first
    # start), the prefix of stowd's iptables chains, and the pool user networks come from
    bridge: str = "stowd0"
    bridge_subnet: str = ""
    chain_prefix: str = "STOWD"
    default_address_pool: str = "base=10.89.0.0/16,size=24"
    # The largest JSON request body read (413 beyond): far above any real request (a create
    # with a few thousand environment variables is well under 1 MiB), far below memory.
    max_json_body: int = 64 << 20
    # registries: plain HTTP allowed for these (beyond 127.0.0.0/8 and ::1), Docker Hub
    # mirrors, and where per-registry CA and client certificates are looked up
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    registry_certs_dir: Path = Path("/etc/docker/certs.d")
