"""`docker run` options: create-time rules (options.py), seccomp conversion, and the spec."""

from typing import Any

import pytest

from stowd.engine import options
from stowd.engine.errors import InvalidParameter
from stowd.engine.runtime import seccomp
from stowd.engine.runtime.spec import (
    DEFAULT_CAPABILITIES,
    ProcessUser,
    SpecInput,
    build_spec,
    resources_from_host_config,
)


def _check(hc: dict[str, Any], config: dict[str, Any] | None = None,
           v2: bool = False) -> list[str]:
    return options.check_run_options(hc, config or {}, ("runc",), v2)


@pytest.mark.parametrize(("hc", "message"), [
    ({"PidMode": "foo"}, "invalid PID mode: foo"),
    ({"UTSMode": "foo"}, "invalid UTS mode: foo"),
    ({"UsernsMode": "foo"}, "invalid USER mode: foo"),
    ({"IpcMode": "foo"}, "Invalid IPC mode: foo"),
    ({"IpcMode": "container:"}, "Invalid IPC mode: container:"),
    ({"CgroupnsMode": "foo"}, "invalid cgroup namespace mode: foo"),
    ({"SecurityOpt": ["foo"]}, 'invalid --security-opt 1: "foo"'),
    ({"SecurityOpt": ["foo=bar"]}, 'invalid --security-opt 2: "foo=bar"'),
    ({"SecurityOpt": ["no-new-privileges=maybe"]}, "invalid --security-opt 2"),
    ({"SecurityOpt": ["systempaths=x"]}, 'invalid --security-opt 2: "systempaths=x"'),
    ({"Ulimits": [{"Name": "foo", "Soft": 1, "Hard": 1}]}, "invalid ulimit type: foo"),
    ({"Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 50}]},
     "ulimit soft limit must be less than or equal to hard limit: 100 > 50"),
    ({"DeviceCgroupRules": ["foo"]}, "invalid device cgroup rule format: 'foo'"),
    ({"Devices": [{"PathOnHost": "/dev/null", "CgroupPermissions": "xyz"}]},
     "invalid device mode: xyz"),
    ({"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]},
     'could not select device driver "" with capabilities: [[gpu]]'),
    ({"MemorySwappiness": 200}, "Invalid value: 200, valid memory swappiness range is 0-100"),
    ({"OomScoreAdj": 2000}, "Invalid value 2000, range for oom score adj is [-1000, 1000]"),
    ({"KernelMemory": 10 << 20}, "kernel memory limits are not supported"),
    ({"KernelMemoryTCP": 10 << 20}, "kernel TCP memory limits are not supported"),
    ({"CpuRealtimeRuntime": 2000, "CpuRealtimePeriod": 1000},
     "cpu real-time runtime cannot be higher than cpu real-time period"),
    ({"IOMaximumIOps": 5}, "Invalid QoS settings: linux does not support Maximum IO"),
    ({"CpuPercent": 5}, "CpuCount and CpuPercent are Windows-only"),
    ({"Cgroup": "container:x"}, "HostConfig.Cgroup (joining another container's cgroup)"),
    ({"StorageOpt": {"size": "1G"}},
     "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"),
    ({"Isolation": "hyperv"}, "Invalid isolation: \"hyperv\" - linux only supports 'default'"),
    ({"Runtime": "foo"}, "Unknown runtime specified foo"),
    ({"ExtraHosts": ["foo:bar"]}, 'invalid IP address in add-host: "bar"'),
    ({"Sysctls": {"kernel.foo": "1"}}, "sysctl 'kernel.foo' is not allowed"),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}, "NetworkMode": "host"},
     'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
    ({"Sysctls": {"kernel.shm_rmid_forced": "1"}, "IpcMode": "host"},
     'sysctl "kernel.shm_rmid_forced" is not allowed in the hosts ipc namespace'),
    ({"BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 5}]},
     "Range of blkio weight is from 10 to 1000"),
    ({"MaskedPaths": ["relative"]}, "MaskedPaths must be a list of absolute paths"),
])
def test_refusals_carry_dockerds_words(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        _check(hc)
    assert message in err.value.message


def test_uts_host_conflicts_with_a_hostname() -> None:
    with pytest.raises(InvalidParameter, match="conflicting options: hostname and the UTS"):
        _check({"UTSMode": "host"}, {"Hostname": "x"})


def test_accepted_modes_and_v2_discards_with_dockerds_warnings() -> None:
    hc = {"PidMode": "container:abc", "IpcMode": "shareable", "UTSMode": "host",
          "UsernsMode": "host", "CgroupnsMode": "host", "Isolation": "default",
          "Sysctls": {"net.ipv4.ip_forward": "1", "kernel.msgmax": "1", "fs.mqueue.x": "1"},
          "ExtraHosts": ["gw:host-gateway", "a:10.0.0.1", "b:::1"],
          "SecurityOpt": ["no-new-privileges", "seccomp=unconfined", "label=disable",
                          "apparmor=unconfined", "systempaths=unconfined"],
          "MemorySwappiness": 0, "OomKillDisable": True, "Memory": 1 << 30}
    assert _check(dict(hc)) == []
    v2 = dict(hc)
    warnings = _check(v2, v2=True)
    assert any("swappiness" in w for w in warnings) and v2["MemorySwappiness"] is None
    assert any("OomKillDisable" in w for w in warnings) and v2["OomKillDisable"] is False
    with pytest.raises(InvalidParameter, match="real-time"):
        _check({"CpuRealtimeRuntime": 1000}, v2=True)


def test_security_opt_parsing() -> None:
    sec = options.parse_security_opt(["no-new-privileges:true", "seccomp={\"a\":1}",
                                      "apparmor=p", "label=type:x"])
    assert sec.no_new_privileges and sec.seccomp == '{"a":1}' and sec.apparmor == "p"
    assert sec.labels == ("type:x",)
    assert not options.parse_security_opt(["no-new-privileges=false"]).no_new_privileges


def test_ulimits_merge_daemon_defaults_and_unlimited() -> None:
    defaults = [options.parse_ulimit_flag("nofile=1024:2048"),
                options.parse_ulimit_flag("nproc=50")]
    out = options.rlimits([{"Name": "nofile", "Soft": 100, "Hard": 100}], defaults)
    assert {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100} in out
    assert {"type": "RLIMIT_NPROC", "soft": 50, "hard": 50} in out
    assert options.rlimits([{"Name": "core", "Soft": -1, "Hard": -1}], [])[0]["hard"] == 2**64 - 1
    with pytest.raises(ValueError, match="invalid ulimit type"):
        options.parse_ulimit_flag("foo=1")


def test_device_rules() -> None:
    assert options.parse_device_rule("c 1:3 mr") == {"allow": True, "type": "c", "major": 1,
                                                     "minor": 3, "access": "mr"}
    assert options.parse_device_rule("a *:* rwm") == {"allow": True, "type": "a",
                                                      "access": "rwm"}


# seccomp ---------------------------------------------------------------------------------

def _actions(spec: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c for c in spec["syscalls"] if name in c["names"]]


def test_default_profile_is_an_allowlist_with_dockers_semantics() -> None:
    spec = seccomp.to_oci(seccomp.DOCKER_DEFAULT_PROFILE, DEFAULT_CAPABILITIES,
                          machine="x86_64", kernel="6.1.0")
    assert spec is not None
    assert spec["defaultAction"] == "SCMP_ACT_ERRNO" and spec["defaultErrnoRet"] == 1
    assert spec["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = {n for c in spec["syscalls"]
               if c["action"] == "SCMP_ACT_ALLOW" and not c.get("args") for n in c["names"]}
    assert {"read", "openat", "ptrace", "arch_prctl"} <= allowed
    for denied in ("io_uring_setup", "io_uring_enter", "keyctl", "mount", "unshare", "setns",
                   "kexec_load", "bpf", "reboot", "init_module"):
        assert denied not in allowed, denied
    clone = _actions(spec, "clone")
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                                "op": "SCMP_CMP_MASKED_EQ"}]}]
    assert _actions(spec, "clone3") == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                                         "errnoRet": 38}]
    assert "modify_ldt" in allowed and "set_tls" not in allowed


def test_default_profile_follows_capabilities_arch_and_kernel() -> None:
    caps = [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"]
    spec = seccomp.to_oci(seccomp.DOCKER_DEFAULT_PROFILE, caps, machine="x86_64",
                          kernel="6.1.0")
    assert spec is not None
    names = {n for c in spec["syscalls"] if c["action"] == "SCMP_ACT_ALLOW" for n in c["names"]}
    assert {"mount", "unshare", "setns", "clone3", "chroot"} <= names
    assert not _actions(spec, "clone3")[0]["action"].endswith("ERRNO")
    old = seccomp.to_oci(seccomp.DOCKER_DEFAULT_PROFILE, DEFAULT_CAPABILITIES,
                         machine="x86_64", kernel="4.4.0")
    assert old is not None and not _actions(old, "ptrace")
    s390 = seccomp.to_oci(seccomp.DOCKER_DEFAULT_PROFILE, DEFAULT_CAPABILITIES,
                          machine="s390x", kernel="6.1")
    assert s390 is not None and _actions(s390, "clone")[0]["args"][0]["index"] == 1
    arm = seccomp.to_oci(seccomp.DOCKER_DEFAULT_PROFILE, [], machine="aarch64", kernel="6.1")
    assert arm is not None and arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert _actions(arm, "set_tls") and not _actions(arm, "arch_prctl")


def test_custom_profiles_are_used_as_given() -> None:
    text = ('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],'
            ' "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO"},'
            ' {"names": ["chown"], "action": "SCMP_ACT_LOG", "includes": {"caps": ["CAP_X"]}}]}')
    spec = seccomp.to_oci(seccomp.parse_profile(text), DEFAULT_CAPABILITIES)
    assert spec == {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    assert seccomp.to_oci({}, []) is None
    with pytest.raises(InvalidParameter, match="Decoding seccomp profile failed"):
        seccomp.parse_profile("{bad")
    with pytest.raises(InvalidParameter, match="both 'architectures' and 'archMap'"):
        seccomp.to_oci({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x"],
                        "archMap": [{}]}, [])


def test_the_containers_common_profile_converts(tmp_path: Any) -> None:
    """Profiles in the wild (podman's, as shipped by Debian) go through the same path."""
    import os
    path = "/usr/share/containers/seccomp.json"
    if not os.path.exists(path):
        pytest.skip("golang-github-containers-common not installed")
    with open(path) as f:
        spec = seccomp.to_oci(seccomp.parse_profile(f.read()), DEFAULT_CAPABILITIES)
    assert spec is not None and spec["defaultErrnoRet"] == 38


# the spec ----------------------------------------------------------------------------------

def _inp(**kw: Any) -> SpecInput:
    base: dict[str, Any] = dict(rootfs="/r", args=["sh"], env=[], cwd="/", user=ProcessUser(),
                                hostname="h", domainname="", tty=False, open_stdin=False,
                                cgroups_path="/x/y", hosts_path="/h", hostname_path="/hn",
                                resolv_conf_path="/rc")
    base.update(kw)
    return SpecInput(**base)


def test_spec_defaults_and_seccomp_choices() -> None:
    spec = build_spec(_inp())
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {
        "pid", "ipc", "uts", "mount", "cgroup", "network"}
    assert "seccomp" not in build_spec(_inp(seccomp="unconfined"))["linux"]
    assert "seccomp" not in build_spec(_inp(privileged=True))["linux"]
    custom = build_spec(_inp(seccomp='{"defaultAction":"SCMP_ACT_LOG"}'))["linux"]["seccomp"]
    assert custom == {"defaultAction": "SCMP_ACT_LOG", "syscalls": []}


def test_spec_applies_process_options() -> None:
    spec = build_spec(_inp(no_new_privileges=True, oom_score_adj=500, init_path="/usr/bin/tini",
                           rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}],
                           apparmor="docker-default"))
    proc = spec["process"]
    assert proc["noNewPrivileges"] is True and proc["oomScoreAdj"] == 500
    assert proc["args"] == ["/sbin/docker-init", "--", "sh"]
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}]
    assert proc["apparmorProfile"] == "docker-default"
    init = [m for m in spec["mounts"] if m["destination"] == "/sbin/docker-init"]
    assert init == [{"destination": "/sbin/docker-init", "type": "bind",
                     "source": "/usr/bin/tini", "options": ["bind", "ro"]}]


def test_spec_namespaces_and_shm() -> None:
    spec = build_spec(_inp(namespaces={"pid": "host", "ipc": "/proc/9/ns/ipc", "uts": "host",
                                       "cgroup": "host"}, shm="/data/c/shm"))
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {"ipc": "/proc/9/ns/ipc", "mount": None, "network": None}
    assert "hostname" not in spec  # the host's UTS namespace keeps its name
    shm = [m for m in spec["mounts"] if m["destination"] == "/dev/shm"]
    assert shm == [{"destination": "/dev/shm", "type": "bind", "source": "/data/c/shm",
                    "options": ["rbind", "rprivate"]}]
    none = build_spec(_inp(shm="none"))
    assert not [m for m in none["mounts"] if m["destination"] == "/dev/shm"]


def test_spec_paths_devices_sysctls_annotations() -> None:
    spec = build_spec(_inp(masked_paths=["/proc/x"], readonly_paths=[],
                           devices=[{"path": "/dev/a", "type": "c", "major": 1, "minor": 3}],
                           device_rules=[{"allow": True, "type": "c", "major": 1, "minor": 3,
                                          "access": "rw"}],
                           sysctls={"net.ipv4.ip_forward": "1"}, labels={"l": "1"},
                           annotations={"a": "2"}))
    linux = spec["linux"]
    assert linux["maskedPaths"] == ["/proc/x"] and linux["readonlyPaths"] == []
    assert linux["devices"][0]["path"] == "/dev/a"
    assert linux["resources"]["devices"][-1]["access"] == "rw"
    assert linux["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert spec["annotations"] == {"l": "1", "a": "2"}
    free = build_spec(_inp(systempaths_unconfined=True))["linux"]
    assert "maskedPaths" not in free and "readonlyPaths" not in free
    priv = build_spec(_inp(privileged=True))
    assert "maskedPaths" not in priv["linux"]
    sys_mount = next(m for m in priv["mounts"] if m["destination"] == "/sys")
    assert "rw" in sys_mount["options"]


def test_resources_carry_memory_and_realtime_options() -> None:
    out = resources_from_host_config({"MemorySwappiness": 0, "OomKillDisable": True,
                                      "CpuRealtimePeriod": 1000,
                                      "CpuRealtimeRuntime": 500})
    assert out["memory"] == {"swappiness": 0, "disableOOMKiller": True}
    assert out["cpu"] == {"realtimePeriod": 1000, "realtimeRuntime": 500}
    assert "memory" not in resources_from_host_config({"MemorySwappiness": -1})
