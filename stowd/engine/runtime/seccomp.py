"""The seccomp filter stowd gives every unprivileged container.

Docker's default profile is an allowlist; what it leaves out are the syscalls below,
some of them unless the container holds a capability. stowd expresses the same
semantics as a denylist (EPERM for the named syscalls, ENOSYS for clone3 so libc falls
back to clone), which keeps the filter small and lets newly added, harmless syscalls work.
"""

import platform
from typing import Any

EPERM = 1
ENOSYS = 38

ALWAYS_DENIED = [
    "add_key", "keyctl", "request_key", "kexec_load", "kexec_file_load", "open_by_handle_at",
    "nfsservctl", "query_module", "create_module", "get_kernel_syms", "uselib", "userfaultfd",
    "ustat", "vm86", "vm86old", "_sysctl", "sysfs", "swapon", "swapoff", "lookup_dcookie",
    "move_pages",
]

DENIED_WITHOUT_CAP: dict[str, list[str]] = {
    "CAP_SYS_ADMIN": [
        "bpf", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "mount",
        "mount_setattr", "move_mount", "name_to_handle_at", "open_tree", "perf_event_open",
        "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
        "umount2", "unshare", "pivot_root",
    ],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": [
        "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace",
    ],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
}

# clone(2) flags that create namespaces; Docker allows them only with CAP_SYS_ADMIN.
CLONE_NAMESPACE_FLAGS = [
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
]

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
}


def default_seccomp_profile(capabilities: list[str]) -> dict[str, Any]:
    held = set(capabilities)
    denied = list(ALWAYS_DENIED)
    for cap, names in DENIED_WITHOUT_CAP.items():
        if cap not in held:
            denied += [n for n in names if n not in denied]
    syscalls: list[dict[str, Any]] = [
        {"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
    ]
    if "CAP_SYS_ADMIN" not in held:
        # clone's flags are its first argument on most arches, its second on s390x.
        flags_arg = 1 if platform.machine() == "s390x" else 0
        for flag in CLONE_NAMESPACE_FLAGS:
            syscalls.append({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": flags_arg, "value": flag, "valueTwo": flag,
                          "op": "SCMP_CMP_MASKED_EQ"}],
            })
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": _ARCHES.get(platform.machine(), []),
        "syscalls": syscalls,
    }
