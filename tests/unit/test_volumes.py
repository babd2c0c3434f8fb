"""Volume and mount rules: Binds/Mounts parsing, names, options, filters, spec entries.

Expected messages and shapes are dockerd 20.10's answers to the same requests.
"""

from pathlib import Path

import pytest

from stowd.engine import mountspec
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.mountspec import (
    ANONYMOUS_LABEL,
    MountPoint,
    parse_bind,
    parse_mount,
    plan_mounts,
)
from stowd.engine.runtime.spec import ProcessUser, SpecInput, build_spec
from stowd.engine.volumes import Volume, copy_up, prune_all, resolve_in_root, select

# --- names and options --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "data", "my_vol.1", "a-b", "0x", "A" * 200])
def test_valid_volume_names(name: str) -> None:
    mountspec.validate_volume_name(name)


def test_volume_name_messages() -> None:
    with pytest.raises(InvalidParameter, match=r"^create a: volume name is too short, names "
                                               r"should be at least two alphanumeric"):
        mountspec.validate_volume_name("a")
    for bad in ("-bad", "a/b", "_x", ".x", "a b", "ü1"):
        with pytest.raises(InvalidParameter) as exc:
            mountspec.validate_volume_name(bad)
        assert exc.value.message == (
            f'create {bad}: "{bad}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path")


def test_only_the_local_driver() -> None:
    assert mountspec.check_driver("v", "") == "local"
    assert mountspec.check_driver("v", "local") == "local"
    with pytest.raises(NotFound, match=r'^create v: error looking up volume plugin foo: '
                                       r'plugin "foo" not found$'):
        mountspec.check_driver("v", "foo")


def test_local_driver_options() -> None:
    opts = {"type": "tmpfs", "device": "tmpfs", "o": "size=10m"}
    assert mountspec.validate_volume_options("v", opts) == opts
    assert mountspec.validate_volume_options("v", None) == {}
    with pytest.raises(InvalidParameter, match=r'^create v: invalid option: "bogus"$'):
        mountspec.validate_volume_options("v", {"bogus": "1"})
    with pytest.raises(InvalidParameter, match='missing required option: "device"'):
        mountspec.validate_volume_options("v", {"o": "bind"})
    with pytest.raises(InvalidParameter, match='missing required option: "type"'):
        mountspec.validate_volume_options("v", {"device": "/x"})
    with pytest.raises(InvalidParameter, match="quota"):
        mountspec.validate_volume_options("v", {"size": "10m"})


# --- Binds ----------------------------------------------------------------------------------


def test_bind_forms() -> None:
    named = parse_bind("data:/data")
    assert (named.type, named.name, named.destination, named.mode, named.rw) == (
        "volume", "data", "/data", "z", True)
    assert named.copy_data and not named.anonymous and named.propagation == ""

    host = parse_bind("/srv/x/:/x:ro")
    assert (host.type, host.source, host.destination, host.mode, host.rw) == (
        "bind", "/srv/x", "/x", "ro", False)
    assert host.propagation == "rprivate" and host.create_source

    anon = parse_bind("/anon")
    assert (anon.type, anon.name, anon.anonymous, anon.mode) == ("volume", "", True, "z")

    shared = parse_bind("/tmp:/x:rshared,ro,z")
    assert (shared.propagation, shared.rw, shared.mode) == ("rshared", False, "rshared,ro,z")

    nocopy = parse_bind("v1:/x:ro,nocopy")
    assert not nocopy.copy_data and not nocopy.rw and nocopy.mode == "ro,nocopy"


@pytest.mark.parametrize("raw,message", [
    ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
    ("/foo:rw", "invalid volume specification: '/foo:rw'"),
    (":/x", "invalid volume specification: ':/x'"),
    ("v1:/x:foo", "invalid mode: foo"),
    ("/tmp:/x:rw,ro", "invalid mode: rw,ro"),
    ("v1:rel", "invalid volume specification: 'v1:rel': invalid mount config for type "
               "\"volume\": invalid mount path: 'rel' mount path must be absolute"),
    ("/tmp:/", "invalid volume specification: '/tmp:/': invalid mount config for type "
               "\"bind\": invalid specification: destination can't be '/'"),
    ("v1:/x:rshared", "invalid volume specification: 'v1:/x:rshared': invalid mount config "
                      "for type \"volume\": field BindOptions must not be specified"),
    ("relative", "invalid mount path: 'relative' mount path must be absolute"),
    ("-v1:/x", 'create -v1: "-v1" includes invalid characters'),
])
def test_bad_binds(raw: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as exc:
        parse_bind(raw)
    assert message in exc.value.message


# --- Mounts ---------------------------------------------------------------------------------


def test_mount_forms() -> None:
    vol = parse_mount({"Type": "volume", "Source": "n2", "Target": "/n2/",
                       "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"},
                                         "DriverConfig": {"Options": {"type": "tmpfs",
                                                                      "device": "tmpfs"}}}})
    assert (vol.type, vol.name, vol.destination, vol.mode, vol.copy_data) == (
        "volume", "n2", "/n2", "z", False)
    assert vol.volume_labels == {"a": "b"}
    assert vol.volume_options == {"type": "tmpfs", "device": "tmpfs"}

    bind = parse_mount({"Type": "bind", "Source": "/tmp", "Target": "/b",
                        "BindOptions": {"Propagation": "rshared"}})
    assert (bind.source, bind.propagation, bind.mode, bind.create_source) == (
        "/tmp", "rshared", "", False)
    assert parse_mount({"Type": "bind", "Source": "/tmp", "Target": "/b"}).propagation == \
        "rprivate"

    tmpfs = parse_mount({"Type": "tmpfs", "Target": "/t",
                         "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1770}})
    assert (tmpfs.tmpfs_options, tmpfs.source, tmpfs.rw) == ("mode=1770,size=1m", "", True)
    ro = parse_mount({"Type": "tmpfs", "Target": "/t", "ReadOnly": True,
                      "TmpfsOptions": {"SizeBytes": 1000, "Options": [["exec"]]}})
    assert ro.tmpfs_options == "ro,size=1000,exec" and not ro.rw

    anon = parse_mount({"Type": "volume", "Target": "/a"})
    assert anon.anonymous and anon.name == "" and anon.copy_data


@pytest.mark.parametrize("spec,message", [
    ({"Type": "foo", "Target": "/x"}, 'invalid mount config for type "foo": mount type unknown'),
    ({"Type": "bind", "Target": "/x"},
     'invalid mount config for type "bind": field Source must not be empty'),
    ({"Type": "bind", "Source": "rel", "Target": "/x"},
     "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be "
     "absolute"),
    ({"Type": "bind", "Source": "/tmp", "Target": "/x", "VolumeOptions": {"NoCopy": True}},
     'invalid mount config for type "bind": field VolumeOptions must not be specified'),
    ({"Type": "bind", "Source": "/tmp", "Target": "/x", "BindOptions": {"Propagation": "no"}},
     'invalid mount config for type "bind": invalid propagation mode: no'),
    ({"Type": "volume", "Source": "v1", "Target": "/x",
      "BindOptions": {"Propagation": "rshared"}},
     'invalid mount config for type "volume": field BindOptions must not be specified'),
    ({"Type": "volume", "Target": "/x", "ReadOnly": True},
     'invalid mount config for type "volume": must not set ReadOnly mode when using '
     "anonymous volumes"),
    ({"Type": "tmpfs", "Source": "x", "Target": "/x"},
     'invalid mount config for type "tmpfs": field Source must not be specified'),
    ({"Type": "tmpfs", "Target": "x"},
     "invalid mount config for type \"tmpfs\": invalid mount path: 'x' mount path must be "
     "absolute"),
    ({"Type": "tmpfs", "Target": ""},
     'invalid mount config for type "tmpfs": field Target must not be empty'),
    ({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"Options": [["size", "1m"]]}},
     'invalid mount config for type "tmpfs": invalid option: size'),
    ({"Type": "volume", "Source": "-x", "Target": "/x"}, 'create -x: "-x" includes invalid'),
    ({"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"Subpath": "../a"}},
     "subpath must be a relative path"),
])
def test_bad_mounts(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameter) as exc:
        parse_mount(spec)
    assert message in exc.value.message


def test_tmpfs_flags_merge_over_dockerd_defaults() -> None:
    assert mountspec.tmpfs_mount_options("") == ["noexec", "nosuid", "nodev"]
    assert mountspec.tmpfs_mount_options("rw,size=2m,exec") == [
        "nosuid", "nodev", "rw", "size=2m", "exec"]
    assert mountspec.tmpfs_mount_options("size=1m,size=2m,mode=1770") == [
        "noexec", "nosuid", "nodev", "size=2m", "mode=1770"]


# --- the plan -------------------------------------------------------------------------------


def test_plan_merges_like_dockerd() -> None:
    plan = plan_mounts(
        {"/anon": {}, "/data": {}, "/t2": {}, "/mnt/": {}},
        ["v1:/data", "/tmp:/h:ro"],
        [{"Type": "tmpfs", "Target": "/t"}, {"Type": "bind", "Source": "/srv", "Target": "/mnt"}],
        {"/t2": "size=1m"},
    )
    by_dest = {m.destination: m for m in plan}
    assert sorted(by_dest) == ["/anon", "/data", "/h", "/mnt", "/t"]
    assert by_dest["/anon"].anonymous and by_dest["/anon"].mode == ""  # Config.Volumes
    assert by_dest["/data"].name == "v1"  # the bind wins over the image's VOLUME
    assert by_dest["/mnt"].type == "bind"
    assert by_dest["/t"].type == "tmpfs"


@pytest.mark.parametrize("binds,mounts,tmpfs", [
    (["v1:/x", "v2:/x"], None, None),
    (["v1:/x"], [{"Type": "tmpfs", "Target": "/x"}], None),
    (None, [{"Type": "tmpfs", "Target": "/x"}, {"Type": "tmpfs", "Target": "/x/"}], None),
    (["v1:/x"], None, {"/x": ""}),
])
def test_duplicate_mount_points(binds: object, mounts: object, tmpfs: object) -> None:
    with pytest.raises(InvalidParameter, match=r"^Duplicate mount point: /x$"):
        plan_mounts(None, binds, mounts, tmpfs)


def test_volumes_from_inherits_and_yields_to_binds() -> None:
    theirs = [MountPoint(type="volume", destination="/a", name="va", rw=True, mode="z",
                         copy_data=True),
              MountPoint(type="bind", destination="/b", source="/srv", rw=True),
              MountPoint(type="tmpfs", destination="/t")]
    inherited = mountspec.inherit(theirs, "ro")
    assert [(m.destination, m.rw, m.mode, m.copy_data) for m in inherited] == [
        ("/a", False, "ro", False), ("/b", False, "ro", False)]
    plan = plan_mounts(None, ["/host:/b"], None, None, inherited)
    assert [(m.destination, m.type, m.source or m.name) for m in plan] == [
        ("/a", "volume", "va"), ("/b", "bind", "/host")]
    assert mountspec.parse_volumes_from("c1:ro") == ("c1", "ro")
    with pytest.raises(InvalidParameter):
        mountspec.parse_volumes_from("c1:rshared")


def test_mount_point_records_round_trip() -> None:
    mp = parse_bind("v1:/x:ro")
    assert MountPoint.from_record({**mp.to_record(), "future_field": 1}) == mp


# --- list and prune filters -----------------------------------------------------------------


def _vol(name: str, labels: dict[str, str] | None = None,
         options: dict[str, str] | None = None) -> Volume:
    return Volume(name=name, driver="local", created_at="2024-01-01T00:00:00Z", labels=labels,
                  options=options)


def test_list_filters() -> None:
    vols = [_vol("data1", {"env": "prod"}), _vol("data2", {"env": "dev"}), _vol("cache")]
    names = lambda f, used=frozenset(): [v.name for v in select(vols, f, set(used))]  # noqa: E731
    assert names({}) == ["data1", "data2", "cache"]
    assert names({"name": ["data"]}) == ["data1", "data2"]
    assert names({"name": ["^c"]}) == ["cache"]
    assert names({"label": ["env"]}) == ["data1", "data2"]
    assert names({"label": ["env=dev"]}) == ["data2"]
    assert names({"label!": ["env=dev"]}) == ["data1", "cache"]
    assert names({"driver": ["local"]}) == ["data1", "data2", "cache"]
    assert names({"driver": ["loc"]}) == []
    assert names({"dangling": ["true"]}, {"data1"}) == ["data2", "cache"]
    assert names({"dangling": ["0"]}, {"data1"}) == ["data1"]
    with pytest.raises(InvalidParameter, match="invalid filter 'dangling=maybe'"):
        names({"dangling": ["maybe"]})


def test_prune_scope_by_api_version() -> None:
    assert prune_all({}, (1, 41)) is True
    assert prune_all({}, (1, 42)) is False
    assert prune_all({"all": ["true"]}, (1, 44)) is True
    assert prune_all({"all": ["0"]}, (1, 44)) is False
    with pytest.raises(InvalidParameter):
        prune_all({"all": ["true"]}, (1, 41))
    with pytest.raises(InvalidParameter):
        prune_all({"all": ["yes"]}, (1, 44))
    assert _vol("x", {ANONYMOUS_LABEL: ""}).anonymous and not _vol("x").anonymous
    assert _vol("x", options={"type": "tmpfs", "device": "tmpfs"}).needs_mount
    assert not _vol("x").needs_mount


# --- copy-up --------------------------------------------------------------------------------


def test_resolve_in_root_stays_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real" / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/real")
    (root / "rel").symlink_to("real/../real/etc")
    (root / "escape").symlink_to("../../../..")
    assert resolve_in_root(root, "/abs/etc") == root / "real" / "etc"
    assert resolve_in_root(root, "/rel") == root / "real" / "etc"
    assert resolve_in_root(root, "/escape/real") == root / "real"
    assert resolve_in_root(root, "/missing/x") is None


def test_copy_up_fills_only_an_empty_volume(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "sub").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    (root / "etc" / "sub" / "f").write_text("f")
    (root / "etc").chmod(0o750)
    vol = tmp_path / "vol"
    vol.mkdir()
    assert copy_up(root, "/etc", vol)
    assert (vol / "passwd").read_text() == "root:x:0:0\n" and (vol / "sub" / "f").exists()
    assert vol.stat().st_mode & 0o777 == 0o750
    (root / "etc" / "new").write_text("n")
    assert not copy_up(root, "/etc", vol)  # not empty any more
    assert not (vol / "new").exists()
    assert not copy_up(root, "/nothing", tmp_path / "vol")


# --- OCI entries ----------------------------------------------------------------------------


def _spec_input(**kw: object) -> SpecInput:
    return SpecInput(rootfs="/r", args=["sh"], env=[], cwd="/", user=ProcessUser(),
                     hostname="h", domainname="", tty=False, open_stdin=False,
                     cgroups_path="/x", hosts_path="/f/hosts", hostname_path="/f/hostname",
                     resolv_conf_path="/f/resolv.conf", **kw)  # type: ignore[arg-type]


def test_spec_orders_mounts_parents_first() -> None:
    spec = build_spec(_spec_input(
        binds=[{"source": "/v/etc", "destination": "/etc", "readonly": False},
               {"source": "/h", "destination": "/h", "readonly": True,
                "propagation": "rslave"}],
        tmpfs=[{"destination": "/dev/shm", "options": ["nosuid", "size=1m"]}]))
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/etc") < dests.index("/etc/hosts")
    assert dests.count("/dev/shm") == 1  # the user's replaces the default
    shm = next(m for m in spec["mounts"] if m["destination"] == "/dev/shm")
    assert shm == {"destination": "/dev/shm", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "size=1m"]}
    h = next(m for m in spec["mounts"] if m["destination"] == "/h")
    assert h["options"] == ["rbind", "rslave", "ro"]
    assert spec["linux"]["rootfsPropagation"] == "rslave"


def test_spec_user_hosts_file_wins() -> None:
    spec = build_spec(_spec_input(
        binds=[{"source": "/mine", "destination": "/etc/hosts", "readonly": True}]))
    hosts = [m for m in spec["mounts"] if m["destination"] == "/etc/hosts"]
    assert [m["source"] for m in hosts] == ["/mine"]
    assert "rootfsPropagation" not in spec["linux"]
