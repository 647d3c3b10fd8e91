"""Helpers for the TUF repository tests: placeholder targets, a hand-moved clock, and
two ways to put python-tuf's real client (``tuf.ngclient.Updater``) in front of the
app: a real uvicorn server on a free loopback port, and an in-process fetcher.

(A uniquely named module rather than conftest.py, so test modules can import it.)"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.testclient import TestClient
from starlette.types import ASGIApp
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import Updater  # type: ignore[attr-defined]
from tuf.ngclient.fetcher import FetcherInterface

# A fixed, second-precision instant: all expiry arithmetic in these tests is exact.
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

TRUSTED_ROOT = json.dumps(
    {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "tlogs": []}
).encode()
SIGNING_CONFIG = json.dumps(
    {"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json", "caUrls": []}
).encode()
TARGETS = {"trusted_root.json": TRUSTED_ROOT, "signing_config.v0.2.json": SIGNING_CONFIG}


class MutableClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class LoopbackServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a background thread.

    The socket is bound and listening before the thread starts, so clients can
    connect at once (the kernel queues them until the server accepts): no polling.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
        assert not self._thread.is_alive(), "uvicorn did not stop"


class AsgiFetcher(FetcherInterface):
    """A python-tuf fetcher that calls the ASGI app in-process."""

    def __init__(self, app: ASGIApp) -> None:
        self.client = TestClient(app, base_url="http://tuf.test")
        self.requested: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.requested.append(url)
        response = self.client.get(url)
        if response.status_code != 200:
            raise DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        return iter([response.content])


def make_updater(
    workdir: Path,
    base_url: str,
    bootstrap: bytes | None,
    fetcher: FetcherInterface | None = None,
) -> Updater:
    """A TUF client with its cache in ``workdir`` (created as needed)."""
    metadata_dir = workdir / "metadata"
    target_dir = workdir / "targets"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    target_dir.mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(metadata_dir),
        metadata_base_url=base_url,
        target_dir=str(target_dir),
        target_base_url=base_url.rstrip("/") + "/targets/",
        fetcher=fetcher,
        bootstrap=bootstrap,
    )


def download(updater: Updater, name: str) -> bytes:
    """Fetch and verify target ``name`` as a client does; return its bytes."""
    info = updater.get_targetinfo(name)
    assert info is not None, f"{name} is not a target"
    return Path(updater.download_target(info)).read_bytes()


def snapshot_tree(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``directory`` -> (bytes, inode, mtime_ns): detects any rewrite."""
    tree = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            info = path.stat()
            tree[str(path.relative_to(directory))] = (
                path.read_bytes(),
                info.st_ino,
                info.st_mtime_ns,
            )
    return tree
