"""The OCI runtime side: runc/crun under conmon, the OCI spec, seccomp, mounts, libc."""
