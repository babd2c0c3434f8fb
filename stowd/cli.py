"""The `stowd` command: `stowd serve` runs the engine; `stowd version` prints versions."""

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from stowd import __version__
from stowd.api.versions import MAX_API_VERSION, MIN_API_VERSION
from stowd.config import DEFAULT_DATA_ROOT, DEFAULT_EXEC_ROOT, DEFAULT_HOST, Settings

log = logging.getLogger("stowd")

DESCRIPTION = """\
stowd is a container engine that serves the Docker Engine API. Point the docker CLI,
docker-py, compose or Testcontainers at its socket and run real Linux containers:

  stowd serve                      # listens on unix:///run/stowd.sock
  DOCKER_HOST=unix:///run/stowd.sock docker run --rm busybox echo hi
"""


def _serve_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "serve", help="run the engine in the foreground",
        description="Run the engine in the foreground, serving the Docker API on each -H "
                    "address. Containers keep running when stowd stops.")
    p.add_argument("-H", "--host", action="append", dest="hosts", metavar="ADDR",
                   help=f"where to listen: unix:///path or tcp://IP:PORT; repeatable "
                        f"(default {DEFAULT_HOST}). TCP off loopback needs --tlsverify "
                        "or --insecure-tcp")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help=f"persistent state: database, images, containers "
                        f"(default {DEFAULT_DATA_ROOT})")
    p.add_argument("--exec-root", type=Path, default=DEFAULT_EXEC_ROOT,
                   help=f"runtime state lost at reboot: sockets, exit files "
                        f"(default {DEFAULT_EXEC_ROOT})")
    p.add_argument("--runtime", default="runc", choices=["runc", "crun"],
                   help="OCI runtime (default runc; crun needs a cgroup v2 host)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default info")
    p.add_argument("--tlsverify", action="store_true",
                   help="require clients to present a certificate signed by --tlscacert")
    p.add_argument("--tlscacert", type=Path, help="CA certificate for client certificates")
    p.add_argument("--tlscert", type=Path, help="server certificate")
    p.add_argument("--tlskey", type=Path, help="server key")
    p.add_argument("--insecure-tcp", action="store_true",
                   help="allow plain HTTP on a non-loopback TCP address (dangerous: anyone "
                        "who reaches it gets root)")
    p.add_argument("--cgroup-parent", default="stowd",
                   help="cgroup under which containers are placed (default stowd)")
    p.add_argument("--group", default="docker",
                   help="group that owns the unix socket, when it exists (default docker)")
    p.add_argument("--seed-busybox", action="store_true",
                   help="when the store has no busybox image, import one made from the "
                        "host's busybox-static binary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stowd", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"stowd {__version__} (API {MAX_API_VERSION}, "
                                f"minimum {MIN_API_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    sub.add_parser("version", help="print stowd's version and API range")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        hosts=args.hosts or [DEFAULT_HOST],
        data_root=args.data_root.resolve(),
        exec_root=args.exec_root.resolve(),
        runtime=args.runtime,
        log_level=args.log_level,
        tls_verify=args.tlsverify,
        tls_ca_cert=args.tlscacert,
        tls_cert=args.tlscert,
        tls_key=args.tlskey,
        insecure_tcp=args.insecure_tcp,
        cgroup_parent=args.cgroup_parent,
        socket_group=args.group,
    )


async def serve(settings: Settings, seed_busybox: bool = False) -> int:
    from aiohttp import web

    from stowd.api.app import make_app
    from stowd.api.server import plan_listeners, start_sites
    from stowd.engine.engine import Engine
    from stowd.engine.seed import seed_busybox_image

    plan_listeners(settings)  # refuse unsafe addresses before touching any state
    engine = Engine(settings)
    await engine.open()
    if seed_busybox:
        await seed_busybox_image(engine)
    runner = web.AppRunner(make_app(engine), access_log=None, handle_signals=False,
                           shutdown_timeout=2)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sites = None
    try:
        sites = await start_sites(runner, settings)
        log.info("stowd %s ready (data-root %s, runtime %s)", __version__, settings.data_root,
                 settings.runtime)
        await stop.wait()
        log.info("shutting down; containers keep running")
    finally:
        await runner.cleanup()
        await engine.close()
        if sites is not None:
            sites.remove_sockets()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"stowd {__version__}\nAPI version {MAX_API_VERSION} (minimum {MIN_API_VERSION})")
        return 0
    if args.command != "serve":
        parser.print_help()
        return 2
    settings = settings_from(args)
    logging.basicConfig(level=getattr(logging, settings.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stowd.api.server import ListenError
    from stowd.engine.errors import EngineError

    try:
        return asyncio.run(serve(settings, args.seed_busybox))
    except ListenError as exc:
        print(f"stowd: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"stowd: {exc.message}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"stowd: {exc}. stowd runs containers and needs root.", file=sys.stderr)
        return 1
