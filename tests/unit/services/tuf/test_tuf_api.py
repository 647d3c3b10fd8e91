"""The TUF app serves exactly the repository's files, read-only, with the right caching."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tuf_testing import T0, TARGETS, TRUSTED_ROOT, MutableClock

from sigstack.core.errors import NotFound
from sigstack.services.tuf import TufKeys, TufRepository, create_app
from sigstack.services.tuf.api import IMMUTABLE, MUTABLE
from sigstack.services.tuf.repository import MARK_FILE

ROOT_DIGEST = hashlib.sha256(TRUSTED_ROOT).hexdigest()


@pytest.fixture
def repo(repo_dir: Path, keys: TufKeys) -> TufRepository:
    return TufRepository.create(repo_dir, keys, TARGETS)


@pytest.fixture
def client(repo: TufRepository) -> TestClient:
    return TestClient(create_app(repo))


@pytest.mark.parametrize(
    ("path", "cache"),
    [
        ("/1.root.json", IMMUTABLE),
        ("/root.json", MUTABLE),
        ("/timestamp.json", MUTABLE),
        ("/1.snapshot.json", IMMUTABLE),
        ("/1.targets.json", IMMUTABLE),
        (f"/targets/{ROOT_DIGEST}.trusted_root.json", IMMUTABLE),
    ],
)
def test_serves_repository_files_byte_for_byte(
    client: TestClient, repo_dir: Path, path: str, cache: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.content == (repo_dir / path.lstrip("/")).read_bytes()
    assert response.headers["cache-control"] == cache
    assert response.headers["content-type"] == "application/json"


def test_the_next_root_version_is_404_and_not_cacheable(client: TestClient) -> None:
    response = client.get("/2.root.json")
    assert response.status_code == 404
    assert response.headers["cache-control"] == "no-store"
    assert "does not exist" in response.json()["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/.lock",
        "/targets",
        "/targets/",
        "/targets/..%2f1.root.json",
        "/targets/%2e%2e%2f1.root.json",
        "/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        f"/targets/.{ROOT_DIGEST}.trusted_root.json",
        f"/targets/{ROOT_DIGEST.upper()}.trusted_root.json",
        f"/targets/{ROOT_DIGEST}",
        "/targets/trusted_root.json",
        "/0.root.json",
        "/01.root.json",
        "/-1.root.json",
        "/x.root.json",
        "/1.root.json.tmp",
        "/1.timestamp.json",
        "/snapshot.json",
        "/targets.json",
        "/",
    ],
)
def test_anything_else_is_404(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_a_trailing_slash_only_redirects_to_the_canonical_file(client: TestClient) -> None:
    # Starlette's slash redirect (shared sigstack.services.http app): never a second copy.
    response = client.get("/1.root.json/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"].endswith("/1.root.json")
    assert client.get("/2.root.json/", follow_redirects=True).status_code == 404


@pytest.mark.parametrize(
    "relative",
    [
        "../1.root.json",
        "targets/../1.root.json",
        "targets/../../etc/passwd",
        "/etc/passwd",
        "targets/sub/x.json",
        ".lock",
        "",
        "targets",
    ],
)
def test_read_public_refuses_raw_traversal(repo: TufRepository, relative: str) -> None:
    with pytest.raises(NotFound):
        repo.read_public(relative)


def test_the_timestamp_high_water_mark_is_not_served(
    client: TestClient, repo: TufRepository, repo_dir: Path
) -> None:
    mark = repo_dir / MARK_FILE
    repo.publish({"trusted_root.json": b"{}"})
    assert mark.is_file() and b"highest_version" in mark.read_bytes()
    for path in (f"/{MARK_FILE}", f"/targets/..%2f{MARK_FILE}", f"/%2e{MARK_FILE[1:]}"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"highest_version" not in response.content
    with pytest.raises(NotFound):
        repo.read_public(MARK_FILE)


def test_symlinks_are_not_followed(client: TestClient, repo_dir: Path) -> None:
    secret = repo_dir.parent / "secret.json"
    secret.write_text('{"secret": true}')
    link = repo_dir / "targets" / f"{'0' * 64}.trusted_root.json"
    os.symlink(secret, link)
    assert client.get(f"/targets/{link.name}").status_code == 404
    os.symlink(secret, repo_dir / "9.root.json")
    assert client.get("/9.root.json").status_code == 404


def test_a_symlinked_targets_directory_is_not_followed(
    client: TestClient, repo_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (repo_dir / "targets").rename(outside)
    os.symlink(outside, repo_dir / "targets")
    assert client.get(f"/targets/{ROOT_DIGEST}.trusted_root.json").status_code == 404


def test_no_method_can_change_the_repository(client: TestClient, repo_dir: Path) -> None:
    before = (repo_dir / "timestamp.json").read_bytes()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/timestamp.json", content=b"{}").status_code == 405
    assert (repo_dir / "timestamp.json").read_bytes() == before


def test_head_is_answered(client: TestClient) -> None:
    response = client.head("/timestamp.json")
    assert response.status_code == 200
    assert response.content == b""


def test_serves_what_is_on_disk_after_publish(client: TestClient, repo: TufRepository) -> None:
    first = client.get("/timestamp.json").content
    repo.publish({"trusted_root.json": b"{}"})
    assert client.get("/timestamp.json").content != first
    assert client.get("/2.targets.json").status_code == 200


def test_health_turns_503_when_metadata_expires(repo_dir: Path, keys: TufKeys) -> None:
    clock = MutableClock(T0)
    repo = TufRepository.create(repo_dir, keys, TARGETS, clock=clock)
    client = TestClient(create_app(repo))
    assert client.get("/healthz").json() == {"status": "ok"}
    clock.now = T0 + TufRepository.open(repo_dir, keys).policy.timestamp
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "timestamp.json expired" in response.json()["reason"]


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/root.json",
        "/timestamp.json",
        "/{version}.root.json",
        "/{version}.snapshot.json",
        "/{version}.targets.json",
        "/targets/{filename}",
    }
