"""Seccomp: Docker's default profile (an allowlist) and Docker's profile format → OCI.

The default profile is built here from the facts of Docker's published default profile
(moby `profiles/seccomp/default.json`): `defaultAction` ERRNO (EPERM), the allowed
syscalls listed, some only with a capability, on an architecture, or from a kernel
version (ptrace from 4.8), `clone` only without namespace flags and `clone3` answering
ENOSYS (so libc falls back to `clone`) unless the container holds CAP_SYS_ADMIN. As
since Docker 25, the io_uring syscalls are not in the list (denied).

Why not read `/usr/share/containers/seccomp.json` (containers-common) at run time: that
is podman's profile, not Docker's. It answers ENOSYS by default and allows `mount`,
`unshare`, `setns`, `keyctl`, `clone3` and `ptrace` without the capabilities Docker
requires, so a container would not be confined as under dockerd.

Custom profiles (`--security-opt seccomp=<file>`: the CLI sends the file's JSON) are in
the same Docker format and go through the same conversion (`to_oci`), as dockerd's
`setupSeccomp` does: entries are kept or dropped by their `includes`/`excludes` of
capabilities, architectures and minimum kernel; everything else is used as given.
"""

import json
import platform
import re
from typing import Any

from stowd.engine.errors import InvalidParameter

EPERM = 1
ENOSYS = 38

# Go's GOARCH names (what profiles' includes/excludes use) by `uname -m`.
_GOARCH = {
    "x86_64": "amd64", "i386": "386", "i686": "386", "aarch64": "arm64", "armv7l": "arm",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64",
}
# GOARCH → the seccomp architecture an archMap entry is keyed by.
_SECCOMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64", "386": "SCMP_ARCH_X86", "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64", "mips64": "SCMP_ARCH_MIPS64",
}

_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup
dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2
epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat
faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2
fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork
fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage
getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock
munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2
pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename
renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount
statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

# Allowed only to a container holding the capability.
_WITH_CAP: list[tuple[str, list[str]]] = [
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ("CAP_SYS_ADMIN", [
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
        "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
        "umount2", "unshare"]),
    ("CAP_SYS_BOOT", ["reboot"]),
    ("CAP_SYS_CHROOT", ["chroot"]),
    ("CAP_SYS_MODULE", ["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", ["acct"]),
    ("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                        "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
    ("CAP_SYS_TIME", ["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
    ("CAP_SYS_NICE", ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", ["syslog"]),
    ("CAP_BPF", ["bpf"]),
    ("CAP_PERFMON", ["perf_event_open"]),
]

# Allowed on one family of architectures only (GOARCH names).
_ON_ARCH: list[tuple[list[str], list[str]]] = [
    (["ppc64le"], ["sync_file_range2", "swapcontext"]),
    (["arm", "arm64"], ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
                        "breakpoint", "cacheflush", "set_tls"]),
    (["amd64", "x32"], ["arch_prctl"]),
    (["amd64", "x32", "386"], ["modify_ldt"]),
    (["s390", "s390x"], ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]),
    (["riscv64"], ["riscv_flush_icache"]),
]

# personality(2) personas Docker allows: PER_LINUX, UNAME26, PER_LINUX32, UNAME26|PER_LINUX32,
# and the query 0xffffffff.
_PERSONAS = [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]

# The namespace flags of clone(2) (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET):
# without CAP_SYS_ADMIN, clone is allowed only when none of them is set.
CLONE_NAMESPACE_MASK = 0x7E020000

AF_VSOCK = 40


def _docker_default_profile() -> dict[str, Any]:
    calls: list[dict[str, Any]] = [{"names": list(_ALLOWED), "action": "SCMP_ACT_ALLOW"}]
    calls.append({"names": ["process_vm_readv", "process_vm_writev", "ptrace"],
                  "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}})
    calls.append({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]})
    for persona in _PERSONAS:
        calls.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]})
    for arches, names in _ON_ARCH:
        calls.append({"names": names, "action": "SCMP_ACT_ALLOW",
                      "includes": {"arches": arches}})
    for cap, names in _WITH_CAP:
        calls.append({"names": names, "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}})
    # clone's flags are its first argument, its second on s390.
    calls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": CLONE_NAMESPACE_MASK,
                            "op": "SCMP_CMP_MASKED_EQ"}],
                  "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}})
    calls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 1, "value": CLONE_NAMESPACE_MASK,
                            "op": "SCMP_CMP_MASKED_EQ"}],
                  "includes": {"arches": ["s390", "s390x"]},
                  "excludes": {"caps": ["CAP_SYS_ADMIN"]}})
    # ENOSYS, not EPERM: glibc then falls back to clone, whose flags the filter can read.
    calls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
                  "excludes": {"caps": ["CAP_SYS_ADMIN"]}})
    arch_map = [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86",
                                                                  "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
        {"architecture": "SCMP_ARCH_PPC64LE", "subArchitectures": []},
        {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": []},
    ]
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM, "archMap": arch_map,
            "syscalls": calls}


DOCKER_DEFAULT_PROFILE = _docker_default_profile()


def _kernel_at_least(release: str, wanted: str) -> bool:
    def parts(text: str) -> tuple[int, ...]:
        m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
        return tuple(int(g or 0) for g in m.groups()) if m else (0, 0, 0)
    return parts(release) >= parts(wanted)


def to_oci(profile: dict[str, Any], capabilities: list[str], machine: str | None = None,
           kernel: str | None = None) -> dict[str, Any] | None:
    """A profile in Docker's format → the OCI `linux.seccomp` for a container holding
    `capabilities` (its bounding set), as dockerd's setupSeccomp; None means no filter."""
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None  # no default action and no syscalls: Docker treats it as unconfined
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidParameter("both 'architectures' and 'archMap' are specified in the "
                               "seccomp profile, use either 'architectures' or 'archMap'")
    machine = machine or platform.machine()
    kernel = kernel or platform.release()
    goarch = _GOARCH.get(machine, machine)
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction") or "SCMP_ACT_ALLOW"}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == _SECCOMP_ARCH.get(goarch):
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
    if arches:
        out["architectures"] = arches
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]
    held = set(capabilities)
    syscalls = []
    for call in profile.get("syscalls") or []:
        names = list(call.get("names") or [])
        if call.get("name"):
            if names:
                raise InvalidParameter("'name' and 'names' were specified in the seccomp "
                                       "profile, use either 'name' or 'names'")
            names = [call["name"]]
        excludes = call.get("excludes") or {}
        includes = call.get("includes") or {}
        if goarch in (excludes.get("arches") or []):
            continue
        if any(c in held for c in excludes.get("caps") or []):
            continue
        if excludes.get("minKernel") and _kernel_at_least(kernel, excludes["minKernel"]):
            continue
        if includes.get("arches") and goarch not in includes["arches"]:
            continue
        if not all(c in held for c in includes.get("caps") or []):
            continue
        if includes.get("minKernel") and not _kernel_at_least(kernel, includes["minKernel"]):
            continue
        rule: dict[str, Any] = {"names": names, "action": call.get("action")}
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            rule["args"] = [{"index": a.get("index", 0), "value": a.get("value", 0),
                              "valueTwo": a.get("valueTwo", 0), "op": a.get("op")}
                             for a in call["args"]]
        syscalls.append(rule)
    out["syscalls"] = syscalls
    return out


def parse_profile(text: str) -> dict[str, Any]:
    """A custom profile as the CLI sends it (the file's content); InvalidParameter if it
    is not a profile, with dockerd's words."""
    try:
        profile = json.loads(text)
    except ValueError as exc:
        raise InvalidParameter(f"Decoding seccomp profile failed: {exc}") from None
    if not isinstance(profile, dict):
        raise InvalidParameter("Decoding seccomp profile failed: json: cannot unmarshal "
                               f"{type(profile).__name__} into Go value of type seccomp.Seccomp")
    for call in profile.get("syscalls") or []:
        if not isinstance(call, dict) or not call.get("action"):
            raise InvalidParameter("Decoding seccomp profile failed: each syscall entry needs "
                                   "an action")
    return profile

