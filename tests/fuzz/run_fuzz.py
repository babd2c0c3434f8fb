"""`make fuzz`: schemathesis over Docker's API spec against a test daemon, bounded in time.

The spec is Docker's v1.41 swagger served under /v1.44 (the version stowd speaks; v1.41 is
the closest published file to what stowd implements). Writes are included: create, start,
kill, remove, prune, load, commit, volumes. Left out are the operations that would reach
beyond the test daemon (network create and connect add bridges and routes to this host;
pulls, pushes and auth contact registries), the hijacked or endless streams (attach,
exec start, events, session), the build (another module's fuzzing) and swarm, which
stowd answers 503 by design. The only check is the one that matters here: no 5xx.

Usage: python -m tests.fuzz.run_fuzz [--seconds 300] [--spec PATH]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tests.daemon import REPO, Daemon

SPEC_CANDIDATES = [REPO.parent / "shared" / "reference" / "v1.41.yaml",
                   Path("/work/shared/reference/v1.41.yaml")]
EXCLUDED_PATHS = [
    "/networks/create", "/networks/{id}/connect",  # bridges and routes on the host
    "/images/create", "/images/{name}/push", "/auth", "/distribution/{name}/json",  # registries
    "/containers/{id}/attach", "/containers/{id}/attach/ws", "/exec/{id}/start",  # hijacked
    "/events", "/session",  # endless streams
    "/build",  # fuzzed with the builder
]
EXCLUDED_PREFIXES = ("/swarm", "/services", "/nodes", "/tasks", "/secrets", "/configs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepared_spec(source: Path, dest: Path) -> int:
    doc = yaml.safe_load(source.read_text())
    doc["basePath"] = "/v1.44"
    doc["schemes"] = ["http"]
    kept = {p: ops for p, ops in doc["paths"].items()
            if p not in EXCLUDED_PATHS and not p.startswith(EXCLUDED_PREFIXES)}
    doc["paths"] = kept
    dest.write_text(json.dumps(doc))
    return sum(1 for ops in kept.values() for m in ops if m != "parameters")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--spec", type=Path,
                        default=next((p for p in SPEC_CANDIDATES if p.exists()),
                                     SPEC_CANDIDATES[-1]))
    args = parser.parse_args()
    port = free_port()
    d = Daemon()
    d.hosts = [d.url, f"tcp://127.0.0.1:{port}"]
    work = Path(tempfile.mkdtemp(prefix="stowd-fuzz-"))
    try:
        d.start()
        d.import_busybox()
        operations = prepared_spec(args.spec, work / "spec.json")
        print(f"fuzzing {operations} operations of {args.spec.name} for {args.seconds} s "
              f"against 127.0.0.1:{port}", flush=True)
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "run", str(work / "spec.json"),
             "--url", f"http://127.0.0.1:{port}/v1.44", "--checks", "not_a_server_error",
             "--max-time", str(args.seconds), "--request-timeout", "20", "--workers", "1",
             "--continue-on-failure", "--no-color", "--suppress-health-check", "all",
             "--report", "ndjson", "--report-dir", str(work)],
            check=False, timeout=args.seconds + 600, cwd=REPO,
            env=dict(os.environ, SCHEMATHESIS_HOOKS="tests.fuzz.hooks", PYTHONPATH=str(REPO)))
        alive = d.proc is not None and d.proc.poll() is None
        print(f"schemathesis exit {proc.returncode}; daemon {'alive' if alive else 'DEAD'}; "
              f"blocking calls on the loop: {len(d.blocking_calls)}; reports in {work}")
        return 0 if proc.returncode == 0 and alive else 1
    finally:
        d.cleanup()
        if d.blocking_calls:
            print("blocking calls on the event loop:\n" + "\n".join(d.blocking_calls))


if __name__ == "__main__":
    sys.exit(main())
