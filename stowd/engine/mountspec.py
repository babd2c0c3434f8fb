"""A container's mounts from its create request: Docker's rules, as pure functions.

Three sources, merged as dockerd merges them (daemon/volumes.go, volume/mounts):

- `HostConfig.Binds`: `name:/dest[:mode]` (a named volume), `/host:/dest[:mode]` (a bind;
  a missing host directory is created at start, as `docker run -v` does) or `/dest` (an
  anonymous volume). Modes: `ro`/`rw`, `z`/`Z`, a propagation, `nocopy`, a consistency.
- `HostConfig.Mounts`: `{Type: bind|volume|tmpfs, Source, Target, ReadOnly, BindOptions,
  VolumeOptions, TmpfsOptions}`; a bind's source must exist.
- `Config.Volumes` (the image's VOLUMEs and the request's): anonymous volumes, unless a bind,
  mount or tmpfs already covers the path. `HostConfig.VolumesFrom` inherits another
  container's volumes and binds, which binds and mounts override.

The result is one `MountPoint` per destination, kept on the container record (as a dict) and
shown by inspect's `Mounts`. Volumes are named (random names for anonymous ones) and created
by `volumes.VolumeManager`; here nothing touches the host.
"""

import posixpath
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from stowd.engine.errors import InvalidParameter, NotFound

VOLUME = "volume"
BIND = "bind"
TMPFS = "tmpfs"

# Labels dockerd (23+) puts on the volumes it names itself.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"

VOLUME_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
DEFAULT_PROPAGATION = "rprivate"
_RW_MODES = ("rw", "ro")
_LABEL_MODES = ("z", "Z")
_COPY_MODES = ("nocopy",)
_CONSISTENCY_MODES = ("consistent", "cached", "delegated")

# What a tmpfs gets before the user's options (dockerd's defaults for --tmpfs and mounts).
TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev")
# Flags a later option of the pair turns off (mount(8) semantics).
_OPPOSITES = {
    "ro": "rw", "rw": "ro", "exec": "noexec", "noexec": "exec", "suid": "nosuid",
    "nosuid": "suid", "dev": "nodev", "nodev": "dev", "atime": "noatime", "noatime": "atime",
    "diratime": "nodiratime", "nodiratime": "diratime", "relatime": "norelatime",
    "norelatime": "relatime", "sync": "async", "async": "sync", "strictatime": "nostrictatime",
    "nostrictatime": "strictatime",
}

LOCAL_DRIVER = "local"
VOLUME_OPTIONS = ("type", "o", "device", "size")


@dataclass
class MountPoint:
    """One resolved mount of a container, as stored on its record."""

    type: str  # volume, bind or tmpfs
    destination: str
    source: str = ""  # bind: the host path; volume: its directory (set once it is named)
    name: str = ""  # volume: its name ("" until an anonymous one is named)
    driver: str = ""
    mode: str = ""  # the mode string inspect shows
    rw: bool = True
    propagation: str = ""
    anonymous: bool = False  # a volume stowd named: `docker rm -v` removes it
    copy_data: bool = False  # copy the image's content at the path into an empty volume
    subpath: str = ""  # volume: mount this directory inside it
    create_source: bool = False  # bind: create a missing host directory at start
    tmpfs_options: str = ""  # tmpfs: size=, mode= and flags, as mount data
    volume_labels: dict[str, str] = field(default_factory=dict)  # to create the volume with
    volume_options: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "MountPoint":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


# --- names ------------------------------------------------------------------------------------


def validate_volume_name(name: str) -> None:
    """The local driver's name rule; InvalidParameter with dockerd's message."""
    if len(name) == 1:
        raise InvalidParameter(f"create {name}: volume name is too short, names should be at "
                               "least two alphanumeric characters")
    if not _VOLUME_NAME_RE.match(name):
        raise InvalidParameter(
            f'create {name}: "{name}" includes invalid characters for a local volume name, only '
            f'"{VOLUME_NAME_CHARS}" are allowed. If you intended to pass a host directory, use '
            "absolute path")


def check_driver(name: str, driver: str | None) -> str:
    """Only the local driver exists: others are 404s, as a plugin dockerd cannot find."""
    driver = driver or LOCAL_DRIVER
    if driver != LOCAL_DRIVER:
        raise NotFound(f'create {name}: error looking up volume plugin {driver}: plugin '
                       f'"{driver}" not found')
    return driver


def validate_volume_options(name: str, opts: dict[str, str] | None) -> dict[str, str]:
    """The local driver's options: type, o and device (as mount(8) takes them)."""
    opts = dict(opts or {})
    for key, value in opts.items():
        if not isinstance(value, str):
            raise InvalidParameter(f"create {name}: option {key!r} must be a string")
        if key not in VOLUME_OPTIONS:
            raise InvalidParameter(f'create {name}: invalid option: "{key}"')
    if opts.get("size"):
        raise InvalidParameter(f"create {name}: quota size requested but no quota support")
    required = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
    for key in ("device", "type", "o"):
        if key in opts:
            for needed in required[key]:
                if needed not in opts:
                    raise InvalidParameter(f'create {name}: missing required option: "{needed}"')
    return opts


# --- parsing ----------------------------------------------------------------------------------


def _mount_config_error(kind: str, message: str) -> InvalidParameter:
    return InvalidParameter(f'invalid mount config for type "{kind}": {message}')


def _check_absolute(kind: str, path: str) -> None:
    if not posixpath.isabs(path):
        raise _mount_config_error(kind, f"invalid mount path: '{path}' mount path must be "
                                        "absolute")


def _check_target(kind: str, target: str) -> None:
    if not target:
        raise _mount_config_error(kind, "field Target must not be empty")
    if posixpath.isabs(target) and clean(target) == "/":
        raise _mount_config_error(kind, "invalid specification: destination can't be '/'")
    _check_absolute(kind, target)


def _valid_mode(mode: str) -> bool:
    if not mode:
        return True
    counts = [0, 0, 0, 0, 0]
    for opt in mode.split(","):
        for i, group in enumerate((_RW_MODES, _LABEL_MODES, PROPAGATIONS, _COPY_MODES,
                                   _CONSISTENCY_MODES)):
            if opt in group:
                counts[i] += 1
                break
        else:
            return False
    return all(n <= 1 for n in counts)


def clean(path: str) -> str:
    """path.Clean: normalized, one leading slash at most."""
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("/") else out


def parse_bind(raw: str) -> MountPoint:
    """One `HostConfig.Binds` entry, by dockerd's rules (ParseMountRaw)."""
    if not isinstance(raw, str):
        raise InvalidParameter("Binds must be a list of strings")
    parts = raw.split(":", 3)
    if not parts[0]:
        raise InvalidParameter(f"invalid volume specification: '{raw}'")
    source, mode = "", ""
    if len(parts) == 1:
        target = parts[0]
    elif len(parts) == 2:
        if _valid_mode(parts[1]):  # /dest:rw is not a volume
            raise InvalidParameter(f"invalid volume specification: '{raw}'")
        source, target = parts
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise InvalidParameter(f"invalid volume specification: '{raw}'")
    if not _valid_mode(mode):
        raise InvalidParameter(f"invalid mode: {mode}")
    opts = mode.split(",") if mode else []
    kind = BIND if posixpath.isabs(source) else VOLUME
    propagation = next((o for o in opts if o in PROPAGATIONS), "")
    try:
        _check_target(kind, target)
        if kind == VOLUME and propagation:
            raise _mount_config_error(kind, "field BindOptions must not be specified")
    except InvalidParameter as exc:
        raise InvalidParameter(f"invalid volume specification: '{raw}': {exc.message}") from None
    mp = MountPoint(type=kind, destination=clean(target), rw="ro" not in opts)
    if kind == BIND:
        mp.source = clean(source)
        mp.propagation = propagation or DEFAULT_PROPAGATION
        mp.mode = mode
        mp.create_source = True
    else:
        if source:
            validate_volume_name(source)
        mp.name = source
        mp.anonymous = not source
        mp.driver = LOCAL_DRIVER
        mp.mode = mode or "z"
        mp.copy_data = "nocopy" not in opts
    return mp


def _opt_dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParameter(f"{where} must be an object")
    return value


def parse_mount(spec: Any) -> MountPoint:
    """One `HostConfig.Mounts` entry (ParseMountSpec). A bind source's existence is checked
    by the caller, on the host."""
    if not isinstance(spec, dict):
        raise InvalidParameter("Mounts must be a list of objects")
    kind = spec.get("Type") or ""
    source = spec.get("Source") or ""
    target = spec.get("Target") or ""
    if not isinstance(kind, str) or not isinstance(source, str) or not isinstance(target, str):
        raise InvalidParameter("invalid mount config: Type, Source and Target are strings")
    readonly = bool(spec.get("ReadOnly"))
    bind_opts = spec.get("BindOptions")
    volume_opts = spec.get("VolumeOptions")
    tmpfs_opts = spec.get("TmpfsOptions")
    if kind not in (BIND, VOLUME, TMPFS):
        raise _mount_config_error(kind, "mount type unknown")
    _check_target(kind, target)
    mp = MountPoint(type=kind, destination=clean(target), rw=not readonly)
    if kind == BIND:
        if not source:
            raise _mount_config_error(kind, "field Source must not be empty")
        bopts = _opt_dict(bind_opts, "BindOptions")
        propagation = bopts.get("Propagation") or ""
        if propagation and propagation not in PROPAGATIONS:
            raise _mount_config_error(kind, f"invalid propagation mode: {propagation}")
        if volume_opts is not None:
            raise _mount_config_error(kind, "field VolumeOptions must not be specified")
        _check_absolute(kind, source)
        mp.source = clean(source)
        mp.propagation = propagation or DEFAULT_PROPAGATION
        mp.create_source = bool(bopts.get("CreateMountpoint"))
    elif kind == VOLUME:
        if bind_opts is not None:
            raise _mount_config_error(kind, "field BindOptions must not be specified")
        vopts = _opt_dict(volume_opts, "VolumeOptions")
        subpath = vopts.get("Subpath") or ""
        if subpath:
            if not source:
                raise _mount_config_error(kind, "must not set Subpath when using anonymous "
                                                "volumes")
            norm = posixpath.normpath(subpath)
            if posixpath.isabs(subpath) or norm == ".." or norm.startswith("../"):
                raise _mount_config_error(kind, "subpath must be a relative path within the "
                                                "volume")
            mp.subpath = norm
        if readonly and not source:
            raise _mount_config_error(kind, "must not set ReadOnly mode when using anonymous "
                                            "volumes")
        if source:
            validate_volume_name(source)
        driver_cfg = _opt_dict(vopts.get("DriverConfig"), "DriverConfig")
        mp.name = source
        mp.anonymous = not source
        mp.driver = driver_cfg.get("Name") or LOCAL_DRIVER
        mp.mode = "z"
        mp.copy_data = not vopts.get("NoCopy")
        mp.volume_labels = dict(_opt_dict(vopts.get("Labels"), "Labels"))
        mp.volume_options = dict(_opt_dict(driver_cfg.get("Options"), "DriverConfig.Options"))
    else:
        if bind_opts is not None:
            raise _mount_config_error(kind, "field BindOptions must not be specified")
        if source:
            raise _mount_config_error(kind, "field Source must not be specified")
        mp.tmpfs_options = convert_tmpfs_options(_opt_dict(tmpfs_opts, "TmpfsOptions"),
                                                 readonly)
    return mp


def convert_tmpfs_options(opts: dict[str, Any], readonly: bool) -> str:
    """TmpfsOptions → mount data: `ro`, `mode=<octal>`, `size=<n>[kmg]`, exec/noexec."""
    out = ["ro"] if readonly else []
    mode = opts.get("Mode") or 0
    if not isinstance(mode, int) or mode < 0:
        raise _mount_config_error(TMPFS, f"invalid tmpfs mode: {mode}")
    if mode:
        out.append(f"mode={mode:o}")
    size = opts.get("SizeBytes") or 0
    if not isinstance(size, int):
        raise _mount_config_error(TMPFS, f"invalid tmpfs size: {size}")
    if size:
        suffix = ""
        for unit, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, unit
                break
        out.append(f"size={size}{suffix}")
    for opt in opts.get("Options") or []:
        if not isinstance(opt, list) or not 1 <= len(opt) <= 2:
            raise _mount_config_error(TMPFS, "invalid option array length")
        if opt[0] not in ("exec", "noexec"):
            raise _mount_config_error(TMPFS, f"invalid option: {opt[0]}")
        out.append("=".join(str(o) for o in opt))
    return ",".join(out)


def tmpfs_mount_options(data: str) -> list[str]:
    """dockerd's defaults (noexec, nosuid, nodev) merged with a tmpfs's own options: a flag
    drops its opposite, a key=value replaces the same key."""
    out = list(TMPFS_DEFAULTS)
    for opt in (o.strip() for o in data.split(",")):
        if not opt:
            continue
        key = opt.split("=", 1)[0]
        opposite = _OPPOSITES.get(opt)
        out = [o for o in out if o != opposite and o != opt and o.split("=", 1)[0] != key]
        out.append(opt)
    return out


def parse_tmpfs(tmpfs: Any) -> list[MountPoint]:
    """`HostConfig.Tmpfs` ({"/dest": "size=64m,exec"}): mounts not shown in inspect."""
    if tmpfs is None:
        return []
    if not isinstance(tmpfs, dict) or not all(isinstance(v, str) for v in tmpfs.values()):
        raise InvalidParameter("Tmpfs must be a map of strings")
    out = []
    for dest, data in tmpfs.items():
        _check_target(TMPFS, dest)
        out.append(MountPoint(type=TMPFS, destination=clean(dest), tmpfs_options=data))
    return out


def inherit(mounts: list[MountPoint], mode: str) -> list[MountPoint]:
    """`VolumesFrom` (`<container>[:ro|rw]`): the other container's volumes and binds."""
    out = []
    for m in mounts:
        if m.type == TMPFS:
            continue
        copy = MountPoint.from_record(m.to_record())
        copy.copy_data = False
        if mode in _RW_MODES:
            copy.rw = mode == "rw"
            copy.mode = mode
        out.append(copy)
    return out


def parse_volumes_from(entry: Any) -> tuple[str, str]:
    if not isinstance(entry, str) or not entry:
        raise InvalidParameter("volumes-from specification cannot be an empty string")
    ref, _, mode = entry.partition(":")
    if mode and (not _valid_mode(mode) or any(o in PROPAGATIONS or o in _COPY_MODES
                                              for o in mode.split(","))):
        raise InvalidParameter(f"invalid mode: {mode}")
    return ref, mode


def plan_mounts(config_volumes: Any, binds: Any, mounts: Any, tmpfs: Any,
                inherited: list[MountPoint] | None = None) -> list[MountPoint]:
    """Every mount of a new container, by destination, as dockerd registers them: inherited
    ones (VolumesFrom) and Config.Volumes give way to binds and mounts; two binds or mounts
    on one destination are an error. Also checks HostConfig.Tmpfs for clashes; those tmpfs
    mounts are not part of the result (inspect does not show them)."""
    if binds is not None and not isinstance(binds, list):
        raise InvalidParameter("Binds must be a list of strings")
    if mounts is not None and not isinstance(mounts, list):
        raise InvalidParameter("Mounts must be a list of objects")
    explicit: dict[str, MountPoint] = {}
    for mp in [parse_bind(b) for b in binds or []] + [parse_mount(m) for m in mounts or []]:
        if mp.destination in explicit:
            raise InvalidParameter(f"Duplicate mount point: {mp.destination}")
        explicit[mp.destination] = mp
    tmpfs_dests = set()
    for mp in parse_tmpfs(tmpfs):
        if mp.destination in explicit:
            raise InvalidParameter(f"Duplicate mount point: {mp.destination}")
        tmpfs_dests.add(mp.destination)
    result: dict[str, MountPoint] = {}
    if config_volumes is not None and not isinstance(config_volumes, dict):
        raise InvalidParameter("Volumes must be a map of paths")
    for dest in config_volumes or {}:
        if not isinstance(dest, str) or not posixpath.isabs(dest):
            raise InvalidParameter(f"invalid volume specification: '{dest}': invalid mount "
                                   f"config for type \"volume\": invalid mount path: '{dest}' "
                                   "mount path must be absolute")
        path = clean(dest)
        if path == "/":
            raise InvalidParameter(f"invalid volume specification: '{dest}': invalid "
                                   "specification: destination can't be '/'")
        if path in explicit or path in tmpfs_dests:
            continue
        result[path] = MountPoint(type=VOLUME, destination=path, driver=LOCAL_DRIVER,
                                  anonymous=True, copy_data=True)
    for mp in inherited or []:
        if mp.destination not in explicit and mp.destination not in tmpfs_dests:
            result[mp.destination] = mp
    result.update(explicit)
    return sorted(result.values(), key=lambda m: m.destination)


def mounts_of(record: list[dict[str, Any]]) -> list[MountPoint]:
    return [MountPoint.from_record(r) for r in record]
