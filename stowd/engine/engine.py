"""The engine facade the API calls: containers and images, their rules and state machine.

Every state change is committed to SQLite before the method returns. Work that blocks
(runtime calls, mounts, file writes) runs in worker threads; the event loop only decides.
"""

import asyncio
import collections
import contextlib
import errno
import functools
import json
import logging
import os
import shutil
import signal
import socket
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from stowd.config import Settings
from stowd.engine import archive_path, cpview, diskusage, hostinfo, names, options, rootfs
from stowd.engine import create as create_rules
from stowd.engine import exec as execs
from stowd.engine import export as exporting
from stowd.engine import top as ps_top
from stowd.engine.attach import AttachSession, parse_detach_keys
from stowd.engine.build import cache as build_cache
from stowd.engine.build.builder import BuildOptions, Emit
from stowd.engine.build.host import EngineHost
from stowd.engine.build.service import run_build
from stowd.engine.changes import Change, collect_changes
from stowd.engine.containers import (
    CREATED,
    DEAD,
    EXITED,
    PAUSED,
    REMOVING,
    RESTARTING,
    RUNNING,
    Container,
    parse_time,
    rfc3339_nano,
)
from stowd.engine.distribution.service import Distribution
from stowd.engine.distribution.transport import RegistrySettings
from stowd.engine.errors import (
    Conflict,
    EngineError,
    Forbidden,
    InvalidParameter,
    NotFound,
    NotImplementedByEngine,
    NotModified,
    SystemError_,
)
from stowd.engine.events import EventBus
from stowd.engine.faults import fault_point
from stowd.engine.images import archive, commit, delete, load, reference, save
from stowd.engine.images import listing as images_listing
from stowd.engine.images.pipe import ThreadPipe
from stowd.engine.images.store import Image, ImageStore
from stowd.engine.labels import labels_match
from stowd.engine.logs import parse_log_options, rotate
from stowd.engine.logwatch import LogRotator, Rotation
from stowd.engine.network.manager import NetworkManager
from stowd.engine.private import make_private, private_container_dir
from stowd.engine.resources import check_resources
from stowd.engine.restart import RestartManager, should_restart
from stowd.engine.runtime import devices as rt_devices
from stowd.engine.runtime import mounts, seccomp
from stowd.engine.runtime.oci import OciRuntime, RuntimeError_, kill_and_wait, process_alive
from stowd.engine.runtime.spec import (
    DEFAULT_PATH,
    SpecInput,
    build_spec,
    host_capabilities,
    resources_from_host_config,
)
from stowd.engine.signals import parse_signal
from stowd.engine.stats import Sample, StatsCollector
from stowd.engine.store import NameTaken, Store, name_conflict
from stowd.engine.volumes import Volume, VolumeManager

log = logging.getLogger("stowd.engine")
T = TypeVar("T")

KILL_WAIT = 10.0
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


class ExitStatus:
    """What a waiter learns: the exit code and, for a failed start, the error."""

    def __init__(self, code: int, error: str = "") -> None:
        self.code = code
        self.error = error


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_root = settings.data_root
        self.exec_root = settings.exec_root
        self.events = EventBus()
        self._containers: dict[str, Container] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._exit_waiters: dict[str, list[asyncio.Future[ExitStatus]]] = {}
        self._removal_waiters: dict[str, list[asyncio.Future[ExitStatus]]] = {}
        self._pidfds: dict[str, int] = {}
        self._attachers: dict[str, set[AttachSession]] = {}
        self._parked: dict[str, set[AttachSession]] = {}
        self._execs: dict[str, execs.ExecInstance] = {}
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stowd-db")
        self._tasks: set[asyncio.Task[Any]] = set()
        self.restarts = RestartManager(self)
        self.network = NetworkManager(self)
        self.volumes = VolumeManager(self)
        self.store: Store
        self.images: ImageStore
        self.distribution: Distribution
        self.runtime: OciRuntime
        self.host_security: hostinfo.SecurityFacts

    # start-up and shut-down -------------------------------------------------------------

    async def open(self) -> None:
        await asyncio.to_thread(self._open_blocking)
        await self.volumes.open()  # volumes: before recovery, which may release mounts
        await self.network.open()  # networking: networks, address leases of running containers
        for container in list(self._containers.values()):
            await self._recover(container)
        await self.network.sweep()  # networking: undo what no running container owns
        self.restarts.revive_at_daemon_start(list(self._containers.values()))
        self._spawn(self._rotate_logs_forever())

    async def _rotate_logs_forever(self) -> None:
        """Rotate the logs of running containers with max-file > 1 once they reach max-size.

        conmon writes the log; stowd renames it and asks conmon (its ctl FIFO, message 2)
        to reopen the path, so nothing is lost or copied. inotify says when a log was
        written (logwatch.LogRotator); start and die events say which logs to watch."""
        events = self.events.subscribe()
        rotator = LogRotator(_rotate_due)
        self._spawn(rotator.run())
        for c in list(self._containers.values()):
            if c.state.status in (RUNNING, PAUSED):
                await self._watch_log(rotator, c)
        while True:
            event = await events.get()
            if event.type != "container":
                continue
            if event.action == "start" and (c := self._containers.get(event.actor_id)):
                await self._watch_log(rotator, c)
            elif event.action in ("die", "destroy"):
                rotator.unwatch(event.actor_id)

    async def _watch_log(self, rotator: LogRotator, c: Container) -> None:
        max_size, max_files = parse_log_options(c.host_config.get("LogConfig"))
        if max_files > 1:
            try:
                await rotator.watch(Rotation(c.id, self.log_path(c),
                                             self.container_dir(c) / "bundle" / "ctl",
                                             max_size, max_files))
            except OSError as exc:  # removed meanwhile
                log.warning("cannot watch the log of %s: %s", c.short_id, exc)

    def _open_blocking(self) -> None:
        for d in (self.data_root, self.exec_root, self.data_root / "containers"):
            d.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_root / "stowd.db")
        make_private(self.data_root, self.exec_root)  # new roots, and old ones migrated
        self.images = ImageStore(self.store, self.data_root)
        self.distribution = Distribution(
            self.images, RegistrySettings(self.settings.insecure_registries,
                                          self.settings.registry_mirrors,
                                          self.settings.registry_certs_dir),
            self.data_root, self.events.publish)
        self.runtime = OciRuntime(self.settings.runtime, self.exec_root)
        self.host_security = hostinfo.security_facts(self.settings.init_path)
        for trash in (self.data_root / "containers").glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
        for record in self.store.all_containers():
            container = Container.from_record(record)
            self._containers[container.id] = container
        if stale := self.runtime.remove_stale(set(self._containers)):
            log.info("removed the exec-root files of %d unknown containers", len(stale))
        # A crash inside create leaves a directory the database never knew.
        for base in (self.data_root / "containers").iterdir():
            if (not base.name.startswith(".") and base.name not in self._containers
                    and not mounts.is_mounted(str(base / "rootfs"))):
                log.info("removing the directory of unknown container %s", base.name[:12])
                shutil.rmtree(base, ignore_errors=True)

    async def close(self) -> None:
        """Stop watching; containers keep running (conmon is their parent, not stowd)."""
        loop = asyncio.get_running_loop()
        self.restarts.cancel_all()
        for cid, fd in list(self._pidfds.items()):
            loop.remove_reader(fd)
            os.close(fd)
            self._pidfds.pop(cid, None)
        for task in list(self._tasks):
            task.cancel()
        if hasattr(self, "distribution"):
            await self.distribution.close()
        if hasattr(self, "store"):
            await self.network.close()
            # After every queued write has committed.
            await self.db(self.store.close)
        self._db_thread.shutdown(wait=False)  # idle by now: the close above was its last job

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _recover(self, c: Container) -> None:
        """Reconcile one container with what conmon and the runtime say after a restart."""
        status = c.state.status
        if status in (RUNNING, PAUSED):
            alive = await asyncio.to_thread(process_alive, c.state.conmon_pid, c.id)
            if alive and self._watch(c):
                await self.network.reattach(c)  # networking: hold its ports, serve its DNS
                return
            await self._handle_exit(c.id, c.state.conmon_pid)
        elif status == RESTARTING:
            c.state.status = EXITED
            await self._persist(c)
            self.restarts.after_exit(c, daemon_start=True)
        elif status == REMOVING:
            await self._finish_remove(c)
        elif await asyncio.to_thread(self._holds_task, c):
            # The daemon died inside start, before the container was recorded running: the
            # start was never answered, so it is rolled back (docs/design.md, Recovery).
            log.warning("%s: rolling back a start the daemon did not finish", c.short_id)
            await asyncio.to_thread(self._roll_back_start, c)
            c.state.pid = 0
            c.state.conmon_pid = 0
            await self._persist(c)

    def _holds_task(self, c: Container) -> bool:
        """Blocking: whether the host holds anything of a start (a task, conmon, the rootfs
        mount, a network namespace) for a container not recorded as running."""
        return (self.runtime.has_task(c.id) or bool(c.network.get("sandbox"))
                or self.runtime.conmon_of(c.id) > 0
                or mounts.is_mounted(str(self.container_dir(c) / "rootfs")))

    def _roll_back_start(self, c: Container) -> None:
        """Blocking: undo an unfinished start: the task (even if its process runs), conmon,
        mounts, network; then the container is as its record says."""
        conmon = self.runtime.conmon_of(c.id)
        self._teardown_task(c)  # `runtime delete --force` kills the task's processes
        if conmon > 0:
            kill_and_wait(conmon)

    # lookup -----------------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """By full ID, name (with or without /), or unique ID prefix, as Docker resolves."""
        if not ref:
            raise InvalidParameter('invalid name or ID supplied: ""')
        if ref in self._containers:
            return self._containers[ref]
        name = ref.lstrip("/")
        for c in self._containers.values():
            if c.name == name:
                return c
        matches = [c for c in self._containers.values() if c.id.startswith(ref)]
        if len(matches) > 1:
            raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        if not matches:
            raise NotFound(f"No such container: {ref}")
        return matches[0]

    def containers(self) -> list[Container]:
        return sorted(self._containers.values(), key=lambda c: c.created, reverse=True)

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def db(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """Run a store call on the database thread.

        One thread, so writes commit in the order they were asked for (a container's
        state never goes back), and SQLite never blocks the event loop."""
        return asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    def _persist(self, c: Container) -> "asyncio.Future[None]":
        """Commit the container's record as it is now; await it before answering."""
        future = self.db(self.store.update_container, c.id, c.to_record())
        future.add_done_callback(_log_db_failure)
        return future

    def container_dir(self, c: Container | str) -> Path:
        cid = c if isinstance(c, str) else c.id
        return self.data_root / "containers" / cid

    def log_path(self, c: Container) -> Path:
        return self.container_dir(c) / "ctr.log"

    def readable_log_path(self, c: Container) -> Path:
        """The log to read for `logs` and attach replays; the "none" driver keeps none."""
        if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
            raise NotImplementedByEngine("configured logging driver does not support reading")
        return self.log_path(c)

    def _conmon_log_path(self, c: Container) -> Path:
        if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
            return Path("/dev/null")
        return self.log_path(c)

    def _event(self, c: Container, action: str, **extra: str) -> None:
        attrs = dict(c.config.get("Labels") or {})
        attrs["image"] = c.config.get("Image") or c.image_id
        attrs["name"] = c.name
        attrs.update(extra)
        self.events.publish("container", action, c.id, attrs)

    # create -----------------------------------------------------------------------------

    async def create_container(
        self, name: str | None, body: dict[str, Any]
    ) -> tuple[str, list[str]]:
        if not isinstance(body, dict):
            raise InvalidParameter("the request body must be a JSON object")
        config = create_rules.normalize_config(body)
        host_config = create_rules.normalize_host_config(body.get("HostConfig"),
                                                         self.runtime.name)
        warnings = options.check_run_options(host_config, config, (self.runtime.name,),
                                             self.host_security.cgroup_v2)
        self._check_run_options_here(host_config)
        image_name = config.get("Image") or ""
        if not image_name:
            raise InvalidParameter("No image was specified")
        if name:
            name = names.validate_name(name)
        image = await asyncio.to_thread(self.images.resolve, image_name)
        merged = create_rules.merge_image_defaults(config, image.container_config)
        if merged.get("NetworkDisabled"):
            host_config["NetworkMode"] = "none"  # as dockerd: no network at all but lo
        networking = self.network.prepare(merged, host_config, body.get("NetworkingConfig"))
        path, args = create_rules.entrypoint_and_args(merged)
        volume_mounts = await self.volumes.prepare(merged, host_config)  # volumes: resolved
        cid = names.new_id()
        if host_config.get("UTSMode") == "host":
            merged["Hostname"] = socket.gethostname()  # the name it will see (uname)
        if not merged.get("Hostname"):
            merged["Hostname"] = cid[:12]
        merged["Image"] = image_name
        c = Container(
            id=cid,
            name=name or "",
            created=rfc3339_nano(),
            image_id=image.id,
            config=create_rules.full_config(merged),
            host_config=host_config,
            path=path,
            args=args,
            networking_config=networking,
            mounts=volume_mounts,
        )
        await asyncio.to_thread(self._prepare_dirs, c, image)
        await fault_point("create:dirs-made")
        try:
            await self._reserve(c, explicit_name=bool(name))
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, self.container_dir(c), True)
            await self.volumes.container_removed(c, remove_anonymous=True)
            raise
        self._containers[cid] = c
        self._event(c, "create")
        await fault_point("create:recorded")
        return cid, warnings

    def _check_run_options_here(self, hc: dict[str, Any]) -> None:
        """The create rules that depend on this host and daemon, not on the request alone."""
        for key in ("PidMode", "IpcMode"):
            ref = options.joined_container(hc.get(key) or "")
            if ref:
                try:
                    self.get(ref)
                except NotFound as exc:
                    # 400 as dockerd: a 404 from create would make the CLI pull the image.
                    raise InvalidParameter(exc.message) from None
        sec = options.parse_security_opt(hc.get("SecurityOpt"))
        if sec.apparmor and sec.apparmor != "unconfined" and not self.host_security.apparmor:
            raise InvalidParameter(f"AppArmor is not enabled on this host: cannot apply the "
                                   f"profile {sec.apparmor!r}")
        if [x for x in sec.labels if x != "disable"]:
            # dockerd ignores them on hosts without SELinux; stowd sets no SELinux labels
            # anywhere, so it says so rather than accept them.
            raise InvalidParameter("SELinux label options are not supported (stowd sets no "
                                   "SELinux labels): only label=disable is accepted")
        if sec.seccomp not in ("", "unconfined", "builtin"):
            seccomp.to_oci(seccomp.parse_profile(sec.seccomp), host_capabilities())
        if hc.get("Init") and not self.host_security.init_present:
            raise InvalidParameter(f"the init binary {self.settings.init_path} does not exist: "
                                   "install tini (apt-get install tini) or set --init-path")

    async def _reserve(self, c: Container, explicit_name: bool) -> None:
        for attempt in range(7):
            if not explicit_name:
                c.name = names.random_name(attempt) if attempt < 6 else c.short_id
            try:
                await self.db(self.store.insert_container, c.id, c.name, time.time(),
                              c.to_record())
                return
            except NameTaken as taken:
                if explicit_name:
                    raise name_conflict(taken.name, taken.holder) from None
        raise Conflict("could not find a free name for the container")

    def _prepare_dirs(self, c: Container, image: Image) -> None:
        base = self.container_dir(c)
        for sub in ("upper", "work", "rootfs", "init", "bundle"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        private_container_dir(base)
        rootfs.make_init_layer(base / "init")
        self._write_etc_files(c)

    def _write_etc_files(self, c: Container) -> None:
        base = self.container_dir(c)
        hostname = c.config.get("Hostname") or c.short_id
        (base / "hostname").write_text(hostname + "\n")
        (base / "hosts").write_text(rootfs.hosts_file(hostname, None,
                                                      self.network.extra_hosts(c)))
        (base / "resolv.conf").write_text(rootfs.resolv_conf(
            c.host_config.get("Dns"), c.host_config.get("DnsSearch"),
            c.host_config.get("DnsOptions")))

    # start ------------------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        c = self.get(ref)
        async with self._lock(c.id):
            await self._start_locked(c)

    async def _start_locked(self, c: Container, restarting: bool = False) -> None:
        if c.id not in self._containers:
            raise NotFound(f"No such container: {c.id}")
        st = c.state
        if st.status == PAUSED:
            raise Conflict("cannot start a paused container, try unpause instead")
        if st.status == RUNNING:
            raise NotModified("container already started")
        if st.status in (REMOVING, DEAD):
            raise Conflict("container is marked for removal and cannot be started")
        if not restarting:
            self.restarts.cancel(c.id)
            c.restart_count = 0  # a user's start begins a new count (dockerd)
        image = await asyncio.to_thread(self.images.find, c.image_id)
        if image is None:
            raise NotFound(f"No such image: {c.image_id}")
        try:
            await self.network.attach(c)  # networking: namespace, addresses, ports, DNS
            await fault_point("start:network-attached")
            pid, conmon_pid = await asyncio.to_thread(self._create_task, c, image)
        except (EngineError, OSError) as exc:
            await self._start_failed(c, exc)
            raise
        st.conmon_pid = conmon_pid
        st.pid = pid
        await fault_point("start:task-created")
        self._watch(c)
        await self._connect_attachers(c)
        try:
            await asyncio.to_thread(self.runtime.start, c.id)
        except RuntimeError_ as exc:
            await self._start_failed(c, exc)
            raise
        await fault_point("start:task-started")
        st.status = RUNNING
        st.started_at = rfc3339_nano()
        st.exit_code = 0
        st.error = ""
        st.oom_killed = False
        st.has_been_started = True
        if not restarting:
            st.manually_stopped = False
        await self._persist(c)
        self._event(c, "start")
        await fault_point("start:recorded")

    async def _connect_attachers(self, c: Container) -> None:
        """Connect clients that attached before start, so they see the first byte."""
        bundle = str(self.container_dir(c) / "bundle")
        for session in list(self._attachers.get(c.id, ())):
            if not session.connected.is_set() and not session.closed:
                try:
                    await session.connect(bundle)
                except OSError as exc:
                    log.warning("attach to %s failed: %s", c.short_id, exc)
                    session.end()

    def _create_task(self, c: Container, image: Image) -> tuple[int, int]:
        """Blocking: mount the rootfs, write the bundle, and have conmon create the task."""
        base = self.container_dir(c)
        target = str(base / "rootfs")
        lowers = [str(base / "init")] + self.images.layer_dirs(image)
        mounts.mount_overlay(lowers, str(base / "upper"), str(base / "work"), target)
        try:
            self.volumes.mount_for(c, Path(target))  # volumes: mounts, copy-up
            spec = build_spec(self._spec_input(c, Path(target)))
            bundle = base / "bundle"
            tmp = bundle / "config.json.tmp"
            tmp.write_text(json.dumps(spec))
            os.replace(tmp, bundle / "config.json")
            if self.runtime.has_task(c.id):  # left over from a crash
                self.runtime.delete(c.id, force=True)
            max_size, max_files = parse_log_options(c.host_config.get("LogConfig"))
            return self.runtime.create(
                c.id, c.name, bundle, self._conmon_log_path(c),
                tty=bool(c.config.get("Tty")), open_stdin=bool(c.config.get("OpenStdin")),
                stdin_once=bool(c.config.get("StdinOnce")),
                # One file: conmon truncates at the limit itself. Several: stowd rotates.
                log_size_max=max_size if max_files == 1 else 0,
            )
        except BaseException:
            mounts.unmount(target)
            raise

    def _spec_input(self, c: Container, root: Path) -> SpecInput:
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
            env.append("HOME=" + _home_of(root, user.uid))
        base = self.container_dir(c)
        binds, tmpfs = self.volumes.spec_mounts(c)
        size = hc.get("ConsoleSize") or [0, 0]
        cgroup_parent = hc.get("CgroupParent") or self.settings.cgroup_parent
        sec = options.parse_security_opt(hc.get("SecurityOpt"))
        namespaces, shm = self._namespace_modes(c)
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
            cgroups_path=f"/{cgroup_parent.strip('/')}/{c.id}",
            netns_path=self.network.netns_path(c),
            hosts_path=str(base / "hosts"),
            hostname_path=str(base / "hostname"),
            resolv_conf_path=str(base / "resolv.conf"),
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
            rlimits=options.rlimits(hc.get("Ulimits") or [], self.settings.default_ulimits),
            oom_score_adj=hc.get("OomScoreAdj") or 0,
            init_path=self.settings.init_path if hc.get("Init") else "",
            devices=devices,
            device_rules=device_rules,
            sysctls=hc.get("Sysctls") or {},
        )

    def _namespace_modes(self, c: Container) -> tuple[dict[str, str], str]:
        """PidMode, IpcMode, UTSMode and CgroupnsMode → SpecInput.namespaces and its /dev/shm.

        Blocking (a shareable container's /dev/shm is mounted on the host)."""
        hc = c.host_config
        modes: dict[str, str] = {}
        pid_mode = hc.get("PidMode") or ""
        if pid_mode == "host":
            modes["pid"] = "host"
        elif ref := options.joined_container(pid_mode):
            modes["pid"] = f"/proc/{self._running_donor(ref, 'PID').state.pid}/ns/pid"
        ipc_mode = hc.get("IpcMode") or "private"
        shm = "none" if ipc_mode == "none" else "private"
        if ipc_mode == "shareable":
            shm = str(self.container_dir(c) / "shm")
            mounts.mount_shm(shm, hc.get("ShmSize") or 64 * 1024 * 1024)
        elif ipc_mode == "host":
            modes["ipc"], shm = "host", "/dev/shm"
        elif ref := options.joined_container(ipc_mode):
            donor = self._running_donor(ref, "IPC")
            if donor.host_config.get("IpcMode") not in ("shareable", "host"):
                raise InvalidParameter(f"can't join IPC of container {donor.id}: non-shareable "
                                       "IPC (hint: use IpcMode:shareable for the donor "
                                       "container)")
            modes["ipc"] = f"/proc/{donor.state.pid}/ns/ipc"
            shm = ("/dev/shm" if donor.host_config.get("IpcMode") == "host"
                   else str(self.container_dir(donor) / "shm"))
        if hc.get("UTSMode") == "host":
            modes["uts"] = "host"
        if hc.get("CgroupnsMode") == "host":
            modes["cgroup"] = "host"
        return modes, shm

    def _running_donor(self, ref: str, what: str) -> Container:
        donor = self.get(ref)
        if donor.state.status not in (RUNNING, PAUSED) or not donor.state.pid:
            raise Conflict(f"cannot join {what} of a non running container: {ref}")
        return donor

    async def _start_failed(self, c: Container, exc: Exception) -> None:
        """Undo a half-made start; the container stays as it was, with the error recorded."""
        self._unwatch(c.id)
        await asyncio.to_thread(self._teardown_task, c)
        message = exc.message if isinstance(exc, SystemError_ | InvalidParameter) else str(exc)
        code = 128
        lowered = message.lower()
        if "executable file not found" in lowered or "no such file or directory" in lowered:
            code = 127
        elif "permission denied" in lowered:
            code = 126
        c.state.error = message
        c.state.exit_code = code
        c.state.pid = 0
        c.state.conmon_pid = 0
        if c.state.status not in (CREATED, EXITED):
            c.state.status = EXITED
        await self._persist(c)
        if c.host_config.get("AutoRemove"):
            # As Docker: a --rm container whose start failed is removed (`docker run --rm`
            # waits for that), once this start has let go of the container's lock.
            self._spawn(self.restarts.auto_remove(c))
        if isinstance(exc, RuntimeError_) and code in (126, 127):
            # The user's command is at fault, not the host: Docker answers 400.
            raise InvalidParameter(message) from exc

    def _teardown_task(self, c: Container, exited: bool = False) -> None:
        """Blocking: remove the runtime's task, conmon's files and the rootfs mount."""
        with contextlib.suppress(RuntimeError_):
            if exited:
                self.runtime.delete_stopped(c.id)
            elif self.runtime.has_task(c.id):
                self.runtime.delete(c.id, force=True)
        self.runtime.cleanup_files(c.id)
        mounts.unmount(str(self.container_dir(c) / "rootfs"))
        mounts.unmount(str(self.container_dir(c) / "shm"))  # a shareable IPC's /dev/shm
        self.network.release(c)  # networking: idempotent
        self.volumes.unmount_for(c)  # volumes: idempotent

    # exits ------------------------------------------------------------------------------

    def _watch(self, c: Container) -> bool:
        """Follow conmon's exit through a pidfd; False when it is gone already."""
        self._unwatch(c.id)
        conmon_pid = c.state.conmon_pid
        try:
            fd = os.pidfd_open(conmon_pid)
        except (OSError, ValueError):
            self._spawn(self._handle_exit(c.id, conmon_pid))
            return False
        self._pidfds[c.id] = fd
        asyncio.get_running_loop().add_reader(fd, self._on_conmon_exit, c.id, conmon_pid)
        return True

    def _unwatch(self, cid: str) -> None:
        fd = self._pidfds.pop(cid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _on_conmon_exit(self, cid: str, conmon_pid: int) -> None:
        self._unwatch(cid)
        self._spawn(self._handle_exit(cid, conmon_pid))

    async def _handle_exit(self, cid: str, conmon_pid: int) -> None:
        c = self._containers.get(cid)
        if c is None:
            return
        async with self._lock(cid):
            if c.state.conmon_pid != conmon_pid or c.state.status not in (RUNNING, PAUSED):
                return
            record = await asyncio.to_thread(self.runtime.read_exit, cid)
            oom = await asyncio.to_thread(
                os.path.exists, self.runtime.conmon_dir / cid / "oom")
            st = c.state
            started = st.started_at
            st.exit_code = record.code if record else 255
            st.finished_at = rfc3339_nano(record.finished_at if record else None)
            st.pid = 0
            st.conmon_pid = 0
            st.oom_killed = oom
            # Decided now, with the exit, so nobody sees it "exited" before it restarts.
            st.status = RESTARTING if should_restart(c) else EXITED
            await self._persist(c)
            duration = max(0.0, time.time() - parse_time(started))
            self._event(c, "die", exitCode=str(st.exit_code),
                        execDuration=str(int(duration)))
            self._resolve(self._exit_waiters, cid, ExitStatus(st.exit_code))
            self._close_parked(cid)
            # Waiters already have the exit; the teardown (runtime state, cgroups, rootfs
            # mount) finishes under the lock, before anything can start or remove it.
            await asyncio.to_thread(self._teardown_task, c, True)
        self.restarts.after_exit(c)

    def _close_parked(self, cid: str) -> None:
        for session in self._parked.pop(cid, set()):
            session.close()

    def _resolve(self, table: dict[str, list[asyncio.Future[ExitStatus]]], cid: str,
                 status: ExitStatus) -> None:
        for fut in table.pop(cid, []):
            if not fut.done():
                fut.set_result(status)

    def _exit_future(self, cid: str) -> "asyncio.Future[ExitStatus]":
        fut: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._exit_waiters.setdefault(cid, []).append(fut)
        return fut

    # wait -------------------------------------------------------------------------------

    def wait(self, ref: str, condition: str) -> "asyncio.Future[ExitStatus]":
        """Register a waiter at once (so a fast exit is never missed) and return it."""
        if condition not in WAIT_CONDITIONS:
            raise InvalidParameter(f'invalid condition: "{condition}"')
        c = self.get(ref)
        loop = asyncio.get_running_loop()
        if condition == "removed":
            fut: asyncio.Future[ExitStatus] = loop.create_future()
            self._removal_waiters.setdefault(c.id, []).append(fut)
            return fut
        if condition == "not-running" and c.state.status not in (RUNNING, PAUSED, RESTARTING):
            fut = loop.create_future()
            fut.set_result(ExitStatus(c.state.exit_code, c.state.error))
            return fut
        return self._exit_future(c.id)

    # attach and resize -------------------------------------------------------------------

    async def attach(self, ref: str, *, stdin: bool, stdout: bool, stderr: bool,
                     detach_keys: str | None = None) -> tuple[Container, AttachSession]:
        """Register an attachment; it connects now if the container runs, else at start."""
        c = self.get(ref)
        keys = parse_detach_keys(detach_keys)
        if c.state.status == PAUSED:
            raise Conflict("You cannot attach to a paused container, unpause it first")
        if c.state.status == RESTARTING:
            raise Conflict("You cannot attach to a restarting container, wait until it is "
                           "running")
        session = AttachSession(c.id, stdin and bool(c.config.get("OpenStdin")), stdout,
                                stderr, keys, stdin_once=bool(c.config.get("StdinOnce")))
        self._attachers.setdefault(c.id, set()).add(session)
        if c.state.status == RUNNING:
            try:
                await session.connect(str(self.container_dir(c) / "bundle"))
            except OSError:
                session.end()
        self._event(c, "attach")
        return c, session

    def detach(self, session: AttachSession) -> None:
        sessions = self._attachers.get(session.container_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                self._attachers.pop(session.container_id, None)
        c = self._containers.get(session.container_id)
        log.debug("detach %s: ok=%s stdin_closed=%s", session.container_id[:12],
                  session.connected_ok, session.stdin_closed)
        if (c is not None and c.state.status in (RUNNING, PAUSED) and session.connected_ok
                and not session.stdin_closed and c.config.get("OpenStdin")
                and c.config.get("StdinOnce")):
            # conmon closes a StdinOnce container's stdin when any attach connection ends,
            # but Docker keeps it open when a client detaches: hold the connection (its
            # output drained) until the container exits.
            session.park()
            self._parked.setdefault(c.id, set()).add(session)
            return
        session.close()

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        if c.state.status not in (RUNNING, PAUSED):
            raise Conflict(f"Container {c.id} is not running")
        if height < 0 or width < 0:
            raise InvalidParameter("invalid terminal size")
        await asyncio.to_thread(_write_ctl, self.container_dir(c) / "bundle" / "ctl",
                                f"1 {height} {width}\n")
        self._event(c, "resize", height=str(height), width=str(width))

    # exec ---------------------------------------------------------------------------------

    def create_exec(self, ref: str, body: dict[str, Any]) -> str:
        """Record an exec; it runs when started. 409 unless the container runs."""
        c = self.get(ref)
        if c.state.status == PAUSED:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if c.state.status != RUNNING:
            raise Conflict(f"Container {c.id} is not running")
        cmd = body.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
            raise InvalidParameter("No exec command specified")
        env = body.get("Env") or []
        if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
            raise InvalidParameter("Env must be a list of strings")
        size = body.get("ConsoleSize") or None
        wd = body.get("WorkingDir") or ""
        if wd and not wd.startswith("/"):
            raise InvalidParameter(f"the working directory '{wd}' is invalid, it needs to be "
                                   "an absolute path")
        inst = execs.ExecInstance(
            id=execs.new_exec_id(), container_id=c.id, cmd=cmd, tty=bool(body.get("Tty")),
            attach_stdin=bool(body.get("AttachStdin")),
            attach_stdout=bool(body.get("AttachStdout")),
            attach_stderr=bool(body.get("AttachStderr")), env=env,
            user=body.get("User") or "", working_dir=wd,
            privileged=bool(body.get("Privileged")),
            detach_keys=parse_detach_keys(body.get("DetachKeys")),
            console_size=(size[0], size[1]) if isinstance(size, list) and len(size) == 2
            else None,
        )
        self._execs[inst.id] = inst
        self._event(c, "exec_create: " + " ".join(cmd), execID=inst.id)
        return inst.id

    def get_exec(self, exec_id: str) -> execs.ExecInstance:
        inst = self._execs.get(exec_id)
        if inst is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return inst

    async def start_exec(self, exec_id: str, detach: bool, tty: bool | None = None,
                         console_size: list[int] | None = None) -> execs.ExecInstance:
        inst = self.get_exec(exec_id)
        if inst.started:
            state = "is already running" if inst.running else "has already run"
            raise Conflict(f"exec command {inst.id} {state}")
        c = self.get(inst.container_id)
        if c.state.status == PAUSED:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if c.state.status != RUNNING:
            raise Conflict(f"Container {c.id} is not running")
        # The process gets a terminal if the exec was created with one; the start's Tty
        # only chooses the stream's framing (as in Docker).
        inst.framed = not (inst.tty if tty is None else tty)
        if console_size and len(console_size) == 2 and all(console_size):
            inst.console_size = (console_size[0], console_size[1])
        inst.started = True
        bundle = self.container_dir(c) / "bundle"
        spec_path = self.exec_root / "execs" / f"{inst.id}.json"
        await asyncio.to_thread(self._write_exec_spec, c, inst, bundle, spec_path)
        self._event(c, "exec_start: " + " ".join(inst.cmd), execID=inst.id)
        await execs.run(inst, self.runtime.path, self.runtime.root, spec_path, detach)
        self._spawn(self._exec_finished(c, inst, spec_path))
        return inst

    def _write_exec_spec(self, c: Container, inst: execs.ExecInstance, bundle: Path,
                         spec_path: Path) -> None:
        container_spec = execs.load_spec(bundle)
        root = self.container_dir(c) / "rootfs"
        user = rootfs.resolve_user(root, inst.user or c.config.get("User") or "",
                                   c.host_config.get("GroupAdd"))
        user_doc: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
        if user.additional_gids:
            user_doc["additionalGids"] = user.additional_gids
        caps = host_capabilities() if inst.privileged else None
        process = execs.process_spec(container_spec, inst, user_doc, caps)
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(process))

    async def _exec_finished(self, c: Container, inst: execs.ExecInstance,
                             spec_path: Path) -> None:
        await inst.done.wait()
        await asyncio.to_thread(spec_path.unlink, True)
        self._event(c, "exec_die", execID=inst.id, exitCode=str(inst.exit_code))

    def exec_ids(self, cid: str) -> list[str]:
        return [e.id for e in self._execs.values() if e.container_id == cid]

    def _forget_execs(self, cid: str) -> None:
        for exec_id in self.exec_ids(cid):
            inst = self._execs.pop(exec_id)
            execs.kill(inst)

    # stop, kill, restart ----------------------------------------------------------------

    async def stop(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.get(ref)
        if c.state.status == RESTARTING:
            async with self._lock(c.id):
                # The restart may have won the lock first; then this is a normal stop.
                if c.state.status == RESTARTING:
                    self.restarts.cancel(c.id)
                    c.state.manually_stopped = True
                    c.state.status = EXITED
                    await self._persist(c)
                    self._event(c, "stop")
                    return
        if c.state.status not in (RUNNING, PAUSED):
            raise NotModified("container is already stopped")
        await self._user_stop(c, timeout, sig)

    async def _user_stop(self, c: Container, timeout: int | None, sig: str | None) -> None:
        """A stop the user asked for (stop, restart): the StopSignal, then SIGKILL after the
        timeout. Marked manual first, so the restart policy leaves the exit alone."""
        signum = parse_signal(sig or c.config.get("StopSignal") or "SIGTERM")
        if timeout is None:
            timeout = c.config.get("StopTimeout")
            if timeout is None:
                timeout = self.settings.stop_timeout
        c.state.manually_stopped = True
        await self._persist(c)
        await self._stop_with(c, signum, timeout)
        self._event(c, "stop")

    async def _stop_with(self, c: Container, signum: int, timeout: float) -> None:
        """Send signum, give the container timeout seconds, then SIGKILL."""
        exited = self._exit_future(c.id)
        try:
            await self._signal(c, signum)
        except RuntimeError_:
            timeout = min(timeout, 2) if timeout >= 0 else 2
        await fault_point("stop:signalled")
        try:
            await asyncio.wait_for(asyncio.shield(exited), None if timeout < 0 else timeout)
            return
        except TimeoutError:
            pass
        with contextlib.suppress(RuntimeError_):
            await self._signal(c, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(exited), KILL_WAIT)
        except TimeoutError as exc:
            raise SystemError_(f"cannot stop container: {c.name}: tried to kill container, "
                               "but did not receive an exit event") from exc

    async def _signal(self, c: Container, signum: int) -> None:
        self._event(c, "kill", signal=str(signum))
        await asyncio.to_thread(self.runtime.kill, c.id, signum, True)
        if c.state.status == PAUSED and signum == signal.SIGKILL:
            with contextlib.suppress(RuntimeError_):
                await asyncio.to_thread(self.runtime.resume, c.id)

    async def kill(self, ref: str, sig: str | None = None) -> None:
        signum = parse_signal(sig) if sig else int(signal.SIGKILL)
        c = self.get(ref)
        if c.state.status not in (RUNNING, PAUSED):
            raise Conflict(f"cannot kill container: {c.name}: container {c.id} is not running")
        c.state.manually_stopped = True
        self.restarts.cancel(c.id)
        await self._persist(c)
        exited = self._exit_future(c.id)
        try:
            await self._signal(c, signum)
        except RuntimeError_ as exc:
            raise SystemError_(f"cannot kill container: {c.name}: {exc.message}") from exc
        if signum == signal.SIGKILL:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), KILL_WAIT)

    async def restart(self, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
        c = self.get(ref)
        self.restarts.cancel(c.id)
        if c.state.status in (RUNNING, PAUSED):
            await self._user_stop(c, timeout, sig)
        elif c.state.status == RESTARTING:
            c.state.status = EXITED
        async with self._lock(c.id):
            with contextlib.suppress(NotModified):
                await self._start_locked(c)
        self._event(c, "restart")

    # pause ------------------------------------------------------------------------------

    async def pause(self, ref: str) -> None:
        c = self.get(ref)
        async with self._lock(c.id):
            if c.state.status == PAUSED:
                raise Conflict(f"Container {c.id} is already paused")
            if c.state.status != RUNNING:
                raise Conflict(f"Container {c.id} is not running")
            await asyncio.to_thread(self.runtime.pause, c.id)
            c.state.status = PAUSED
            await self._persist(c)
            self._event(c, "pause")

    async def unpause(self, ref: str) -> None:
        c = self.get(ref)
        async with self._lock(c.id):
            if c.state.status != PAUSED:
                raise Conflict(f"Container {c.id} is not paused")
            await asyncio.to_thread(self.runtime.resume, c.id)
            c.state.status = RUNNING
            await self._persist(c)
            self._event(c, "unpause")

    # remove, rename ---------------------------------------------------------------------

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        c = self.get(ref)
        if c.state.status == REMOVING:
            raise Conflict(f"removal of container {c.name} is already in progress")
        if c.state.status in (RUNNING, PAUSED, RESTARTING) and not force:
            if c.state.status == PAUSED:
                raise Conflict(f'cannot remove container "/{c.name}": container is paused and '
                               "must be unpaused first")
            raise Conflict(f'cannot remove container "/{c.name}": container is running: stop '
                           "the container before removing or force remove")
        self.restarts.cancel(c.id)
        if c.state.status in (RUNNING, PAUSED):
            c.state.manually_stopped = True
            exited = self._exit_future(c.id)
            with contextlib.suppress(RuntimeError_):
                await self._signal(c, signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(exited), KILL_WAIT)
            except TimeoutError as exc:
                raise SystemError_(f"cannot remove container \"/{c.name}\": could not kill "
                                   "it") from exc
        async with self._lock(c.id):
            if c.id not in self._containers:
                return
            c.state.status = REMOVING
            await self._persist(c)
            await fault_point("remove:marked")
            await self._finish_remove(c, volumes)

    async def _finish_remove(self, c: Container, volumes: bool = False) -> None:
        self._unwatch(c.id)
        for session in self._attachers.pop(c.id, set()):
            session.end()
        self._close_parked(c.id)
        self._forget_execs(c.id)
        await asyncio.to_thread(self._remove_files, c)
        await fault_point("remove:files-gone")
        await self.db(self.store.delete_container, c.id)
        self._containers.pop(c.id, None)
        self._locks.pop(c.id, None)
        self._event(c, "destroy")
        await self.volumes.container_removed(c, volumes)  # volumes: rm -v, AutoRemove
        status = ExitStatus(c.state.exit_code)
        self._resolve(self._exit_waiters, c.id, status)
        self._resolve(self._removal_waiters, c.id, status)

    def _remove_files(self, c: Container) -> None:
        self._teardown_task(c)
        base = self.container_dir(c)
        if mounts.is_mounted(str(base / "rootfs")):
            raise SystemError_(f"rootfs of {c.id} is still mounted")
        # Rename now (atomic), delete the tree after answering: rmtree takes milliseconds.
        trash = base.parent / f".trash-{c.id}"
        try:
            os.rename(base, trash)
        except FileNotFoundError:
            return
        threading.Thread(target=shutil.rmtree, args=(trash, True), daemon=True).start()

    async def rename(self, ref: str, new_name: str) -> None:
        c = self.get(ref)
        if not new_name:
            raise InvalidParameter("Neither old nor new names may be empty")
        new_name = names.validate_name(new_name)
        if new_name == c.name:
            raise Conflict("Renaming a container with the same name as its current name")
        old = c.name
        c.name = new_name
        try:
            await self.db(self.store.rename_container, c.id, new_name, c.to_record())
        except NameTaken as taken:
            c.name = old
            raise name_conflict(taken.name, taken.holder) from None
        self._event(c, "rename", oldName="/" + old)

    # update and prune -------------------------------------------------------------------

    async def update(self, ref: str, body: dict[str, Any]) -> list[str]:
        """`docker update`: resources (applied live through the runtime) and restart policy."""
        c = self.get(ref)
        if not isinstance(body, dict):
            raise InvalidParameter("the request body must be a JSON object")
        changes = {k: v for k, v in body.items() if k in UPDATABLE and v is not None}
        for key, value in changes.items():
            if key != "RestartPolicy" and key not in ("CpusetCpus", "CpusetMems") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < -1):
                raise InvalidParameter(f"invalid value for {key}: {value!r}")
        new_hc = dict(c.host_config)
        check_resources({**new_hc, **changes}, os.cpu_count() or 1, update=True)
        if "RestartPolicy" in changes:
            policy = create_rules.validate_restart_policy(changes["RestartPolicy"],
                                                          bool(c.host_config.get("AutoRemove")))
            new_hc["RestartPolicy"] = policy
        for key, value in changes.items():
            if key != "RestartPolicy":
                new_hc[key] = value
        async with self._lock(c.id):
            if c.state.status in (RUNNING, PAUSED):
                resources = resources_from_host_config(new_hc)
                if resources:
                    try:
                        await asyncio.to_thread(self.runtime.update, c.id, resources)
                    except RuntimeError_ as exc:
                        raise SystemError_(f"Cannot update container {c.id}: "
                                           f"{exc.message}") from exc
            c.host_config = new_hc
            await self._persist(c)
        self._event(c, "update")
        return []

    async def prune(self, filters: dict[str, list[str]]) -> tuple[list[str], int]:
        """Remove every stopped container the filters select (until, label)."""
        until = None
        if filters.get("until"):
            until = _parse_until(filters["until"][0])
        removed: list[str] = []
        reclaimed = 0
        for c in list(self._containers.values()):
            if c.state.status not in (CREATED, EXITED, DEAD):
                continue
            if until is not None and parse_time(c.created) >= until:
                continue
            if not labels_match(c.config.get("Labels") or {}, filters.get("label", []),
                                 filters.get("label!", [])):
                continue
            size, _ = await self.container_sizes(c)
            try:
                await self.remove(c.id)
            except (Conflict, NotFound):
                continue
            removed.append(c.id)
            reclaimed += size
        self.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
        return removed, reclaimed

    # top ----------------------------------------------------------------------------------

    async def top(self, ref: str, ps_args: str = "-ef") -> tuple[list[str], list[list[str]]]:
        c = self.get(ref)
        if c.state.status == RESTARTING:
            raise Conflict(f"Container {c.id} is restarting, wait until the container is "
                           "running")
        if c.state.status not in (RUNNING, PAUSED):
            raise Conflict(f"Container {c.id} is not running")
        pids = set(await asyncio.to_thread(self.runtime.pids, c.id))
        return await asyncio.to_thread(ps_top.ps_table, ps_args or "-ef", pids)

    # images -------------------------------------------------------------------------------

    def image_users(self, image_id: str) -> list[Container]:
        return [c for c in self._containers.values() if c.image_id == image_id]

    async def import_image(self, source: BinaryIO, repo: str, tag: str, changes: list[str],
                           message: str) -> Image:
        tags = []
        if repo:
            if reference.parse(repo, default_tag=False).digest:
                raise InvalidParameter("cannot import digest reference")
            tags.append(reference.tag_reference(repo, tag))
        # Validate changes before reading a byte of the body.
        archive.apply_changes({}, changes)
        image, replaced = await asyncio.to_thread(
            archive.import_rootfs, self.images, source, changes, message, tags)
        self.events.publish("image", "import", image.id, {"name": image.id})
        for ref in tags:
            self.events.publish("image", "tag", image.id, {"name": ref.familiar()})
        self._untag_events(replaced)
        return image  # type: ignore[no-any-return]

    async def commit(self, ref: str, repo: str, tag: str, *, comment: str = "",
                     author: str = "", pause: bool = True, changes: list[str] | None = None,
                     config: dict[str, Any] | None = None) -> Image:
        """`docker commit`: the container's writable layer as a new image over its own."""
        c = self.get(ref)
        tags = [reference.tag_reference(repo, tag)] if repo else []
        if config is not None and not isinstance(config, dict):
            raise InvalidParameter("the request body must be a container config object")
        new_config = commit.commit_config(c.config, config, changes or [])
        image = await asyncio.to_thread(self.images.find, c.image_id)
        if image is None:
            raise NotFound(f"No such image: {c.image_id}")
        paused_here = False
        async with self._lock(c.id):
            if pause and c.state.status == RUNNING:
                # As Docker: freeze the processes so the layer is a consistent snapshot.
                await asyncio.to_thread(self.runtime.pause, c.id)
                paused_here = True
            try:
                new, replaced = await asyncio.to_thread(
                    commit.commit_layer, self.images, self.container_dir(c) / "upper", image,
                    c.id, new_config, author, comment, " ".join([c.path, *c.args]), tags)
            finally:
                if paused_here:
                    await asyncio.to_thread(self.runtime.resume, c.id)
        self._event(c, "commit", comment=comment)
        for t in tags:
            self.events.publish("image", "tag", new.id, {"name": t.familiar()})
        self._untag_events(replaced)
        return new

    async def build(self, source: BinaryIO, options: BuildOptions, emit: Emit) -> Image:
        """`POST /build`: the classic Dockerfile builder (engine/build/)."""
        return await run_build(EngineHost(self), source, options, emit)

    def _untag_events(self, replaced: list[tuple[reference.Reference, str]]) -> None:
        for _, image_id in replaced:
            self.events.publish("image", "untag", image_id, {"name": image_id})

    async def load_images(self, source: BinaryIO, quiet: bool
                          ) -> AsyncIterator[load.LayerProgress | load.LoadMessage]:
        """Docker's load: its progress and result lines as they happen; raises on failure."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[load.LayerProgress | load.LoadMessage | None] = asyncio.Queue()

        def on_update(update: load.LoadUpdate) -> None:  # on the loop
            if isinstance(update, load.LoadedImage):
                image = update.image
                self.events.publish("image", "load", image.id, {"name": image.id})
                for ref in update.tags:
                    self.events.publish("image", "tag", image.id, {"name": ref.familiar()})
                self._untag_events(update.replaced)
            else:
                lines.put_nowait(update)

        def run() -> None:
            try:
                load.load_archive(self.images, source,
                                  lambda u: loop.call_soon_threadsafe(on_update, u), not quiet)
            finally:
                loop.call_soon_threadsafe(lines.put_nowait, None)

        worker = asyncio.ensure_future(asyncio.to_thread(run))
        while (line := await lines.get()) is not None:
            yield line
        await worker

    async def save_images(self, names: list[str]) -> AsyncIterator[bytes]:
        """Docker's save: NotFound here for an unknown name, then the archive's bytes."""
        items = await asyncio.to_thread(save.select_images, self.images, names)
        chains = [chain for item in items for chain in item.image.layers]
        pipe = ThreadPipe(asyncio.get_running_loop())

        def run() -> None:
            try:
                save.write_archive(self.images, items, pipe)  # type: ignore[arg-type]
                pipe.finish()
            except BrokenPipeError:
                pass  # the client went away
            except BaseException as exc:
                log.error("saving %s failed: %s", ", ".join(names), exc)
                pipe.fail(exc)
            finally:
                self.images.unpin(chains)

        async def stream() -> AsyncIterator[bytes]:
            self.images.pin(chains)  # until run() ends: an image removal keeps them
            worker = asyncio.ensure_future(asyncio.to_thread(run))
            try:
                async for chunk in pipe.chunks():
                    yield chunk
                await worker
            finally:
                pipe.close()
            for item in items:
                self.events.publish("image", "save", item.image.id, {"name": item.image.id})

        return stream()

    async def tag_image(self, source: str, repo: str, tag: str) -> None:
        image, ref = await asyncio.to_thread(self.images.tag, source, repo, tag)
        self.events.publish("image", "tag", image.id, {"name": ref.familiar()})

    async def prune_images(self, filters: dict[str, list[str]]) -> tuple[list[dict[str, str]],
                                                                        int]:
        """`docker image prune`: dangling images (all unused ones with dangling=false) that
        no container uses, narrowed by until and label."""
        only_dangling = [v.lower() for v in filters.get("dangling", ["true"])] != ["false"]
        select_filters = {k: v for k, v in filters.items() if k in ("until", "label")}
        if only_dangling:
            select_filters["dangling"] = ["true"]
        listed = await asyncio.to_thread(
            lambda: images_listing.select(self.images.all(), select_filters,
                                          self.images.resolve, show_intermediate=False))
        report: list[dict[str, str]] = []
        reclaimed = 0
        for item in listed:
            if self.image_users(item.image.id):
                continue
            try:
                report += await self.remove_image(item.image.id, force=True)
            except (Conflict, NotFound):
                continue
            reclaimed += item.image.size
        self.events.publish("image", "prune", "", {"reclaimed": str(reclaimed)})
        return report, reclaimed

    async def remove_image(self, name: str, force: bool = False,
                           prune: bool = True) -> list[dict[str, str]]:
        """Docker's image delete (see images/delete.py); returns its Untagged/Deleted report."""
        image = await asyncio.to_thread(self.images.resolve, name)
        requested = None
        with contextlib.suppress(InvalidParameter):
            requested = reference.parse(name)
        refs = await asyncio.to_thread(
            lambda: self.images.tags_of(image.id) + self.images.digests_of(image.id))
        users = [delete.ImageUser(c.short_id, c.state.status in (RUNNING, PAUSED, RESTARTING))
                 for c in self.image_users(image.id)]
        plan = delete.plan_delete(name, requested, image.id, refs, users, force)
        report: list[dict[str, str]] = []
        for ref in plan.untag:
            await asyncio.to_thread(self.images.untag, image.id, ref)
            report.append({"Untagged": ref.familiar()})
            self.events.publish("image", "untag", image.id, {"name": image.id})
        if plan.delete:
            removed = await asyncio.to_thread(self.images.remove_image, image)
            report.append({"Deleted": image.id})
            report.extend({"Deleted": chain} for chain in removed)
            self.events.publish("image", "delete", image.id, {"name": image.id})
        return report

    # sizes ------------------------------------------------------------------------------

    async def container_sizes(self, c: Container) -> tuple[int, int]:
        """(SizeRw, SizeRootFs): bytes in the writable layer, and with the image."""
        image = await asyncio.to_thread(self.images.find, c.image_id)
        rw = await asyncio.to_thread(diskusage.dir_size, self.container_dir(c) / "upper")
        return rw, rw + (image.size if image else 0)

    # looking inside: stats, changes, export, copy, disk usage ---------------------------

    @functools.cached_property
    def stats_collector(self) -> StatsCollector:
        return StatsCollector()

    def cgroup_path(self, c: Container) -> str:
        parent = c.host_config.get("CgroupParent") or self.settings.cgroup_parent
        return f"/{parent.strip('/')}/{c.id}"

    async def stats_sample(self, c: Container) -> Sample | None:
        """A sample of a running container (kept as its last one); None when it is not."""
        if c.state.status not in (RUNNING, PAUSED) or c.state.pid <= 0:
            return None
        self.stats_collector.prune(self._containers)
        # A host-network container has no interfaces of its own (dockerd shows none).
        net_pid = 0 if c.host_config.get("NetworkMode") == "host" else c.state.pid
        return await asyncio.to_thread(self.stats_collector.sample, c.id, self.cgroup_path(c),
                                       net_pid)

    async def stats_pair(self, c: Container) -> tuple[Sample | None, Sample | None]:
        """(sample, an earlier sample) for precpu: the kept one when fit, else a fresh one
        read StatsCollector.MIN_SPAN before."""
        collector = self.stats_collector
        now = time.time()
        earlier = collector.previous(c.id, now)
        if earlier is None:
            wait = collector.wait_needed(c.id, now)
            earlier = collector.last(c.id) if wait >= 0 else await self.stats_sample(c)
            if earlier is None:
                return None, None
            await asyncio.sleep(wait if wait >= 0 else collector.MIN_SPAN)
        sample = await self.stats_sample(c)
        return sample, earlier if sample is not None else None

    async def _layer_stack(self, c: Container) -> list[str]:
        """The container's lower layers, topmost first: its init layer, then the image's."""
        image = await asyncio.to_thread(self.images.find, c.image_id)
        if image is None:
            raise NotFound(f"No such image: {c.image_id}")
        return [str(self.container_dir(c) / "init"), *self.images.layer_dirs(image)]

    async def changes(self, ref: str) -> list[Change]:
        c = self.get(ref)
        lowers = await self._layer_stack(c)
        return await asyncio.to_thread(collect_changes, str(self.container_dir(c) / "upper"),
                                       lowers)

    async def export(self, ref: str) -> AsyncIterator[bytes]:
        """The tar of the container's filesystem (see export.py); tar starts when the
        iteration does, and a failure to start raises at the first step."""
        c = self.get(ref)
        if c.state.status == DEAD:
            raise Conflict(f"You cannot export container {c.id} which is Dead")
        if c.state.status == REMOVING:
            raise Conflict(f"You cannot export container {c.id} which is being removed")
        base = self.container_dir(c)
        layers = [str(base / "upper"), *await self._layer_stack(c)]
        self._event(c, "export")
        return exporting.stream_tar(exporting.tar_command(str(base / "rootfs"), layers))

    def _cp_view(self, c: Container, layers: list[str], *,
                 extract: bool) -> cpview.ViewSpec:
        """What `docker cp` sees (see cpview.py): a running container's rootfs, or its
        overlay mounted in the view, with its volumes, binds and /etc files. A stopped
        container's overlay is mounted read-write to extract, or to make the mount points of
        its volumes and binds (as dockerd does): then the caller holds its lock."""
        base = self.container_dir(c)
        running = c.state.status in (RUNNING, PAUSED)
        mounted = [cpview.Bind(b["source"], b["destination"], bool(b.get("readonly")))
                   for b in self.volumes.spec_mounts(c)[0]]
        binds = mounted + [cpview.Bind(str(base / name), f"/etc/{name}")
                           for name in ("hosts", "hostname", "resolv.conf")]
        binds.sort(key=lambda b: b.destination.rstrip("/").count("/"))  # parents first
        return cpview.ViewSpec(rootfs=str(base / "rootfs"), upper=str(base / "upper"),
                               work=str(base / "work"), layers=layers, binds=binds,
                               writable=not running and (extract or bool(mounted)),
                               may_mount=not (extract and running))

    @contextlib.asynccontextmanager
    async def _cp_session(self, ref: str, *,
                          extract: bool) -> AsyncIterator[tuple[Container, cpview.ViewSpec]]:
        c = self.get(ref)
        if c.state.status in (REMOVING, DEAD):
            raise Conflict(f"container {c.id} is marked for removal")
        layers = await self._layer_stack(c)
        spec = self._cp_view(c, layers, extract=extract)
        if not spec.writable:
            yield c, spec
            return
        async with self._lock(c.id):
            yield c, self._cp_view(c, layers, extract=extract)  # it may run by now

    async def archive_stat(self, ref: str, path: str) -> archive_path.PathStat:
        async with self._cp_session(ref, extract=False) as (c, spec):

            def work() -> archive_path.PathStat:
                with cpview.enter(spec) as root:
                    return archive_path.path_stat(
                        root, archive_path.resolve_resource(root, path, c.name))

            return await cpview.run_in_own_thread(work)

    async def archive_get(self, ref: str,
                          path: str) -> AsyncIterator[archive_path.PathStat | bytes]:
        """`docker cp` out: first the PathStat, then the tar's bytes."""
        async with self._cp_session(ref, extract=False) as (c, spec):
            loop = asyncio.get_running_loop()
            pipe = ThreadPipe(loop)
            found: asyncio.Future[archive_path.PathStat] = loop.create_future()

            def work() -> None:
                with cpview.enter(spec) as root:
                    res = archive_path.resolve_resource(root, path, c.name)
                    st = archive_path.path_stat(root, res)
                    loop.call_soon_threadsafe(lambda: found.done() or found.set_result(st))
                    try:
                        archive_path.write_archive(root, res, pipe)  # type: ignore[arg-type]
                        pipe.finish()
                    except BrokenPipeError:
                        pass  # the client went away
                    except BaseException as exc:
                        log.error("archive of %s:%s failed: %s", c.short_id, path, exc)
                        pipe.fail(exc)

            done = cpview.run_in_own_thread(work)
            try:
                await asyncio.wait([found, done], return_when=asyncio.FIRST_COMPLETED)
                if not found.done():
                    await done  # raises what stopped it (NotFound, ...)
                    raise SystemError_(f"archive of {path} ended without an answer")
                yield found.result()
                self._event(c, "archive-path")
                async for chunk in pipe.chunks():
                    yield chunk
            finally:
                pipe.close()
                found.cancel()
                with contextlib.suppress(Exception):
                    await done

    async def archive_put(self, ref: str, path: str, source: BinaryIO, *,
                          no_overwrite_dir_non_dir: bool, copy_uid_gid: bool) -> None:
        """`docker cp` in: unpack the tar `source` into the directory `path`. A stopped
        container's overlay is written under its lock, as dockerd does."""
        async with self._cp_session(ref, extract=True) as (c, spec):
            if c.host_config.get("ReadonlyRootfs"):
                raise Forbidden("container rootfs is marked read-only")
            await cpview.run_in_own_thread(lambda: self._extract(
                c, spec, path, source, no_overwrite_dir_non_dir, copy_uid_gid))
        self._event(c, "extract-to-dir")

    def _extract(self, c: Container, spec: cpview.ViewSpec, path: str, source: BinaryIO,
                 no_overwrite: bool, copy_uid_gid: bool) -> None:
        if not path:
            raise InvalidParameter("bad parameter: path cannot be empty")
        with cpview.enter(spec) as root:
            dest = archive_path.resolve_in_scope(root, archive_path.absolute(path))
            try:
                fd = archive_path.open_in_root(root, dest, os.O_PATH)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"Could not find the file {path} in container {c.name}") from None
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidParameter("extraction point is not a directory")
            owner = None
            if copy_uid_gid and c.config.get("User"):
                user = rootfs.resolve_user(Path(f"/proc/self/fd/{root}"), c.config["User"])
                owner = (user.uid, user.gid)
            try:
                archive_path.extract(root, dest, source, archive_path.ExtractOptions(
                    no_overwrite_dir_non_dir=no_overwrite, owner=owner))
            except OSError as exc:
                if exc.errno == errno.EROFS:
                    raise InvalidParameter("mounted volume is marked read-only") from exc
                raise

    async def disk_usage(self, kinds: set[str]) -> tuple[
            int, list[diskusage.ImageUsage], list[tuple[Container, int, int]],
            list[tuple[Volume, int, int]]]:
        """`docker system df`: LayersSize, images (with users and shared sizes), containers
        (with SizeRw and SizeRootFs), volumes (with size and users); only the kinds asked
        for are computed."""
        layers_size, images = 0, []
        if "image" in kinds:
            users = collections.Counter(c.image_id for c in self._containers.values())
            all_images = await asyncio.to_thread(self.images.all)
            layers_size, images = await asyncio.to_thread(
                diskusage.image_usage, all_images, users, self.images.layer_size)
        containers = []
        if "container" in kinds:
            for c in self.containers():
                rw, rootfs_size = await self.container_sizes(c)
                containers.append((c, rw, rootfs_size))
        volumes = []
        if "volume" in kinds:
            for vol in self.volumes.all():
                size = await asyncio.to_thread(diskusage.dir_size,
                                               self.volumes.mountpoint(vol.name))
                volumes.append((vol, size, len(self.volumes.users(vol.name))))
        return layers_size, images, containers, volumes

    async def build_cache_usage(self) -> list[dict[str, Any]]:
        """`docker system df`'s BuildCache: the build steps kept as untagged images."""
        in_use = {c.image_id for c in self._containers.values()}
        all_images = await asyncio.to_thread(self.images.all)
        return await asyncio.to_thread(build_cache.usage, all_images, in_use,
                                       self.images.layer_size)

    async def prune_build_cache(self) -> tuple[list[str], int]:
        """`docker builder prune`: remove the build steps no container uses, newest first
        (children before parents); the space is what their removed layers held."""
        in_use = {c.image_id for c in self._containers.values()}
        all_images = await asyncio.to_thread(self.images.all)
        steps = sorted((i for i in all_images if build_cache.is_build_step(i)
                        and i.id not in in_use), key=lambda i: i.created, reverse=True)

        def remove() -> tuple[list[str], int]:
            deleted, reclaimed = [], 0
            for image in steps:
                sizes = {c: self.images.layer_size(c) for c in image.layers}
                removed = self.images.remove_image(image)
                deleted.append(image.id.removeprefix("sha256:"))
                reclaimed += sum(sizes[c] for c in removed)
            return deleted, reclaimed

        deleted, reclaimed = await asyncio.to_thread(remove)
        for image_id in deleted:
            self.events.publish("image", "delete", "sha256:" + image_id,
                                {"name": "sha256:" + image_id})
        return deleted, reclaimed


UPDATABLE = ("CpuShares", "Memory", "MemoryReservation", "MemorySwap", "NanoCpus",
             "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight",
             "KernelMemory", "RestartPolicy")


def _parse_until(text: str) -> float:
    """`until` as unix seconds, RFC 3339, or a Go duration like 10m (ago)."""
    try:
        return float(text)
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return parse_time(text)
    except ValueError as exc:
        raise InvalidParameter(f"invalid until filter: {text}") from exc


def _rotate_due(due: list[Rotation]) -> None:
    for r in due:
        try:
            if r.log.stat().st_size < r.max_size:
                continue
            rotate(str(r.log), r.max_files)
            _write_ctl(r.ctl, "2 0 0\n")
        except (OSError, Conflict) as exc:
            log.warning("log rotation of %s failed: %s", r.log, exc)


def _log_db_failure(future: "asyncio.Future[None]") -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("database write failed", exc_info=future.exception())


def _write_ctl(fifo: Path, line: str) -> None:
    """Send a command to conmon's control FIFO (it reads `<kind> <height> <width>` lines)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise Conflict(f"cannot resize: conmon does not answer ({exc.strerror})") from exc
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)



def _home_of(root: Path, uid: int) -> str:
    try:
        with open(root / "etc" / "passwd", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 5 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/root" if uid == 0 else "/"
