"""A container's task (blocking work, run in threads): mount the rootfs, write the OCI
bundle, have conmon create the task; and take all of it down again."""

import contextlib
import json
import os
from pathlib import Path

from stowd.engine import options, rootfs
from stowd.engine.containers import links
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import Container
from stowd.engine.errors import Conflict, InvalidParameter, NotImplementedByEngine
from stowd.engine.images.store import Image
from stowd.engine.logs import parse_log_options
from stowd.engine.runtime import devices as rt_devices
from stowd.engine.runtime import mounts
from stowd.engine.runtime.oci import RuntimeError_
from stowd.engine.runtime.spec import (
    DEFAULT_PATH,
    SpecInput,
    build_spec,
    resources_from_host_config,
)


def create_task(x: Ctx, c: Container, image: Image) -> tuple[int, int]:
    """Blocking: mount the rootfs, write the bundle, and have conmon create the task."""
    d = x.core.dir(c)
    target = str(d.rootfs)
    lowers = [str(d.init), *x.images.layer_dirs(image)]
    mounts.mount_overlay(lowers, str(d.upper), str(d.work), target)
    try:
        x.volumes.mount_for(c, d.rootfs)  # volumes: mounts, copy-up
        spec = build_spec(spec_input(x, c, d.rootfs))
        tmp = d.config.with_name(d.config.name + ".tmp")
        tmp.write_text(json.dumps(spec))
        os.replace(tmp, d.config)
        if x.runtime.has_task(c.id):  # left over from a crash
            x.runtime.delete(c.id, force=True)
        max_size, max_files = parse_log_options(c.host_config.get("LogConfig"))
        return x.runtime.create(
            c.id, c.name, d.bundle, conmon_log_path(x, c),
            tty=bool(c.config.get("Tty")), open_stdin=bool(c.config.get("OpenStdin")),
            stdin_once=bool(c.config.get("StdinOnce")),
            # One file: conmon truncates at the limit itself. Several: stowd rotates.
            log_size_max=max_size if max_files == 1 else 0,
        )
    except BaseException:
        mounts.unmount(target)
        raise


def cgroup_path(x: Ctx, c: Container) -> str:
    parent = c.host_config.get("CgroupParent") or x.core.settings.cgroup_parent
    return f"/{parent.strip('/')}/{c.id}"


def spec_input(x: Ctx, c: Container, root: Path) -> SpecInput:
    cfg, hc = c.config, c.host_config
    user = rootfs.resolve_user(root, cfg.get("User") or "", hc.get("GroupAdd"))
    env = list(cfg.get("Env") or [])
    keys = {e.split("=", 1)[0] for e in env}
    if "PATH" not in keys:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOSTNAME" not in keys:
        env.insert(1, f"HOSTNAME={cfg.get('Hostname') or c.short_id}")
    if cfg.get("Tty") and "TERM" not in keys:
        env.append("TERM=xterm")
    if "HOME" not in keys:
        env.append("HOME=" + home_of(root, user.uid))
    env += [e for e in links.env(x, c) if e.split("=", 1)[0] not in keys]  # legacy links
    d = x.core.dir(c)
    binds, tmpfs = x.volumes.spec_mounts(c)
    size = hc.get("ConsoleSize") or [0, 0]
    sec = options.parse_security_opt(hc.get("SecurityOpt"))
    namespaces, shm = namespace_modes(x, c)
    devices, device_rules = rt_devices.user_devices(options.check_devices(hc.get("Devices")))
    device_rules += [options.parse_device_rule(r) for r in hc.get("DeviceCgroupRules") or []]
    if hc.get("Privileged"):
        devices = rt_devices.host_devices()
        device_rules = [rt_devices.ALLOW_ALL]
    resources = resources_from_host_config(hc)
    blkio = rt_devices.blkio_devices(hc)
    if blkio:
        resources["blockIO"] = {**resources.get("blockIO", {}), **blkio}
    return SpecInput(
        rootfs=str(root),
        args=[c.path, *c.args],
        env=env,
        cwd=cfg.get("WorkingDir") or "/",
        user=user,
        hostname=cfg.get("Hostname") or c.short_id,
        domainname=cfg.get("Domainname") or "",
        tty=bool(cfg.get("Tty")),
        open_stdin=bool(cfg.get("OpenStdin")),
        cgroups_path=cgroup_path(x, c),
        netns_path=x.network.netns_path(c),
        hosts_path=str(d.etc_file("hosts")),
        hostname_path=str(d.etc_file("hostname")),
        resolv_conf_path=str(d.etc_file("resolv.conf")),
        console_size=(size[0], size[1]) if size[0] and size[1] else None,
        privileged=bool(hc.get("Privileged")),
        cap_add=hc.get("CapAdd") or [],
        cap_drop=hc.get("CapDrop") or [],
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        resources=resources,
        binds=binds,
        tmpfs=tmpfs,
        shm_size=hc.get("ShmSize") or 64 * 1024 * 1024,
        labels=cfg.get("Labels") or {},
        annotations=hc.get("Annotations") or {},
        namespaces=namespaces,
        shm=shm,
        no_new_privileges=sec.no_new_privileges,
        seccomp=sec.seccomp,
        apparmor="" if sec.apparmor == "unconfined" else sec.apparmor,
        systempaths_unconfined=sec.systempaths_unconfined,
        masked_paths=hc.get("MaskedPaths"),
        readonly_paths=hc.get("ReadonlyPaths"),
        rlimits=options.rlimits(hc.get("Ulimits") or [], x.core.settings.default_ulimits),
        oom_score_adj=hc.get("OomScoreAdj") or 0,
        init_path=x.core.settings.init_path if hc.get("Init") else "",
        devices=devices,
        device_rules=device_rules,
        sysctls=hc.get("Sysctls") or {},
    )


def namespace_modes(x: Ctx, c: Container) -> tuple[dict[str, str], str]:
    """PidMode, IpcMode, UTSMode and CgroupnsMode → SpecInput.namespaces and its /dev/shm.

    Blocking (a shareable container's /dev/shm is mounted on the host)."""
    hc = c.host_config
    modes: dict[str, str] = {}
    pid_mode = hc.get("PidMode") or ""
    if pid_mode == "host":
        modes["pid"] = "host"
    elif ref := options.joined_container(pid_mode):
        modes["pid"] = f"/proc/{running_donor(x, ref, 'PID').state.pid}/ns/pid"
    ipc_mode = hc.get("IpcMode") or "private"
    shm = "none" if ipc_mode == "none" else "private"
    if ipc_mode == "shareable":
        shm = str(x.core.dir(c).shm)
        mounts.mount_shm(shm, hc.get("ShmSize") or 64 * 1024 * 1024)
    elif ipc_mode == "host":
        modes["ipc"], shm = "host", "/dev/shm"
    elif ref := options.joined_container(ipc_mode):
        donor = running_donor(x, ref, "IPC")
        if donor.host_config.get("IpcMode") not in ("shareable", "host"):
            raise InvalidParameter(f"can't join IPC of container {donor.id}: non-shareable "
                                   "IPC (hint: use IpcMode:shareable for the donor "
                                   "container)")
        modes["ipc"] = f"/proc/{donor.state.pid}/ns/ipc"
        shm = ("/dev/shm" if donor.host_config.get("IpcMode") == "host"
               else str(x.core.dir(donor).shm))
    if hc.get("UTSMode") == "host":
        modes["uts"] = "host"
    if hc.get("CgroupnsMode") == "host":
        modes["cgroup"] = "host"
    return modes, shm


def running_donor(x: Ctx, ref: str, what: str) -> Container:
    donor = x.core.handles.get(ref)
    if not donor.state.live or not donor.state.pid:
        raise Conflict(f"cannot join {what} of a non running container: {ref}")
    return donor


def teardown_task(x: Ctx, c: Container, exited: bool = False) -> None:
    """Blocking: remove the runtime's task, conmon's files and the rootfs mount."""
    with contextlib.suppress(RuntimeError_):
        if exited:
            x.runtime.delete_stopped(c.id)
        elif x.runtime.has_task(c.id):
            x.runtime.delete(c.id, force=True)
    x.runtime.cleanup_files(c.id)
    mounts.unmount(str(x.core.dir(c).rootfs))
    mounts.unmount(str(x.core.dir(c).shm))  # a shareable IPC's /dev/shm
    x.network.release(c)  # networking: idempotent
    x.volumes.unmount_for(c)  # volumes: idempotent


def log_path(x: Ctx, c: Container) -> Path:
    """The log to read for `logs` and attach replays; the "none" driver keeps none."""
    if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
        raise NotImplementedByEngine("configured logging driver does not support reading")
    return x.core.dir(c).log


def conmon_log_path(x: Ctx, c: Container) -> Path:
    if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
        return Path("/dev/null")
    return x.core.dir(c).log


def write_ctl(fifo: Path, line: str) -> None:
    """Send a command to conmon's control FIFO (it reads `<kind> <height> <width>` lines)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise Conflict(f"cannot resize: conmon does not answer ({exc.strerror})") from exc
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def home_of(root: Path, uid: int) -> str:
    try:
        with open(root / "etc" / "passwd", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 5 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/root" if uid == 0 else "/"
