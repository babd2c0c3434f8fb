"""docker build through the real clients: the CLI (classic and its fallback), docker-py,
docker-compose; the stream's words, every instruction's effect, the cache."""

import http.server
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.daemon import Daemon
from tests.integration.conftest import Cli

CLASSIC = {"DOCKER_BUILDKIT": "0"}


def build(cli: Cli, *args: str, input: str | None = None, check: bool = True,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", "build", *args], capture_output=True, text=True,
                          env={**cli.env, **(CLASSIC if env is None else env)}, input=input,
                          timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker build failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(autouse=True, scope="module")
def _clean_builds(daemon: Daemon) -> Iterator[None]:
    """Leave the shared daemon as found: no built images, no build cache."""
    yield
    client = daemon.client()
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith("built:"):
                client.images.remove(tag, force=True)
    client.api.prune_builds()
    client.images.prune()
    client.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 for ADD <url>."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "remote.txt").write_text("from the web\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


EVERYTHING = """\
# syntax comment: ARG before FROM feeds FROM
ARG BASE=busybox
FROM ${BASE}:latest AS builder
ARG GREETING=hello
RUN mkdir -p /out && echo "$GREETING from builder" > /out/greeting && \\
    chmod 640 /out/greeting
FROM scratch AS empty
COPY --from=builder /out/greeting /g
FROM builder
MAINTAINER someone@example.com
SHELL ["/bin/sh", "-c"]
ENV ONE=1 TWO="two words"
ENV LEGACY legacy form value
ARG WHO
LABEL org.example.who="${WHO:-nobody}" plain=value
EXPOSE 8080 9000/udp
WORKDIR /app
COPY --chown=1000:1000 src/ ./src/
COPY --from=empty /g ./from-scratch-stage
ADD bundle.tar.gz /bundle/
ADD ${URL}/remote.txt /downloaded/
USER 1000
VOLUME /data
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD true
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $ONE $TWO; id -u; pwd"]
ONBUILD RUN echo triggered
"""


def _bundle(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        data = b"inside the tarball\n"
        info = tarfile.TarInfo("tarred/file.txt")
        info.size = len(data)
        info.mode = 0o600
        tar.addfile(info, io.BytesIO(data))


def test_every_instruction(cli: Cli, client: docker.DockerClient, tmp_path: Path,
                           served: str) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": EVERYTHING.replace("${URL}", served),
                                   "src/app.sh": "echo app\n", "src/lib/util.txt": "util\n"})
    os.chmod(ctx / "src/app.sh", 0o755)
    _bundle(ctx / "bundle.tar.gz")
    proc = build(cli, "-t", "built:every", "--build-arg", "WHO=tester",
                 "--build-arg", "UNUSED=1", str(ctx))
    out = proc.stdout
    assert "Step 1/26 : ARG BASE=busybox" in out
    assert "Step 2/26 : FROM ${BASE}:latest AS builder" in out
    assert " ---> Running in " in out
    assert "Removing intermediate container " in out
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in out
    image_id = client.images.get("built:every").id
    assert f"Successfully built {image_id.removeprefix('sha256:')[:12]}" in out
    assert "Successfully tagged built:every" in out

    cfg = client.api.inspect_image("built:every")["Config"]
    assert "ONE=1" in cfg["Env"] and "TWO=two words" in cfg["Env"]
    assert "LEGACY=legacy form value" in cfg["Env"]
    assert any(e.startswith("PATH=") for e in cfg["Env"])
    assert cfg["Labels"] == {"org.example.who": "tester", "plain": "value"}
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9000/udp": {}}
    assert cfg["WorkingDir"] == "/app"
    assert cfg["User"] == "1000"
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000,
                                  "Timeout": 3_000_000_000, "Retries": 2}
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["echo $ONE $TWO; id -u; pwd"]
    assert cfg["OnBuild"] == ["RUN echo triggered"]
    assert cfg["Shell"] == ["/bin/sh", "-c"]
    assert client.api.inspect_image("built:every")["Author"] == "someone@example.com"

    assert client.containers.run("built:every", remove=True).decode() == \
        "1 two words\n1000\n/app\n"
    listing = client.containers.run(
        "built:every", ["stat -c '%n %u:%g %a' /out/greeting src src/app.sh src/lib/util.txt "
                        "from-scratch-stage /bundle/tarred/file.txt "
                        "/downloaded/remote.txt; cat /downloaded/remote.txt /g 2>&1; "
                        "cat from-scratch-stage /bundle/tarred/file.txt"],
        user="0", remove=True).decode().splitlines()
    assert listing[:8] == [
        "/out/greeting 0:0 640",
        "src 1000:1000 755",
        "src/app.sh 1000:1000 755",
        "src/lib/util.txt 1000:1000 644",
        "from-scratch-stage 0:0 640",
        "/bundle/tarred/file.txt 0:0 600",
        "/downloaded/remote.txt 0:0 600",
        "from the web",
    ]
    assert "No such file" in listing[8]  # /g lives only in the scratch stage
    assert listing[9:] == ["hello from builder", "inside the tarball"]

    client.volumes.prune()  # the runs' anonymous /data volumes
    history = client.api.history("built:every")
    assert history[0]["CreatedBy"] == "/bin/sh -c #(nop)  ONBUILD RUN echo triggered"
    assert any(h["CreatedBy"].startswith("/bin/sh -c #(nop) COPY --chown=1000:1000dir:")
               for h in history)
    assert any(h["CreatedBy"].startswith("|1 GREETING=hello /bin/sh -c mkdir -p /out")
               for h in history)


def test_cache_hits_and_exact_miss(cli: Cli, client: docker.DockerClient,
                                   tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nENV A=1\nRUN echo one > /one\n"
                           "COPY a.txt /a.txt\nRUN cat /a.txt > /copy\nCOPY b.txt /b.txt\n",
                           "a.txt": "first\n", "b.txt": "b\n"})
    first = build(cli, "-t", "built:cache", str(ctx)).stdout
    assert "Using cache" not in first
    image = client.images.get("built:cache").id
    again = build(cli, "-t", "built:cache", str(ctx)).stdout
    assert again.count(" ---> Using cache") == 5
    assert client.images.get("built:cache").id == image
    (ctx / "a.txt").write_text("changed\n")
    changed = build(cli, "-t", "built:cache", str(ctx)).stdout
    steps = changed.split("Step ")[1:]
    assert ["Using cache" in s for s in steps] == [False, True, True, False, False, False]
    assert client.images.get("built:cache").id != image
    assert client.containers.run("built:cache", "cat /copy", remove=True) == b"changed\n"
    # Only a touch (no content change): still cached, as dockerd's checksums ignore times.
    os.utime(ctx / "a.txt", (1, 1))
    assert build(cli, "-t", "built:cache", str(ctx)).stdout.count("Using cache") == 5
    nocache = build(cli, "--no-cache", "-t", "built:cache", str(ctx)).stdout
    assert "Using cache" not in nocache


def test_target_and_build_arg_in_from(cli: Cli, client: docker.DockerClient,
                                      tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox AS first\nRUN echo first > /stage\n"
                           "FROM first AS second\nRUN echo second > /stage\n"
                           "FROM second\nRUN echo third > /stage\n"})
    out = build(cli, "--target", "second", "-t", "built:target", str(ctx)).stdout
    assert "Step 4/4 : RUN echo second > /stage" in out
    assert client.containers.run("built:target", "cat /stage", remove=True) == b"second\n"
    bad = build(cli, "--target", "nope", str(ctx), check=False)
    assert bad.returncode != 0
    assert "failed to reach build target nope in Dockerfile" in bad.stderr


def test_dockerignore_with_exceptions(cli: Cli, client: docker.DockerClient,
                                      tmp_path: Path) -> None:
    ctx = write(tmp_path, {
        "Dockerfile": "FROM busybox\nCOPY . /ctx\n",
        ".dockerignore": "*.log\n!keep.log\n**/secret*\nnode_modules\nDockerfile\n",
        "a.log": "x", "keep.log": "kept", "deep/dir/secret.key": "s", "deep/ok.txt": "ok",
        "node_modules/m/index.js": "m",
    })
    build(cli, "-t", "built:ignore", str(ctx))
    files = client.containers.run("built:ignore", "find /ctx -type f", remove=True)
    assert sorted(files.decode().split()) == ["/ctx/.dockerignore", "/ctx/deep/ok.txt",
                                              "/ctx/keep.log"]


def test_dockerignore_applied_by_the_daemon(client: docker.DockerClient) -> None:
    """A raw tar (no client-side filtering) gets the same rules from stowd."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"Dockerfile": b"FROM busybox\nCOPY . /ctx\n",
                           ".dockerignore": b"*\n!wanted\n", "wanted": b"w",
                           "unwanted": b"u"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    image, _ = client.images.build(fileobj=buf, custom_context=True, tag="built:rawignore")
    files = client.containers.run(image.id, "find /ctx -type f", remove=True)
    assert files.decode().split() == ["/ctx/wanted"]


@pytest.mark.parametrize("compress", ["bz2", "xz"])
def test_compressed_raw_context(client: docker.DockerClient, compress: str) -> None:
    """bzip2 and xz contexts (gzip: test_options_platform_and_copy_rules), found by their
    magic as dockerd does, whatever the Content-Type says."""
    import bz2
    import lzma

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"Dockerfile": b"FROM busybox\nCOPY f /f\n", "f": b"packed"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    packed = (bz2.compress if compress == "bz2" else lzma.compress)(buf.getvalue())
    image, _ = client.images.build(fileobj=io.BytesIO(packed), custom_context=True,
                                   tag=f"built:{compress}")
    assert client.containers.run(image.id, "cat /f", remove=True) == b"packed"


def test_onbuild_triggers_in_child(cli: Cli, client: docker.DockerClient,
                                   tmp_path: Path) -> None:
    parent = write(tmp_path / "parent", {
        "Dockerfile": "FROM busybox\nONBUILD COPY marker /marker\n"
                      "ONBUILD RUN echo ran > /trigger\n"})
    build(cli, "-t", "built:onbuild-parent", str(parent))
    child = write(tmp_path / "child", {"Dockerfile": "FROM built:onbuild-parent\n",
                                       "marker": "mark\n"})
    out = build(cli, "-t", "built:onbuild-child", str(child)).stdout
    assert "# Executing 2 build triggers" in out
    assert client.containers.run("built:onbuild-child", "cat /marker /trigger",
                                 remove=True) == b"mark\nran\n"
    assert client.api.inspect_image("built:onbuild-child")["Config"]["OnBuild"] is None


def test_failing_run_leaves_its_container_unless_forcerm(cli: Cli, client: docker.DockerClient,
                                                          tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo partial; exit 7\n"})
    before = {c.id for c in client.containers.list(all=True)}
    failed = build(cli, "-t", "built:fails", str(ctx), check=False)
    assert failed.returncode == 7
    assert "partial" in failed.stdout
    assert ("The command '/bin/sh -c echo partial; exit 7' returned a non-zero code: 7"
            in failed.stderr)
    left = [c for c in client.containers.list(all=True) if c.id not in before]
    assert len(left) == 1 and left[0].status == "exited"
    assert left[0].attrs["State"]["ExitCode"] == 7
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("built:fails")
    left[0].remove()
    forced = build(cli, "--force-rm", str(ctx), check=False)
    assert forced.returncode == 7
    assert "Removing intermediate container" in forced.stdout
    assert {c.id for c in client.containers.list(all=True)} == before


def test_unknown_instruction_and_parse_errors(cli: Cli, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN true\nBOGUS x\n"})
    proc = build(cli, str(ctx), check=False)
    assert proc.returncode == 1
    assert ("Error response from daemon: dockerfile parse error line 3: unknown instruction: "
            "BOGUS") in proc.stderr
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY onlyone\n")
    proc = build(cli, str(ctx), check=False)
    assert "dockerfile parse error line 2: COPY requires at least two arguments" in proc.stderr


def test_step_errors_worded_as_dockerd(cli: Cli, tmp_path: Path, served: str) -> None:
    """Recorded from dockerd 20.10's classic builder, each after the failing step's line."""
    cases = {
        f"ADD {served}/missing /x": f"ADD failed: failed to GET {served}/missing with status "
                                    "404 File not found: ",
        "ADD http://127.0.0.1:1/x /x": 'ADD failed: Get "http://127.0.0.1:1/x": dial tcp '
                                       "127.0.0.1:1: connect: connection refused",
        # A lone name is the group's too: busybox has a user nobody but no group nobody.
        "COPY --chown=nobody f /f": "unable to convert uid/gid chown string to host mapping: "
                                    "can't find gid for group nobody: no such group: nobody",
        "COPY --chown=1:2:3 f /f": "unable to convert uid/gid chown string to host mapping: "
                                   "invalid chown string format: 1:2:3",
    }
    write(tmp_path, {"f": "f\n"})
    for line, words in cases.items():
        (tmp_path / "Dockerfile").write_text(f"FROM busybox\n{line}\n")
        proc = build(cli, str(tmp_path), check=False)
        assert proc.returncode == 1, line
        assert f"Step 2/2 : {line}" in proc.stdout
        assert words in proc.stderr, proc.stderr
    (tmp_path / "Dockerfile").write_text("FROM busybox AS a\nFROM a AS a\n")
    proc = build(cli, str(tmp_path), check=False)
    assert "Step 2/2" not in proc.stdout  # refused before the stage's Step line
    assert "a stage name already used" in proc.stderr


def test_plain_cli_stdin_and_file_outside_context(cli: Cli, client: docker.DockerClient,
                                                  tmp_path: Path) -> None:
    # No buildx here: the CLI falls back to /build by itself.
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY f /f\n", "f": "ctx\n"})
    build(cli, "-t", "built:plain", str(ctx), env={})
    assert client.containers.run("built:plain", "cat /f", remove=True) == b"ctx\n"
    # Dockerfile on stdin, no context.
    out = build(cli, "-t", "built:stdin", "-", input="FROM busybox\nRUN echo stdin > /s\n")
    assert "Successfully tagged built:stdin" in out.stdout
    assert client.containers.run("built:stdin", "cat /s", remove=True) == b"stdin\n"
    # -f naming a file outside the context: the CLI sends it under a random name.
    other = write(tmp_path / "elsewhere", {"Custom.dockerfile": "FROM busybox\nCOPY . /c\n"})
    build(cli, "-f", str(other / "Custom.dockerfile"), "-t", "built:outside", str(ctx))
    files = client.containers.run("built:outside", "ls -A /c", remove=True).decode().split()
    assert files == ["Dockerfile", "f"]


def test_quiet_prints_only_the_id(cli: Cli, client: docker.DockerClient,
                                  tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo noisy\n"})
    out = build(cli, "-q", "-t", "built:quiet", str(ctx)).stdout
    assert out.strip() == client.images.get("built:quiet").id


def test_docker_py_path_and_fileobj(client: docker.DockerClient, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nARG V\nRUN echo $V > /v\n"})
    image, logs = client.images.build(path=str(ctx), tag="built:py", buildargs={"V": "py"},
                                      rm=True, labels={"from": "docker-py"})
    logs = list(logs)
    lines = [entry.get("stream", "") for entry in logs]
    assert any(line.startswith("Successfully built") for line in lines)
    assert any("aux" in entry for entry in logs)
    assert image.labels == {"from": "docker-py"}
    assert client.containers.run(image.id, "cat /v", remove=True) == b"py\n"
    fileobj = io.BytesIO(b"FROM busybox\nCMD [\"echo\", \"fileobj\"]\n")
    image, _ = client.images.build(fileobj=fileobj, tag="built:pyfile")
    assert client.containers.run("built:pyfile", remove=True) == b"fileobj\n"
    with pytest.raises(docker.errors.BuildError) as info:
        client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 3\n"))
    assert "returned a non-zero code: 3" in str(info.value)


def test_compose_build(daemon: Daemon, client: docker.DockerClient, tmp_path: Path) -> None:
    write(tmp_path, {
        "docker-compose.yml": "version: '3'\nservices:\n  web:\n    build:\n"
                              "      context: ./web\n      args:\n        NAME: compose\n"
                              "    image: built:compose\n",
        "web/Dockerfile": "FROM busybox\nARG NAME\nRUN echo $NAME > /name\n"})
    env = {**os.environ, "DOCKER_HOST": daemon.url, "COMPOSE_DOCKER_CLI_BUILD": "0",
           "DOCKER_BUILDKIT": "0"}
    proc = subprocess.run(["docker-compose", "build"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert client.containers.run("built:compose", "cat /name", remove=True) == b"compose\n"


@pytest.mark.parametrize("run", ["echo started; sleep 600",
                                 # still writing when the client goes: the write fails
                                 "echo started; while :; do echo more; usleep 2000; done"])
def test_client_disconnect_cancels_the_build(daemon: Daemon, client: docker.DockerClient,
                                             tmp_path: Path, run: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"FROM busybox\nENV A=1\nRUN {run}\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    body = buf.getvalue()
    since = time.time()
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(daemon.url.removeprefix("unix://"))
    sock.sendall(b"POST /build?t=built:cancelled HTTP/1.1\r\nHost: d\r\n"
                 b"Content-Type: application/x-tar\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    seen = b""
    while b'{"stream":"started\\n' not in seen:  # alone, or with the first "more"
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    cid_start = seen.rindex(b"Running in ") + len(b"Running in ")  # the RUN's
    short_id = seen[cid_start:cid_start + 12].decode()
    sock.close()
    events = client.api.events(since=since, until=time.time() + 30, decode=True,
                               filters={"type": "container", "event": "destroy"})
    for event in events:
        if event["id"].startswith(short_id):
            break
    else:
        raise AssertionError("the build's container was not removed")
    assert client.containers.list(all=True) == []
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("built:cancelled")


def test_stream_shape_and_aux(api: docker.APIClient, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox AS a\nFROM a\nENV X=1\n"})
    lines = list(api.build(path=str(ctx), decode=True))
    streams = [line["stream"] for line in lines if "stream" in line]
    assert streams[:3] == ["Step 1/3 : FROM busybox AS a", "\n", streams[2]]
    assert streams[2].startswith(" ---> ")
    auxes = [line["aux"]["ID"] for line in lines if "aux" in line]
    assert len(auxes) == 2  # one per stage, as dockerd
    assert streams[-1] == f"Successfully built {auxes[-1].removeprefix('sha256:')[:12]}\n"
    assert json.dumps(lines)  # every line was a JSON object


def _stream_text(api: docker.APIClient, ctx: Path, **kw: object) -> str:
    """The build's stream lines joined, IDs written as <ID>, as compared with dockerd's."""
    lines = list(api.build(path=str(ctx), decode=True, **kw))
    text = "".join(line.get("stream", "") for line in lines)
    return re.sub(r"\b[0-9a-f]{12}\b", "<ID>", text)


# What dockerd 20.10's classic builder streams for STEPS (recorded side by side): a
# container for each step that is not COPY/ADD (config steps and WORKDIR are created and
# never started), the RUN's stderr in red, and on a rebuild only `Using cache`.
STEPS = 'FROM busybox\nENV A=1\nWORKDIR /w\nCOPY f /w/f\nRUN echo out; echo err >&2\nCMD ["sh"]\n'
DOCKERD_COLD = (
    "Step 1/6 : FROM busybox\n ---> <ID>\n"
    "Step 2/6 : ENV A=1\n ---> Running in <ID>\nRemoving intermediate container <ID>\n"
    " ---> <ID>\n"
    "Step 3/6 : WORKDIR /w\n ---> Running in <ID>\nRemoving intermediate container <ID>\n"
    " ---> <ID>\n"
    "Step 4/6 : COPY f /w/f\n ---> <ID>\n"
    "Step 5/6 : RUN echo out; echo err >&2\n ---> Running in <ID>\nout\n"
    "\x1b[91merr\n\x1b[0mRemoving intermediate container <ID>\n ---> <ID>\n"
    'Step 6/6 : CMD ["sh"]\n ---> Running in <ID>\nRemoving intermediate container <ID>\n'
    " ---> <ID>\n"
    "Successfully built <ID>\nSuccessfully tagged built:steps\n")
DOCKERD_CACHED = (
    "Step 1/6 : FROM busybox\n ---> <ID>\n"
    + "".join(f"Step {n}/6 : {line}\n ---> Using cache\n ---> <ID>\n"
              for n, line in enumerate(STEPS.splitlines()[1:], start=2))
    + "Successfully built <ID>\nSuccessfully tagged built:steps\n")


def test_stream_lines_step_for_step(client: docker.DockerClient, api: docker.APIClient,
                                    tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": STEPS, "f": "f\n"})
    since = time.time()
    assert _stream_text(api, ctx, tag="built:steps", nocache=True, rm=True) == DOCKERD_COLD
    # The step containers are real ones: created, and destroyed by `rm`.
    events = client.api.events(since=since, until=time.time(), decode=True,
                               filters={"type": "container"})
    actions = [e["Action"] for e in events]
    assert actions.count("create") == 4 and actions.count("destroy") == 4
    assert actions.count("start") == 1  # only the RUN's
    assert _stream_text(api, ctx, tag="built:steps", rm=True) == DOCKERD_CACHED
    # rm=0 leaves them, as dockerd: the config steps' never started.
    before = {c.id for c in client.containers.list(all=True)}
    _stream_text(api, ctx, tag="built:steps", nocache=True, rm=False)
    left = [c for c in client.containers.list(all=True) if c.id not in before]
    assert sorted(c.status for c in left) == ["created", "created", "created", "exited"]
    history = client.api.history("built:steps")
    assert history[0]["CreatedBy"] == '/bin/sh -c #(nop)  CMD ["sh"]'
    for c in left:
        c.remove(v=True)


def test_workdir_makes_its_directory(cli: Cli, client: docker.DockerClient,
                                     tmp_path: Path) -> None:
    """As dockerd: a WORKDIR that is not there is made in a layer of its own, owned by
    root whatever USER is, also in a `FROM scratch` stage; one that is there adds an
    empty layer; a file in its way fails the step."""
    ctx = write(tmp_path, {"Dockerfile": (
        "FROM scratch AS bare\nWORKDIR /made/in/scratch\n"
        "FROM busybox\nCOPY --from=bare /made /from-scratch\nUSER 1000\n"
        "WORKDIR /made/here\nWORKDIR rel\nWORKDIR /tmp\n"
        "RUN stat -c '%n %u:%g %a' /made/here /made/here/rel /from-scratch/in/scratch\n")})
    out = build(cli, "-t", "built:workdir", str(ctx)).stdout
    assert ("/made/here 0:0 755\n/made/here/rel 0:0 755\n/from-scratch/in/scratch 0:0 755\n"
            in out)
    history = {h["created_by"]: h.get("empty_layer", False)
               for h in _config(client, "built:workdir")["history"]}
    assert history["/bin/sh -c #(nop) WORKDIR /made/here"] is False
    assert history["/bin/sh -c #(nop) WORKDIR /made/here/rel"] is False
    assert history["/bin/sh -c #(nop) WORKDIR /tmp"] is True  # /tmp is there already
    # The directory is in the image, not only made by the runtime at start.
    bits, _ = client.api.get_archive(client.containers.create("built:workdir", "x").id,
                                     "/made/here/rel")
    assert b"".join(bits)
    bad = build(cli, "-", input="FROM busybox\nWORKDIR /etc/passwd\n", check=False)
    assert bad.returncode == 1
    assert "Cannot mkdir: /etc/passwd is not a directory" in bad.stderr


def _config(client: docker.DockerClient, name: str) -> dict[str, object]:
    """The image's config document, as `docker save` carries it."""
    data = b"".join(client.images.get(name).save())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type, no-any-return]


def test_chmod_is_refused_as_dockerd_20_10(cli: Cli, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nCOPY --chmod=600 f /f\n", "f": "f"})
    proc = build(cli, str(ctx), check=False)
    assert proc.returncode == 1
    assert "Step 2/2 : COPY --chmod=600 f /f" in proc.stdout  # refused in the step
    assert ("the --chmod option requires BuildKit. Refer to https://docs.docker.com/go/"
            "buildkit/ to learn how to build images with BuildKit enabled") in proc.stderr


def test_run_steps_get_the_builds_limits(cli: Cli, client: docker.DockerClient,
                                         tmp_path: Path) -> None:
    """--memory, --memory-swap, --cpu-period/--cpu-quota, --cpuset-cpus: read back from the
    RUN container's own cgroup (v2 or v1 files)."""
    ctx = write(tmp_path, {"Dockerfile": (
        "FROM busybox\nRUN cd /sys/fs/cgroup && if [ -f memory.max ]; then "
        "cat memory.max cpu.max cpuset.cpus; else cat memory/memory.limit_in_bytes; "
        "echo $(cat cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us); cat cpuset/cpuset.cpus; "
        "fi > /limits\n")})
    build(cli, "--memory", "64m", "--memory-swap", "128m", "--cpu-period", "50000",
          "--cpu-quota", "25000", "--cpuset-cpus", "0", "-t", "built:limits", str(ctx))
    assert client.containers.run("built:limits", "cat /limits", remove=True) == \
        b"67108864\n25000 50000\n0\n"


def test_build_cache_in_df_and_builder_prune(cli: Cli, client: docker.DockerClient,
                                            tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN head -c 3000 /dev/zero > /z\n"
                           "ENV PRUNE=me\n"})
    build(cli, "-t", "built:prunable", str(ctx))
    # As dockerd: df lists the images `docker images` lists, not the build's steps (they
    # were counted twice, as images and as build cache).
    listed = {i.id for i in client.images.list()}
    assert {i["Id"] for i in client.df()["Images"]} == listed
    assert len(client.images.list(all=True)) > len(listed)
    records = client.df()["BuildCache"]
    run_step = [r for r in records if r["Description"].startswith("/bin/sh -c head -c 3000")]
    assert len(run_step) == 1 and run_step[0]["Size"] >= 3000
    assert run_step[0]["Shared"]  # built:prunable holds the same layer
    out = cli("builder", "prune", "-f").stdout
    assert "Total reclaimed space" in out
    assert client.df()["BuildCache"] == []
    assert client.containers.run("built:prunable", "wc -c /z", remove=True) == b"3000 /z\n"
    assert "Using cache" not in build(cli, "-t", "built:prunable", str(ctx)).stdout


def test_cache_survives_a_restart(own_daemon: Daemon, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo once > /once\n"})
    cli = Cli(own_daemon)
    build(cli, "-t", "built:restart", str(ctx))
    first = own_daemon.client().images.get("built:restart").id
    own_daemon.stop()
    own_daemon.start()
    out = build(cli, "-t", "built:restart", str(ctx)).stdout
    assert " ---> Using cache" in out
    assert own_daemon.client().images.get("built:restart").id == first


def test_cache_from_a_loaded_image(cli: Cli, client: docker.DockerClient,
                                   tmp_path: Path) -> None:
    """A loaded image has no parent chain here: --cache-from matches it by history."""
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo a > /a\nENV LOADED=1\n"})
    build(cli, "-t", "built:cachefrom", str(ctx))
    image_id = client.images.get("built:cachefrom").id
    saved = b"".join(client.images.get("built:cachefrom").save(named=True))
    client.images.remove("built:cachefrom")
    client.api.prune_builds()
    client.images.load(saved)
    plain = build(cli, "-t", "built:nocachefrom", str(ctx)).stdout
    assert "Using cache" not in plain  # no parent chain: the local cache cannot know
    client.images.remove("built:nocachefrom")
    client.api.prune_builds()
    out = build(cli, "--cache-from", "built:cachefrom", "-t", "built:fromcache",
                str(ctx)).stdout
    assert out.count(" ---> Using cache") == 2
    assert client.images.get("built:fromcache").id == image_id


def test_from_an_image_pulled_during_the_build(cli: Cli, client: docker.DockerClient,
                                               tmp_path: Path) -> None:
    from tests.registry import Registry, busybox_layer, remove_registry_images

    registry = Registry.start()
    try:
        registry.push_image("test/base", "v1", [busybox_layer(marker="build-base")])
        name = f"{registry.host}/test/base:v1"
        ctx = write(tmp_path, {"Dockerfile": f"FROM {name}\nRUN cat /etc/marker > /m\n"})
        out = build(cli, "-t", "built:pulled", str(ctx)).stdout
        assert "v1: Pulling from test/base" in out
        assert f"Status: Downloaded newer image for {name}" in out
        assert client.containers.run("built:pulled", "cat /m", remove=True) == b"build-base"
        # --pull asks the registry again even though the image is here now.
        again = build(cli, "--pull", "-t", "built:pulled", str(ctx)).stdout
        assert f"Status: Image is up to date for {name}" in again
        assert " ---> Using cache" in again
        missing = build(cli, "-", input=f"FROM {registry.host}/test/nope:v1\n", check=False)
        assert missing.returncode != 0
        assert "test/nope" in missing.stderr
    finally:
        remove_registry_images(client)
        registry.stop()


def test_build_pulls_with_the_clients_credentials(daemon: Daemon, client: docker.DockerClient,
                                                 tmp_path: Path) -> None:
    """X-Registry-Config: the CLI sends what `docker login` stored, docker-py what its
    login() kept; the FROM image is pulled from the password-protected registry with it."""
    import bcrypt

    from tests.registry import Registry, busybox_layer, files_layer, remove_registry_images

    (tmp_path / "htpasswd").write_text(
        "builder:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode() + "\n")
    registry = Registry.start(auth={"htpasswd": {"realm": "basic-realm",
                                                 "path": str(tmp_path / "htpasswd")}})
    try:
        registry.session.auth = ("builder", "s3cret")
        registry.push_image("test/private", "v1", [busybox_layer(), files_layer({"p": b"pw"})])
        name = f"{registry.host}/test/private:v1"
        ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {name}\nRUN cat /p > /copied\n"})
        cli = Cli(daemon)
        cli.env["DOCKER_CONFIG"] = str(tmp_path / "config")
        denied = build(cli, str(ctx), check=False)
        assert denied.returncode != 0
        assert "no basic auth credentials" in denied.stderr
        cli("login", "-u", "builder", "--password-stdin", registry.host, input="s3cret\n")
        out = build(cli, "-t", "built:private", str(ctx)).stdout
        assert f"Status: Downloaded newer image for {name}" in out
        assert client.containers.run("built:private", "cat /copied", remove=True) == b"pw"
        client.images.remove(name)
        client.login("builder", "s3cret", registry=registry.host)
        image, _ = client.images.build(path=str(ctx), tag="built:private-py", rm=True)
        assert client.containers.run(image.id, "cat /copied", remove=True) == b"pw"
    finally:
        remove_registry_images(client)
        registry.stop()


def test_options_platform_and_copy_rules(client: docker.DockerClient, tmp_path: Path) -> None:
    """A gzip context (docker-py), extrahosts, shmsize and platform from the query; the
    escape directive, FROM --platform, COPY --from=<image>, wildcards and the trailing
    slash rules, HEALTHCHECK NONE, from the Dockerfile."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    ctx = write(tmp_path, {"Dockerfile": (
        "# escape=`\n"
        f"FROM --platform=linux/{arch} busybox\n"
        "COPY --from=busybox /etc/passwd /from-image\n"
        "COPY *.txt /texts/\n"
        "COPY a.txt /named\n"
        "COPY dir /contents/\n"
        "HEALTHCHECK NONE\n"
        "RUN grep 'extra.example' /etc/hosts > /hosts && `\n"
        "    df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n"),
        "a.txt": "a\n", "b.txt": "b\n", "c.md": "c\n", "dir/inner/f": "f\n"})
    image, _ = client.images.build(path=str(ctx), gzip=True, tag="built:options", rm=True,
                                   extra_hosts={"extra.example": "10.9.8.7"},
                                   shmsize=128 << 20, platform=f"linux/{arch}")
    listing = client.containers.run(
        image.id, ["sh", "-c", "cat /hosts /shm; ls /texts; ls /contents; "
                   "cat /named /contents/inner/f; grep -c ^root: /from-image"],
        remove=True).decode().split()
    assert listing == ["10.9.8.7", "extra.example", str(128 << 10), "a.txt", "b.txt",
                       "inner", "a", "f", "1"]
    assert image.attrs["Config"]["Healthcheck"] == {"Test": ["NONE"]}
    with pytest.raises(docker.errors.BuildError) as info:
        client.images.build(fileobj=io.BytesIO(b"FROM --platform=linux/s390x busybox\n"))
    assert "linux/s390x" in str(info.value)


def test_run_network_heredoc_and_proxy_args(cli: Cli, client: docker.DockerClient,
                                            tmp_path: Path, served: str) -> None:
    ctx = write(tmp_path, {"Dockerfile": (
        "FROM busybox\n"
        f"RUN wget -q -O /net.txt {served}/remote.txt\n"
        "RUN <<EOF\necho from a heredoc > /heredoc\nEOF\n"
        "RUN echo \"$HTTP_PROXY\" > /proxy\n")})
    out = build(cli, "--network", "host", "--build-arg", "HTTP_PROXY=http://proxy.invalid:3128",
                "-t", "built:net", str(ctx)).stdout
    assert "were not consumed" not in out  # a predefined proxy arg needs no ARG
    assert client.containers.run("built:net", "cat /net.txt /heredoc /proxy",
                                 remove=True) == (b"from the web\nfrom a heredoc\n"
                                                  b"http://proxy.invalid:3128\n")
    # The proxy value is not written into the image's history (dockerd leaves it out).
    assert not any("proxy.invalid" in h["CreatedBy"]
                   for h in client.api.history("built:net"))


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _context_with_big_file(size: int) -> Iterator[bytes]:
    """A context tar streamed in pieces (never whole in this process either)."""
    header = tarfile.TarInfo("big.bin")
    header.size = size
    dockerfile = b"FROM busybox\nCOPY big.bin /big.bin\nRUN wc -c /big.bin\n"
    df = tarfile.TarInfo("Dockerfile")
    df.size = len(dockerfile)
    yield df.tobuf() + dockerfile + b"\0" * (-len(dockerfile) % 512)
    yield header.tobuf()
    chunk = os.urandom(1 << 20)
    for _ in range(size // len(chunk)):
        yield chunk
    yield b"\0" * 1024


@pytest.mark.slow
def test_a_1gb_context_is_streamed(own_daemon: Daemon) -> None:
    """The issue's bound: a 1 GB context builds without 1 GB of RSS in stowd."""
    assert own_daemon.proc is not None
    size = 1 << 30
    api = own_daemon.client().api
    lines = list(api.build(fileobj=_context_with_big_file(size), custom_context=True,
                           tag="built:big", decode=True, timeout=900))
    assert any(f"{size} /big.bin" in line.get("stream", "") for line in lines), lines[-3:]
    assert _peak_rss_kb(own_daemon.proc.pid) < 300 * 1024


def test_rmi_prunes_the_builds_unused_parents(cli: Cli, client: docker.DockerClient,
                                              tmp_path: Path) -> None:
    # dockerd's image delete removes the parents left untagged and childless (the build's
    # intermediate images) unless noprune is given; a tagged or shared parent stays.
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nENV A=prune-1\nRUN echo a > /a\n"
                                         "LABEL step=3\n"})
    before = {i.id for i in client.images.list(all=True)}
    build(cli, "-t", "pruned:1", str(ctx))
    top = client.images.get("pruned:1")
    made = {i.id for i in client.images.list(all=True)} - before
    assert top.id in made and len(made) == 3  # ENV, RUN, LABEL
    report = client.api.remove_image("pruned:1")
    deleted = [r["Deleted"] for r in report if r.get("Deleted") in made]
    assert deleted[0] == top.id and set(deleted) == made  # the image, then its parents
    assert {i.id for i in client.images.list(all=True)} == before
    # noprune keeps them; a tagged parent stops the walk.
    build(cli, "-t", "pruned:2", str(ctx))
    parent = client.images.get("pruned:2").attrs["Parent"]
    client.api.remove_image("pruned:2", noprune=True)
    assert client.images.get(parent).id == parent
    build(cli, "-t", "pruned:3", str(ctx))  # from cache: the same chain again
    client.api.tag(parent, "pruned", "parent")
    client.api.remove_image("pruned:3")
    assert client.images.get("pruned:parent").id == parent
    client.api.remove_image("pruned:parent")
    assert {i.id for i in client.images.list(all=True)} == before
