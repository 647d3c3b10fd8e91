"""The repository as python-tuf's real client (tuf.ngclient.Updater) sees it.

The client checks expiry against the wall clock, so repositories here are signed
relative to ``datetime.now(UTC)`` read once per test, with margins of days: nothing
depends on how long a test takes, and nothing sleeps.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_errors
from tuf_testing import (
    SIGNING_CONFIG,
    TARGETS,
    TRUSTED_ROOT,
    AsgiFetcher,
    LoopbackServer,
    download,
    make_updater,
)

from sigstack.services.tuf import ExpiryPolicy, TufKeys, TufRepository, create_app

BASE = "http://tuf.test/"


def test_client_bootstraps_downloads_and_sees_publish_over_loopback(
    tmp_path: Path, repo_dir: Path, keys: TufKeys
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS)
    bootstrap = repo.latest_root_bytes()
    with LoopbackServer(create_app(repo)) as server:
        client = make_updater(tmp_path / "client", server.url, bootstrap)
        client.refresh()
        assert download(client, "trusted_root.json") == TRUSTED_ROOT
        assert download(client, "signing_config.v0.2.json") == SIGNING_CONFIG

        new_root = TRUSTED_ROOT.replace(b'"tlogs": []', b'"tlogs": [], "ctlogs": []')
        assert repo.publish({**TARGETS, "trusted_root.json": new_root}) is True

        # A later run of the same client: trusts its cached root, sees the new content.
        again = make_updater(tmp_path / "client", server.url, None)
        again.refresh()
        assert download(again, "trusted_root.json") == new_root
        assert download(again, "signing_config.v0.2.json") == SIGNING_CONFIG


def test_client_chain_updates_from_an_expired_root_after_renewal(
    tmp_path: Path, repo_dir: Path, keys: TufKeys
) -> None:
    now = datetime.now(UTC)
    policy = ExpiryPolicy(
        root=timedelta(days=30),
        targets=timedelta(days=30),
        snapshot=timedelta(days=7),
        timestamp=timedelta(days=1),
    )
    # Created 40 days ago with a 30-day root: the root a client holds has expired.
    repo = TufRepository.create(repo_dir, keys, TARGETS, now - timedelta(days=40), policy=policy)
    old_root = repo.latest_root_bytes()
    fetcher = AsgiFetcher(create_app(repo))

    stale = make_updater(tmp_path / "stale", BASE, old_root, fetcher)
    with pytest.raises(tuf_errors.ExpiredMetadataError):
        stale.refresh()  # the failure a stack without root renewal inflicts

    assert repo.refresh(now) == ["root", "targets", "snapshot", "timestamp"]
    assert (repo_dir / "1.root.json").read_bytes() == old_root
    renewed = (repo_dir / "2.root.json").read_bytes()

    client = make_updater(tmp_path / "client", BASE, old_root, fetcher)
    client.refresh()
    assert f"{BASE}2.root.json" in fetcher.requested
    assert f"{BASE}3.root.json" in fetcher.requested  # probed, 404: 2 is the newest
    assert (tmp_path / "client" / "metadata" / "root.json").read_bytes() == renewed
    assert download(client, "trusted_root.json") == TRUSTED_ROOT


def test_client_rejects_a_tampered_target_file(
    tmp_path: Path, repo_dir: Path, keys: TufKeys
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS)
    client = make_updater(
        tmp_path / "client", BASE, repo.latest_root_bytes(), AsgiFetcher(create_app(repo))
    )
    client.refresh()
    info = client.get_targetinfo("trusted_root.json")
    assert info is not None
    target = repo_dir / "targets" / f"{info.hashes['sha256']}.trusted_root.json"
    target.write_bytes(TRUSTED_ROOT.replace(b"[]", b"{}"))  # same length: the hash must catch it

    with pytest.raises(tuf_errors.LengthOrHashMismatchError):
        client.download_target(info)
    assert not (tmp_path / "client" / "targets" / "trusted_root.json").exists()


def test_client_rejects_tampered_targets_metadata(
    tmp_path: Path, repo_dir: Path, keys: TufKeys
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS)
    # The attacker points trusted_root.json at their own content (same length).
    evil = TRUSTED_ROOT.replace(b"[]", b"{}")
    (repo_dir / "targets" / f"{hashlib.sha256(evil).hexdigest()}.trusted_root.json").write_bytes(
        evil
    )
    metadata = repo_dir / "1.targets.json"
    original = metadata.read_bytes()
    forged = original.replace(
        hashlib.sha256(TRUSTED_ROOT).hexdigest().encode(), hashlib.sha256(evil).hexdigest().encode()
    )
    assert forged != original
    metadata.write_bytes(forged)
    client = make_updater(
        tmp_path / "client", BASE, repo.latest_root_bytes(), AsgiFetcher(create_app(repo))
    )
    with pytest.raises(tuf_errors.RepositoryError):
        client.refresh()


def test_client_rejects_a_repository_signed_by_other_keys(tmp_path: Path, keys: TufKeys) -> None:
    trusted = TufRepository.create(tmp_path / "trusted", keys, TARGETS)
    impostor = TufRepository.create(tmp_path / "impostor", TufKeys.generate(), TARGETS)
    client = make_updater(
        tmp_path / "client", BASE, trusted.latest_root_bytes(), AsgiFetcher(create_app(impostor))
    )
    with pytest.raises(tuf_errors.UnsignedMetadataError):
        client.refresh()


def test_sigstore_python_trust_updater_fetches_both_targets_over_loopback(
    tmp_path: Path, repo_dir: Path, keys: TufKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sigstore-python's own TUF wrapper: what `sigstore --instance URL` runs after
    # `trust-instance root.json`. Its cache goes to platformdirs; keep it in tmp_path.
    from sigstore._internal.tuf import TrustUpdater

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = TufRepository.create(repo_dir, keys, TARGETS)
    bootstrap = tmp_path / "root.json"
    bootstrap.write_bytes(repo.latest_root_bytes())
    with LoopbackServer(create_app(repo)) as server:
        updater = TrustUpdater(server.url, bootstrap_root=bootstrap)
        assert Path(updater.get_trusted_root_path()).read_bytes() == TRUSTED_ROOT
        assert Path(updater.get_signing_config_path()).read_bytes() == SIGNING_CONFIG
    assert str(tmp_path / "data") in str(updater._metadata_dir)
