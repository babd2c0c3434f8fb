"""A container's filesystem: the init layer, /etc files, and user lookup (blocking helpers)."""

import os
import socket
from pathlib import Path

from stowd.engine.errors import InvalidParameter
from stowd.engine.runtime.spec import ProcessUser

# What Docker's init layer holds, so that bind-mount targets never show up in `docker diff`.
_INIT_DIRS = ["dev", "dev/pts", "dev/shm", "proc", "sys", "etc"]
_INIT_FILES = [".dockerenv", "etc/resolv.conf", "etc/hosts", "etc/hostname", "dev/console"]


def make_init_layer(init_dir: Path) -> None:
    for d in _INIT_DIRS:
        (init_dir / d).mkdir(parents=True, exist_ok=True)
    for f in _INIT_FILES:
        (init_dir / f).touch()
    mtab = init_dir / "etc" / "mtab"
    if not os.path.lexists(mtab):
        os.symlink("/proc/mounts", mtab)


def hosts_file(hostname: str, ip: str | None = None, extra: list[str] | None = None) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    for entry in extra or []:
        host, _, addr = entry.partition(":")
        lines.append(f"{addr}\t{host}")
    if ip:
        lines.append(f"{ip}\t{hostname}")
    return "\n".join(lines) + "\n"


def resolv_conf(dns: list[str] | None = None, search: list[str] | None = None,
                options: list[str] | None = None, host_file: str = "/etc/resolv.conf") -> str:
    """The host's resolv.conf without loopback servers (they would not answer inside)."""
    servers: list[str] = []
    host_search: list[str] = []
    host_options: list[str] = []
    try:
        with open(host_file, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "nameserver" and len(parts) > 1:
                    if not parts[1].startswith("127.") and parts[1] != "::1":
                        servers.append(parts[1])
                elif parts[0] == "search":
                    host_search = parts[1:]
                elif parts[0] == "options":
                    host_options = parts[1:]
    except OSError:
        pass
    out = []
    for server in dns or servers:
        out.append(f"nameserver {server}")
    if search or host_search:
        out.append("search " + " ".join(search or host_search))
    if options or host_options:
        out.append("options " + " ".join(options or host_options))
    return "\n".join(out) + "\n"


def host_hostname() -> str:
    return socket.gethostname()


def _read_db(path: Path) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip()
                    and not line.startswith("#")]
    except OSError:
        return []


def _safe_join(rootfs: Path, rel: str) -> Path:
    """rootfs/rel without following symlinks out of rootfs (it is an untrusted tree)."""
    current = rootfs
    for part in Path(rel).parts:
        if part in ("/", ".", ".."):
            continue
        current = current / part
        if current.is_symlink():
            target = os.readlink(current)
            current = _safe_join(rootfs, target) if target.startswith("/") else \
                _safe_join(rootfs, str((current.parent / target).relative_to(rootfs)))
    return current


def resolve_user(rootfs: Path, user: str, group_add: list[str] | None = None) -> ProcessUser:
    """Docker's `User` (name, uid, name:group, uid:gid) against the container's own files."""
    passwd = _read_db(_safe_join(rootfs, "etc/passwd"))
    groups = _read_db(_safe_join(rootfs, "etc/group"))
    name, _, group = (user or "").partition(":")
    uid, gid = 0, 0
    username = "root"
    if name:
        if name.isdigit():
            uid = int(name)
            entry = next((p for p in passwd if len(p) > 3 and p[2] == name), None)
            if entry:
                gid = int(entry[3]) if entry[3].isdigit() else 0
                username = entry[0]
            else:
                username = ""
        else:
            entry = next((p for p in passwd if p[0] == name and len(p) > 3), None)
            if entry is None:
                raise InvalidParameter(
                    f"unable to find user {name}: no matching entries in passwd file"
                )
            uid = int(entry[2])
            gid = int(entry[3])
            username = name
    else:
        entry = next((p for p in passwd if len(p) > 3 and p[2] == "0"), None)
        if entry and entry[3].isdigit():
            gid = int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in groups if g[0] == group and len(g) > 2), None)
            if g is None:
                raise InvalidParameter(
                    f"unable to find group {group}: no matching entries in group file"
                )
            gid = int(g[2])
    # dockerd's processes always hold their primary group among the supplementary ones too
    # (`-u 1000` shows `Groups: 0`, `-u 1:2 --group-add 5` shows `Groups: 2 5`).
    additional: list[int] = [gid]
    if username:
        for g in groups:
            if len(g) > 3 and username in g[3].split(",") and g[2].isdigit():
                if int(g[2]) != gid:
                    additional.append(int(g[2]))
    for extra in group_add or []:
        if extra.isdigit():
            additional.append(int(extra))
        else:
            g = next((g for g in groups if g[0] == extra and len(g) > 2), None)
            if g is None:
                raise InvalidParameter(f"Unable to find group {extra}: no matching entries in "
                                       "group file")
            additional.append(int(g[2]))
    return ProcessUser(uid, gid, additional)
