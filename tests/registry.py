"""A real registry for the tests (Debian's docker-registry) and images written into it.

`Registry` starts `/usr/bin/docker-registry serve` with a config of the test's own on a free
127.0.0.1 port: plain, htpasswd, Bearer token (`auth.token`) or TLS. `push_image` and
`push_index` write blobs and manifests over the registry's own HTTP API, so the tests make
every image they pull (multi-layer, whiteouts, zstd, OCI indexes) without the internet and
without stowd's push.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import zstandard

from stowd.engine.seed import busybox_binary, busybox_rootfs_tar

REGISTRY_BIN = "/usr/bin/docker-registry"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
             "none": "application/vnd.oci.image.layer.v1.tar"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    """One docker-registry process; `auth` is None, "htpasswd", "token" or "tls"."""
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"
    verify: str | bool = True
    session: requests.Session = field(default_factory=requests.Session)
    ip: str = "127.0.0.1"

    @property
    def host(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @classmethod
    def start(cls, auth: dict[str, Any] | None = None, tls: tuple[Path, Path] | None = None,
              port: int | None = None, host_ip: str = "127.0.0.1",
              client_ca: Path | None = None, extra: dict[str, Any] | None = None
              ) -> "Registry":
        """extra: more of the registry's configuration (top-level keys)."""
        root = Path(tempfile.mkdtemp(prefix="stowd-registry-"))
        reg = cls(root, port or free_port(), ip=host_ip)
        http: dict[str, Any] = {"addr": reg.host, "secret": "test"}
        if tls:
            http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
            if client_ca:
                http["tls"]["clientcas"] = [str(client_ca)]
            reg.scheme = "https"
        config: dict[str, Any] = {
            "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")},
                        "delete": {"enabled": True}},
            "http": http,
        }
        if auth:
            config["auth"] = auth
        config.update(extra or {})
        (root / "config.yml").write_text(json.dumps(config))
        log = open(root / "registry.log", "wb")  # noqa: SIM115 - the process keeps it
        reg.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")],
                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((reg.ip, reg.port), timeout=0.5).close()
                return reg
            except OSError:
                if reg.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start: "
                           + (root / "registry.log").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    # writing content over the registry API ------------------------------------------------

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        if not url.startswith("http"):
            url = self.url + url
        return self.session.request(method, url, verify=self.verify, timeout=60, **kw)

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return digest
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        sep = "&" if "?" in location else "?"
        r = self.request("PUT", f"{location}{sep}digest={digest}", data=data,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return digest

    def put_manifest(self, repo: str, ref: str, doc: dict[str, Any]) -> str:
        body = json.dumps(doc, indent=3).encode()
        r = self.request("PUT", f"/v2/{repo}/manifests/{ref}", data=body,
                      headers={"Content-Type": doc["mediaType"]})
        assert r.status_code == 201, r.text
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def push_image(self, repo: str, tag: str | None, layers: list["Layer"],
                   oci: bool = False, arch: str = "amd64", cmd: list[str] | None = None,
                   ) -> "Pushed":
        """An image of these layers (bottom first) under repo:tag; returns its digests."""
        descriptors = []
        for layer in layers:
            blob = layer.blob()
            digest = self.put_blob(repo, blob)
            media = OCI_LAYER[layer.compression] if oci or layer.compression != "gzip" \
                else DOCKER_LAYER
            descriptors.append({"mediaType": media, "size": len(blob), "digest": digest})
        config = json.dumps({
            "architecture": arch, "os": "linux", "created": "2024-01-02T03:04:05Z",
            "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"}
                        for i in range(len(layers))],
        }).encode()
        config_digest = self.put_blob(repo, config)
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                       "size": len(config), "digest": config_digest},
            "layers": descriptors,
        }
        body = json.dumps(manifest, indent=3).encode()
        digest = self.put_manifest(repo, tag or "sha256:" + hashlib.sha256(body).hexdigest(),
                                   manifest)
        return Pushed(digest, len(body), config_digest, manifest)

    def push_index(self, repo: str, tag: str, entries: list[tuple["Pushed", dict[str, str]]],
                   extra: list[dict[str, Any]] | None = None) -> str:
        manifests = [{"mediaType": p.manifest["mediaType"], "digest": p.digest,
                      "size": p.size, "platform": platform} for p, platform in entries]
        return self.put_manifest(repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                             "manifests": manifests + (extra or [])})

    def blob_path(self, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return (self.root / "data/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data")


@dataclass
class Pushed:
    digest: str
    size: int
    config_digest: str
    manifest: dict[str, Any]


@dataclass
class Layer:
    """A layer tar and how it travels (gzip, zstd or none)."""
    tar: bytes
    compression: str = "gzip"

    @property
    def diff_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.tar).hexdigest()

    def blob(self) -> bytes:
        if self.compression == "gzip":
            return gzip.compress(self.tar, mtime=0)
        if self.compression == "zstd":
            return zstandard.ZstdCompressor().compress(self.tar)
        return self.tar


def busybox_layer(compression: str = "gzip", marker: str = "") -> Layer:
    """The test busybox root filesystem; a marker file makes it a layer of its own (else it
    is the very layer the test daemons import as busybox:latest)."""
    binary = busybox_binary()
    assert binary, "busybox-static is needed"
    out = io.BytesIO()
    busybox_rootfs_tar(binary, out)
    tar = out.getvalue()
    if marker:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as dst, \
                tarfile.open(fileobj=io.BytesIO(tar)) as src:
            for member in src:
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
            info = tarfile.TarInfo("etc/marker")
            info.size = len(marker)
            dst.addfile(info, io.BytesIO(marker.encode()))
        tar = out.getvalue()
    return Layer(tar, compression)


def files_layer(files: dict[str, bytes | None], compression: str = "gzip") -> Layer:
    """A layer of these files; None makes a whiteout (`.wh.<name>`) for the path."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path, data in files.items():
            parent = os.path.dirname(path)
            parts = parent.split("/") if parent else []
            for i in range(len(parts)):
                d = "/".join(parts[:i + 1])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            name = path if data is not None else \
                os.path.join(parent, ".wh." + os.path.basename(path))
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data or b""))
    return Layer(out.getvalue(), compression)


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


class SlowProxy:
    """A TCP proxy to a registry that sends its answers at `rate` bytes a second and counts
    the blob downloads asked of it, so tests can watch a pull in the middle."""

    def __init__(self, target_port: int, rate: int) -> None:
        import asyncio
        import threading
        self.target_port = target_port
        self.rate = rate
        self.requests: list[str] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_gets(self, digest: str) -> int:
        return sum(1 for r in self.requests if r.startswith("GET ") and digest in r)

    def _run(self) -> None:
        import asyncio

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       slow: bool) -> None:
            try:
                while data := await reader.read(65536 if not slow else 16384):
                    if not slow:
                        for line in data.split(b"\r\n"):
                            if line.startswith((b"GET /v2/", b"HEAD /v2/")):
                                self.requests.append(line.decode(errors="replace"))
                    writer.write(data)
                    await writer.drain()
                    if slow:  # the throttle is the point: a slow link, not a wait
                        await asyncio.sleep(len(data) / self.rate)
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            try:
                sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                cw.close()
                return
            await asyncio.gather(pipe(cr, sw, False), pipe(sr, cw, True))

        async def main() -> None:
            self._stop = asyncio.Event()
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()
            await self._stop.wait()
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def remove_registry_images(client: Any) -> None:
    """Remove the names a test gave images from registries (docker-py client); images
    left without a name go with them, others (busybox:latest) stay."""
    import docker
    for image in client.images.list():
        names = [*image.tags, *(image.attrs.get("RepoDigests") or [])]
        for name in names:
            domain = name.split("/")[0]
            if "/" in name and ":" in domain and domain.split(":")[0].count(".") == 3:
                try:
                    client.images.remove(name, force=True)
                except docker.errors.NotFound:
                    pass
