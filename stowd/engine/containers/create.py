"""`docker create`: validate, resolve the image, reserve the name, lay out the directory."""

import asyncio
import socket
import time
from typing import Any

from stowd.engine import create as rules
from stowd.engine import names, options, rootfs
from stowd.engine.containers import links
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import Container, rfc3339_nano
from stowd.engine.errors import Conflict, InvalidParameter, NotFound
from stowd.engine.faults import fault_point
from stowd.engine.images.store import Image
from stowd.engine.private import private_container_dir
from stowd.engine.runtime import seccomp
from stowd.engine.runtime.spec import host_capabilities
from stowd.engine.store import NameTaken, name_conflict


async def create_container(x: Ctx, name: str | None,
                           body: dict[str, Any]) -> tuple[str, list[str]]:
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    config = rules.normalize_config(body)
    host_config = rules.normalize_host_config(body.get("HostConfig"), x.runtime.name)
    warnings = options.check_run_options(host_config, config, (x.runtime.name,),
                                         x.host_security.cgroup_v2)
    check_run_options_here(x, host_config)
    image_name = config.get("Image") or ""
    if not image_name:
        raise InvalidParameter("No image was specified")
    if name:
        name = names.validate_name(name)
    image = await asyncio.to_thread(x.images.resolve, image_name)
    merged = rules.merge_image_defaults(config, image.container_config)
    if merged.get("NetworkDisabled"):
        host_config["NetworkMode"] = "none"  # as dockerd: no network at all but lo
    networking = x.network.prepare(merged, host_config, body.get("NetworkingConfig"))
    linked = links.resolve(x, host_config)  # legacy links: their targets exist
    path, args = rules.entrypoint_and_args(merged)
    volume_mounts = await x.volumes.prepare(merged, host_config)  # volumes: resolved
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
        config=rules.full_config(merged),
        host_config=host_config,
        path=path,
        args=args,
        networking_config=networking,
        links=linked,
        mounts=volume_mounts,
    )
    await asyncio.to_thread(prepare_dirs, x, c, image)
    await fault_point("create:dirs-made")
    try:
        await reserve(x, c, explicit_name=bool(name))
    except BaseException:
        await asyncio.to_thread(x.core.layout.discard, c.id)
        await x.volumes.container_removed(c, remove_anonymous=True)
        raise
    x.core.handles.add(c)
    x.core.event(c, "create")
    await fault_point("create:recorded")
    return cid, warnings


def check_run_options_here(x: Ctx, hc: dict[str, Any]) -> None:
    """The create rules that depend on this host and daemon, not on the request alone."""
    for key in ("PidMode", "IpcMode"):
        ref = options.joined_container(hc.get(key) or "")
        if ref:
            try:
                x.core.handles.get(ref)
            except NotFound as exc:
                # 400 as dockerd: a 404 from create would make the CLI pull the image.
                raise InvalidParameter(exc.message) from None
    sec = options.parse_security_opt(hc.get("SecurityOpt"))
    if sec.apparmor and sec.apparmor != "unconfined" and not x.host_security.apparmor:
        raise InvalidParameter(f"AppArmor is not enabled on this host: cannot apply the "
                               f"profile {sec.apparmor!r}")
    if [o for o in sec.labels if o != "disable"]:
        # dockerd ignores them on hosts without SELinux; stowd sets no SELinux labels
        # anywhere, so it says so rather than accept them.
        raise InvalidParameter("SELinux label options are not supported (stowd sets no "
                               "SELinux labels): only label=disable is accepted")
    if sec.seccomp not in ("", "unconfined", "builtin"):
        seccomp.to_oci(seccomp.parse_profile(sec.seccomp), host_capabilities())
    if hc.get("Init") and not x.host_security.init_present:
        raise InvalidParameter(f"the init binary {x.core.settings.init_path} does not exist: "
                               "install tini (apt-get install tini) or set --init-path")


async def reserve(x: Ctx, c: Container, explicit_name: bool) -> None:
    """Insert the record under its name (a random one, retried, when none was given)."""
    store = x.core.db.opened
    for attempt in range(7):
        if not explicit_name:
            c.name = names.random_name(attempt) if attempt < 6 else c.short_id
        try:
            await x.core.db.run(store.insert_container, c.id, c.name, time.time(),
                                c.to_record())
            return
        except NameTaken as taken:
            if explicit_name:
                raise name_conflict(taken.name, taken.holder) from None
    raise Conflict("could not find a free name for the container")


def prepare_dirs(x: Ctx, c: Container, image: Image) -> None:
    """Blocking: the container's directories, init layer and /etc files."""
    d = x.core.dir(c)
    for sub in d.SUBDIRS:
        (d.base / sub).mkdir(parents=True, exist_ok=True)
    private_container_dir(d)
    rootfs.make_init_layer(d.init)
    write_etc_files(x, c)


def write_etc_files(x: Ctx, c: Container) -> None:
    d = x.core.dir(c)
    hostname = c.config.get("Hostname") or c.short_id
    d.etc_file("hostname").write_text(hostname + "\n")
    d.etc_file("hosts").write_text(rootfs.hosts_file(hostname, None,
                                                     x.network.extra_hosts(c)))
    d.etc_file("resolv.conf").write_text(rootfs.resolv_conf(
        c.host_config.get("Dns"), c.host_config.get("DnsSearch"),
        c.host_config.get("DnsOptions")))
