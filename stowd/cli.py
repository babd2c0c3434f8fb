"""The `stowd` command: `stowd serve` runs the engine; `stowd version` prints versions."""

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from stowd import __version__
from stowd.api.versions import MAX_API_VERSION, MIN_API_VERSION
from stowd.config import DEFAULT_DATA_ROOT, DEFAULT_EXEC_ROOT, DEFAULT_HOST, Settings

if TYPE_CHECKING:
    from stowd.api.server import Sites

log = logging.getLogger("stowd")

DESCRIPTION = f"""\
stowd is a container engine that serves the Docker Engine API (versions {MIN_API_VERSION} to
{MAX_API_VERSION}). Point the docker CLI, docker-py, compose or Testcontainers at its socket
and run real Linux containers with runc and conmon.
"""

EPILOG = """\
examples:
  stowd serve                                  # unix:///run/stowd.sock
  DOCKER_HOST=unix:///run/stowd.sock docker run --rm busybox echo hi
  stowd serve -H unix:///run/stowd.sock -H tcp://127.0.0.1:2375
  stowd serve -H tcp://0.0.0.0:2376 --tlsverify \\
      --tlscacert ca.pem --tlscert server-cert.pem --tlskey server-key.pem

Run 'stowd serve --help' for every daemon flag.
"""

SERVE_EPILOG = """\
listening safely:
  unix sockets are created with mode 0660, owned by root and --group.
  tcp:// on a loopback address (127.0.0.1, ::1, localhost) serves plain HTTP.
  Any other TCP address needs mutual TLS (--tlsverify --tlscacert --tlscert --tlskey:
  clients must present a certificate signed by the CA), or --insecure-tcp.
  On TCP, requests carrying a browser Origin header are refused, and on loopback a Host
  header that is not a loopback name is refused (DNS rebinding).

Containers keep running when stowd stops; the next start picks them up again.
"""

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "warning": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL}


class Parser(argparse.ArgumentParser):
    """argparse with a hint on every usage error: which --help to read."""

    commands: "dict[str, Parser]"

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"Run '{self.prog} --help' for the accepted flags.\n")


def _serve_parser(sub: "argparse._SubParsersAction[Parser]") -> Parser:
    p = sub.add_parser(
        "serve", help="run the engine in the foreground",
        description="Run the engine in the foreground, serving the Docker API on each -H\n"
                    "address until SIGTERM or SIGINT.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    listen = p.add_argument_group("listening")
    listen.add_argument(
        "-H", "--host", action="append", dest="hosts", metavar="ADDR",
        help=f"where to listen, repeatable: unix:///PATH, tcp://IP:PORT or IP:PORT "
             f"(default {DEFAULT_HOST})")
    listen.add_argument("-G", "--group", default="docker",
                        help="group that owns the unix socket, when it exists "
                             "(default docker)")
    listen.add_argument("--tlsverify", action="store_true",
                        help="serve TCP with TLS and require client certificates signed by "
                             "--tlscacert")
    listen.add_argument("--tlscacert", type=Path, metavar="FILE",
                        help="CA certificate (PEM) that signs client certificates")
    listen.add_argument("--tlscert", type=Path, metavar="FILE",
                        help="server certificate (PEM)")
    listen.add_argument("--tlskey", type=Path, metavar="FILE", help="server key (PEM)")
    listen.add_argument("--insecure-tcp", action="store_true",
                        help="allow plain HTTP on a non-loopback TCP address (dangerous: "
                             "anyone who reaches it gets root on this host)")
    engine = p.add_argument_group("engine")
    engine.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, metavar="DIR",
                        help=f"persistent state: database, images, containers "
                             f"(default {DEFAULT_DATA_ROOT})")
    engine.add_argument("--exec-root", type=Path, default=DEFAULT_EXEC_ROOT, metavar="DIR",
                        help=f"runtime state lost at reboot: conmon files, exit files "
                             f"(default {DEFAULT_EXEC_ROOT})")
    engine.add_argument("--runtime", default="runc", choices=["runc", "crun"],
                        help="OCI runtime (default runc; crun needs a cgroup v2 host)")
    engine.add_argument("--cgroup-parent", default="stowd", metavar="NAME",
                        help="cgroup under which containers are placed (default stowd)")
    engine.add_argument("--max-json-body", type=_size, default=64 << 20, metavar="BYTES",
                        help="largest JSON request body accepted, e.g. 64m (default 64m); "
                             "a larger one is answered 413 without being read")
    engine.add_argument("--init-path", default="/usr/bin/tini-static", metavar="PATH",
                        help="the init run as PID 1 by `docker run --init`: a static binary, "
                             "bind-mounted at /sbin/docker-init (default: Debian's tini-static)")
    engine.add_argument("--default-ulimit", action="append", default=[], type=_ulimit,
                        metavar="NAME=SOFT[:HARD]", dest="default_ulimits",
                        help="a ulimit for every container (repeatable); a container's own "
                             "--ulimit of the same name wins")
    engine.add_argument("--seed-busybox", action="store_true",
                        help="when the store has no busybox image, import one made from the "
                             "host's busybox-static binary")
    net = p.add_argument_group("networking")
    net.add_argument("--bridge", default="stowd0", metavar="NAME",
                     help="bridge device of the default network (default stowd0)")
    net.add_argument("--bridge-subnet", default="", metavar="CIDR",
                     help="subnet of the default network (default: a private subnet no route "
                          "of the host uses, chosen at first start and kept)")
    net.add_argument("--chain-prefix", default="STOWD", metavar="PREFIX",
                     help="prefix of stowd's iptables chains (default STOWD)")
    net.add_argument("--default-address-pool", default="base=10.89.0.0/16,size=24",
                     metavar="POOL",
                     help="where user-defined networks get subnets: base=CIDR,size=N "
                          "(default base=10.89.0.0/16,size=24)")
    reg = p.add_argument_group("registries")
    reg.add_argument("--insecure-registry", action="append", dest="insecure_registries",
                     default=[], metavar="HOST[:PORT]|CIDR",
                     help="allow plain HTTP and unverified TLS for this registry, "
                          "repeatable (127.0.0.0/8 and ::1 always are)")
    reg.add_argument("--registry-mirror", action="append", dest="registry_mirrors",
                     default=[], metavar="URL",
                     help="a Docker Hub mirror tried before Docker Hub for pulls, repeatable")
    reg.add_argument("--registry-certs-dir", type=Path, default=Path("/etc/docker/certs.d"),
                     metavar="DIR",
                     help="per-registry CA (*.crt) and client certificates (*.cert, *.key) "
                          "in DIR/HOST[:PORT]/ (default /etc/docker/certs.d)")
    logs = p.add_argument_group("logging")
    logs.add_argument("-l", "--log-level", default="info", choices=list(LOG_LEVELS),
                      metavar="LEVEL",
                      help="debug, info, warn, error or fatal (default info)")
    logs.add_argument("-D", "--debug", action="store_true", help="same as --log-level debug")
    return p


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    """A byte count as dockerd's flags take it: 1048576, 512k, 64m, 1g."""
    value = text.strip().lower()
    number, unit = value.rstrip("bkmg"), value[len(value.rstrip("bkmg")):]
    if unit.endswith("b") and len(unit) == 2:
        unit = unit[0]
    if not number.isdigit() or unit not in _SIZE_UNITS or int(number) == 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use bytes or 512k, 64m, 1g")
    return int(number) * _SIZE_UNITS[unit]


def build_parser() -> Parser:
    parser = Parser(prog="stowd", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--version", action="version",
                        version=f"stowd {__version__} (API {MAX_API_VERSION}, "
                                f"minimum {MIN_API_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                parser_class=Parser)
    parser.commands = {
        "serve": _serve_parser(sub),
        "version": sub.add_parser(
            "version", help="print stowd's version and the API versions it serves",
            description="Print stowd's version and the API versions it serves."),
    }
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        hosts=args.hosts or [DEFAULT_HOST],
        data_root=args.data_root.resolve(),
        exec_root=args.exec_root.resolve(),
        runtime=args.runtime,
        log_level="debug" if args.debug else {"warn": "warning", "fatal": "critical"}.get(
            args.log_level, args.log_level),
        tls_verify=args.tlsverify,
        tls_ca_cert=args.tlscacert,
        tls_cert=args.tlscert,
        tls_key=args.tlskey,
        insecure_tcp=args.insecure_tcp,
        cgroup_parent=args.cgroup_parent,
        socket_group=args.group,
        bridge=args.bridge,
        bridge_subnet=args.bridge_subnet,
        chain_prefix=args.chain_prefix,
        insecure_registries=args.insecure_registries,
        registry_mirrors=args.registry_mirrors,
        registry_certs_dir=args.registry_certs_dir,
        default_address_pool=args.default_address_pool,
        max_json_body=args.max_json_body,
        init_path=args.init_path,
        default_ulimits=args.default_ulimits,
    )


def _ulimit(text: str) -> dict[str, Any]:
    from stowd.engine.options import parse_ulimit_flag

    try:
        return parse_ulimit_flag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def serve(settings: Settings, sites: "Sites", seed_busybox: bool = False) -> int:
    """Open the engine and serve on the already-bound listeners until SIGTERM/SIGINT."""
    from aiohttp import web

    from stowd.api.app import make_app
    from stowd.api.server import start_sites
    from stowd.engine.engine import Engine
    from stowd.engine.seed import seed_busybox_image

    loop = asyncio.get_running_loop()
    _watch_for_blocking_calls()
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine = Engine(settings)
    await engine.open()
    runner = web.AppRunner(make_app(engine), access_log=None, handle_signals=False,
                           shutdown_timeout=2)
    try:
        if seed_busybox:
            await seed_busybox_image(engine.images)
        await runner.setup()
        await start_sites(runner, sites)
        log.info("stowd %s ready (API %s, data-root %s, runtime %s)", __version__,
                 MAX_API_VERSION, settings.data_root, settings.runtime)
        await stop.wait()
        log.info("shutting down; containers keep running")
    finally:
        await sites.lanes.close()
        await runner.cleanup()
        await engine.close()
    return 0


class LockError(Exception):
    """Another stowd holds the data-root."""


def lock_data_root(data_root: Path) -> int:
    """Hold an exclusive lock on DATA_ROOT/stowd.lock for the life of the process.

    Two engines on one data-root would both reconcile the same containers; the second is
    refused with the first one's pid. The kernel drops the lock when the process dies.
    """
    data_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_root / "stowd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockError(f"another stowd (pid {holder}) is running with --data-root "
                        f"{data_root}: stop it first, or give this one its own "
                        "--data-root") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _dump_tasks() -> None:
    """SIGUSR1: log every task's stack, to see what a stuck request waits for."""
    import io

    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("task %s:\n%s", task.get_name(), out.getvalue())


def _watch_for_blocking_calls() -> None:
    """With STOWD_BLOCKBUSTER=1 (the test suite sets it), a blocking call that stowd's own
    code makes on the event loop raises instead of stalling every client."""
    if os.environ.get("STOWD_BLOCKBUSTER") != "1":
        return
    from blockbuster import BlockBuster

    BlockBuster(scanned_modules=["stowd"]).activate()
    log.warning("blocking calls on the event loop will raise (STOWD_BLOCKBUSTER=1)")


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run the daemon on uvloop when it is installed (about twice the request rate of the
    standard loop), else on asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.error("a command is required: 'stowd serve' runs the engine")
    if extra:  # reported by the subcommand, so the hint names the right --help
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "version":
        print(f"stowd {__version__}\nAPI version {MAX_API_VERSION} (minimum {MIN_API_VERSION})")
        return 0
    settings = settings_from(args)
    logging.basicConfig(level=getattr(logging, settings.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stowd.api.server import ListenError, bind_listeners, plan_listeners
    from stowd.engine.errors import EngineError

    sites = None
    try:
        # Everything that can refuse does so before the engine touches any state, and
        # before an event loop exists (so the blocking checks block nothing).
        plan = plan_listeners(settings)
        if os.geteuid() != 0:
            print("stowd: 'stowd serve' needs root: it runs containers with runc, mounts "
                  "their filesystems and manages cgroups. Run it with sudo.", file=sys.stderr)
            return 1
        lock_data_root(settings.data_root)
        sites = bind_listeners(plan, settings)
        from stowd.engine.runtime.libc import keep_large_allocations

        if not keep_large_allocations():
            log.info("mallopt unavailable: log reads fault their arrays in afresh")
        return run_loop(serve(settings, sites, args.seed_busybox))
    except (ListenError, LockError) as exc:
        print(f"stowd: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"stowd: {exc.message}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"stowd: {exc}. stowd runs containers and needs root.", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"stowd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if sites is not None:
            sites.close()
