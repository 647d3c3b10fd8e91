"""TufRepository: layout, verification on open (one named negative per attack),
publish, refresh schedule and root renewal, all on injected clocks."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Root, Timestamp  # type: ignore[attr-defined]
from tuf.api.serialization.json import JSONSerializer
from tuf_testing import SIGNING_CONFIG, T0, TARGETS, TRUSTED_ROOT, MutableClock, snapshot_tree

from sigstack.core.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    StateError,
    Unavailable,
)
from sigstack.services.tuf import ROLES, ExpiryPolicy, TufKeys, TufRepository, repository

DAY = timedelta(days=1)
MARK = ".timestamp-high-water.json"


def _json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mark(highest: int, *accepted: tuple[int, str]) -> dict[str, object]:
    """The high-water mark document naming ``accepted`` (version, sha256) pairs."""
    return {
        "format": 1,
        "highest_version": highest,
        "accepted": [{"version": v, "sha256": d} for v, d in accepted],
    }


class _Crash(BaseException):
    """The process dying at a chosen write (raised instead of performing it)."""


def _timestamp_version(path: Path) -> int:
    version: int = _json(path)["signed"]["version"]
    return version


def _swap(keys: TufKeys, role: str) -> TufKeys:
    fields = {r: keys.for_role(r) for r in ROLES}
    fields[role] = ed25519.Ed25519PrivateKey.generate()
    return TufKeys(**fields)


# --- keys and policy ---------------------------------------------------------------------


def test_keys_must_be_distinct_ed25519_keys(keys: TufKeys) -> None:
    with pytest.raises(ConfigError, match="snapshot key is the same key as the targets key"):
        TufKeys(keys.root, keys.targets, keys.targets, keys.timestamp)
    with pytest.raises(ConfigError, match="root key must be an Ed25519"):
        not_ed25519 = ec.generate_private_key(ec.SECP256R1())
        TufKeys(not_ed25519, keys.targets, keys.snapshot, keys.timestamp)  # type: ignore[arg-type]
    assert "Ed25519PrivateKey" not in repr(keys)


def test_expiry_policy_defaults_and_limits() -> None:
    policy = ExpiryPolicy()
    assert [policy.lifetime(r) for r in ROLES] == [365 * DAY, 365 * DAY, 30 * DAY, 7 * DAY]
    assert policy.renew_margin("timestamp") == timedelta(hours=56)
    assert policy.refresh_interval == timedelta(hours=1)
    with pytest.raises(ConfigError, match="timestamp lifetime"):
        ExpiryPolicy(timestamp=timedelta(minutes=59))
    with pytest.raises(ConfigError, match="renew_fraction"):
        ExpiryPolicy(renew_fraction=1.0)
    with pytest.raises(ConfigError, match="renew_fraction"):
        ExpiryPolicy(renew_fraction=0)


# --- create --------------------------------------------------------------------------------


def test_create_writes_a_consistent_snapshot_repository(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)

    names = {p.name for p in repo_dir.iterdir()}
    assert names == {
        ".lock",
        "1.root.json",
        "root.json",
        "1.targets.json",
        "1.snapshot.json",
        "timestamp.json",
        ".timestamp-high-water.json",
        "targets",
    }
    assert _json(repo_dir / MARK) == _mark(1, (1, _sha256(repo_dir / "timestamp.json")))
    for name, data in TARGETS.items():
        stored = repo_dir / "targets" / f"{hashlib.sha256(data).hexdigest()}.{name}"
        assert stored.read_bytes() == data
    root_bytes = (repo_dir / "1.root.json").read_bytes()
    assert (repo_dir / "root.json").read_bytes() == root_bytes == repo.latest_root_bytes()

    root = Metadata[Root].from_bytes(root_bytes).signed
    assert root.version == 1 and root.consistent_snapshot is True
    for role in ROLES:
        assert root.roles[role].threshold == 1
        assert root.roles[role].keyids == [CryptoSigner(keys.for_role(role)).public_key.keyid]
    status = repo.status(T0)
    for role in ROLES:
        assert status.roles[role].version == 1
        assert status.roles[role].expires == T0 + ExpiryPolicy().lifetime(role)
        assert status.roles[role].expired is False
    assert status.targets == {n: hashlib.sha256(d).hexdigest() for n, d in TARGETS.items()}
    timestamp = _json(repo_dir / "timestamp.json")["signed"]["meta"]["snapshot.json"]
    snapshot_bytes = (repo_dir / "1.snapshot.json").read_bytes()
    assert timestamp["hashes"]["sha256"] == hashlib.sha256(snapshot_bytes).hexdigest()


def test_create_refuses_an_existing_repository(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    before = snapshot_tree(repo_dir)
    with pytest.raises(Conflict, match="not empty"):
        TufRepository.create(repo_dir, TufKeys.generate(), TARGETS, T0)
    assert snapshot_tree(repo_dir) == before


def test_create_refuses_a_non_empty_directory_and_a_file(tmp_path: Path, keys: TufKeys) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(Conflict, match=r"notes\.txt"):
        TufRepository.create(tmp_path / "busy", keys, TARGETS, T0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(Conflict, match="not a directory"):
        TufRepository.create(tmp_path / "file", keys, TARGETS, T0)


def test_create_in_an_existing_empty_directory(tmp_path: Path, keys: TufKeys) -> None:
    TufRepository.create(tmp_path, keys, TARGETS, T0)
    assert (tmp_path / "timestamp.json").is_file()


@pytest.mark.parametrize(
    "targets",
    [
        {},
        {"../escape.json": b"x"},
        {"sub/dir.json": b"x"},
        {".hidden": b"x"},
        {"": b"x"},
        {"spaced name.json": b"x"},
        {"a" * 201: b"x"},
        {"trusted_root.json": "not bytes"},
    ],
)
def test_create_refuses_bad_targets(repo_dir: Path, keys: TufKeys, targets: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        TufRepository.create(repo_dir, keys, targets, T0)
    assert not repo_dir.exists()


def test_naive_datetimes_are_refused(repo_dir: Path, keys: TufKeys) -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        TufRepository.create(repo_dir, keys, TARGETS, datetime(2030, 1, 1))


# --- open: verification, fail closed ---------------------------------------------------------


def test_open_verifies_and_loads_the_latest_state(repo_dir: Path, keys: TufKeys) -> None:
    created = TufRepository.create(repo_dir, keys, TARGETS, T0)
    created.publish({**TARGETS, "trusted_root.json": b"{}"}, T0)
    opened = TufRepository.open(repo_dir, keys, clock=lambda: T0)
    assert opened.status() == created.status(T0)
    assert opened.latest_root_bytes() == created.latest_root_bytes()


@pytest.mark.parametrize("role", ROLES)
def test_open_with_a_swapped_key_names_the_root_file(
    repo_dir: Path, keys: TufKeys, role: str
) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    with pytest.raises(StateError, match=f"the {role} role names key") as caught:
        TufRepository.open(repo_dir, _swap(keys, role))
    assert caught.value.path == repo_dir / "1.root.json"


def test_open_with_a_swapped_key_after_renewal_names_the_latest_root(
    repo_dir: Path, keys: TufKeys
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    assert "root" in repo.refresh(T0 + 300 * DAY)
    with pytest.raises(StateError) as caught:
        TufRepository.open(repo_dir, _swap(keys, "timestamp"))
    assert caught.value.path == repo_dir / "2.root.json"


def test_open_rejects_a_tampered_target_file(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    digest = hashlib.sha256(SIGNING_CONFIG).hexdigest()
    target = repo_dir / "targets" / f"{digest}.signing_config.v0.2.json"
    target.write_bytes(SIGNING_CONFIG.upper())
    with pytest.raises(StateError, match="does not match its length or hash") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == target


def test_open_rejects_a_missing_target_file(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    target = repo_dir / "targets" / f"{hashlib.sha256(TRUSTED_ROOT).hexdigest()}.trusted_root.json"
    target.unlink()
    with pytest.raises(StateError, match="is missing") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == target


def test_open_rejects_tampered_targets_metadata(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    path = repo_dir / "1.targets.json"
    path.write_bytes(path.read_bytes().replace(b'"length": ', b'"length": 1'))
    with pytest.raises(StateError) as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == path


def test_open_rejects_a_timestamp_signed_by_another_key(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    path = repo_dir / "timestamp.json"
    forged = Metadata[Timestamp].from_bytes(path.read_bytes())
    forged.signed.version += 1
    forged.sign(CryptoSigner(ed25519.Ed25519PrivateKey.generate()))
    path.write_bytes(forged.to_bytes(JSONSerializer()))
    with pytest.raises(StateError, match="signatures do not verify") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == path


def test_open_rejects_a_root_not_signed_by_its_predecessor(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    attacker = TufKeys.generate()
    forged = Metadata[Root].from_bytes((repo_dir / "1.root.json").read_bytes())
    forged.signed.version = 2
    for role in ROLES:
        for keyid in list(forged.signed.roles[role].keyids):
            forged.signed.revoke_key(keyid, role)
        forged.signed.add_key(CryptoSigner(attacker.for_role(role)).public_key, role)
    forged.sign(CryptoSigner(attacker.root))
    (repo_dir / "2.root.json").write_bytes(forged.to_bytes(JSONSerializer()))
    with pytest.raises(StateError, match="root signatures do not verify") as caught:
        TufRepository.open(repo_dir, attacker)
    assert caught.value.path == repo_dir / "2.root.json"


def test_open_rejects_a_root_not_signed_by_the_keys_it_names(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    forged = Metadata[Root].from_bytes((repo_dir / "1.root.json").read_bytes())
    forged.signed.version = 2
    (old_root_keyid,) = forged.signed.roles["root"].keyids
    forged.signed.revoke_key(old_root_keyid, "root")
    forged.signed.add_key(CryptoSigner(ed25519.Ed25519PrivateKey.generate()).public_key, "root")
    forged.sign(CryptoSigner(keys.root))  # only the OLD key signs: rotation without consent
    (repo_dir / "2.root.json").write_bytes(forged.to_bytes(JSONSerializer()))
    with pytest.raises(StateError, match="root signatures do not verify") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == repo_dir / "2.root.json"


def test_open_rejects_a_root_version_gap(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    (repo_dir / "3.root.json").write_bytes((repo_dir / "1.root.json").read_bytes())
    with pytest.raises(StateError, match="not reachable") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == repo_dir / "3.root.json"


def test_open_rejects_a_replaced_root_copy(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    (repo_dir / "root.json").write_bytes(b"{}")
    with pytest.raises(StateError, match="differs") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == repo_dir / "root.json"


def test_open_completes_an_interrupted_root_renewal(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    repo.refresh(T0 + 300 * DAY)
    # Simulate a crash after 2.root.json was written but before root.json was.
    (repo_dir / "root.json").write_bytes((repo_dir / "1.root.json").read_bytes())
    TufRepository.open(repo_dir, keys)
    assert (repo_dir / "root.json").read_bytes() == (repo_dir / "2.root.json").read_bytes()


def test_open_reports_an_interrupted_creation(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    (repo_dir / "timestamp.json").unlink()
    with pytest.raises(StateError, match="incomplete") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == repo_dir / "timestamp.json"


def test_open_a_missing_directory(tmp_path: Path, keys: TufKeys) -> None:
    with pytest.raises(StateError, match="missing"):
        TufRepository.open(tmp_path / "nope", keys)


def test_open_removes_leftover_temp_files(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    leftover = repo_dir / ".timestamp.json.abc123.tmp"
    leftover.write_bytes(b"partial")
    TufRepository.open(repo_dir, keys)
    assert not leftover.exists()


def test_open_does_not_fail_on_expired_metadata(repo_dir: Path, keys: TufKeys) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    repo = TufRepository.open(repo_dir, keys, clock=lambda: T0 + 1000 * DAY)
    assert all(s.expired for s in repo.status().roles.values())
    assert repo.refresh() == list(ROLES)
    assert not any(s.expired for s in repo.status().roles.values())


# --- publish -------------------------------------------------------------------------------


def test_publish_unchanged_content_changes_nothing(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    before = snapshot_tree(repo_dir)
    assert repo.publish(dict(TARGETS), T0 + DAY) is False
    assert snapshot_tree(repo_dir) == before


def test_publish_new_content_writes_new_versions(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    before = snapshot_tree(repo_dir)
    new_root = b'{"mediaType": "v2"}'
    assert repo.publish({**TARGETS, "trusted_root.json": new_root}, T0 + DAY) is True

    after = snapshot_tree(repo_dir)
    for name, entry in before.items():
        if name not in ("timestamp.json", MARK):
            assert after[name] == entry, f"{name} was rewritten"
    status = repo.status(T0 + DAY)
    versions = {r: s.version for r, s in status.roles.items()}
    assert versions == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}
    assert status.roles["targets"].expires == T0 + DAY + 365 * DAY
    assert status.targets["trusted_root.json"] == hashlib.sha256(new_root).hexdigest()
    stored = repo_dir / "targets" / f"{hashlib.sha256(new_root).hexdigest()}.trusted_root.json"
    assert stored.read_bytes() == new_root


def test_publish_replaces_the_whole_target_set(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    assert repo.publish({"trusted_root.json": TRUSTED_ROOT}, T0) is True
    assert set(repo.status(T0).targets) == {"trusted_root.json"}


def test_publish_skips_orphans_left_by_a_crash(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    orphan = repo_dir / "2.targets.json"
    orphan.write_bytes(b"written before a crash, never referenced")
    assert repo.publish({"trusted_root.json": b"{}"}, T0) is True
    assert orphan.read_bytes() == b"written before a crash, never referenced"
    assert repo.status(T0).roles["targets"].version == 3
    TufRepository.open(repo_dir, keys)  # and the result verifies


def test_publish_refuses_to_reuse_a_corrupted_target_file(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    new = b'{"new": true}'
    squatter = repo_dir / "targets" / f"{hashlib.sha256(new).hexdigest()}.trusted_root.json"
    squatter.write_bytes(b"not the content its name promises")
    with pytest.raises(StateError) as caught:
        repo.publish({"trusted_root.json": new}, T0)
    assert caught.value.path == squatter


def test_a_second_writer_sees_the_first_writers_changes(repo_dir: Path, keys: TufKeys) -> None:
    first = TufRepository.create(repo_dir, keys, TARGETS, T0)
    second = TufRepository.open(repo_dir, keys)
    changed = {**TARGETS, "trusted_root.json": b"{}"}
    assert first.publish(changed, T0) is True
    assert second.publish(changed, T0) is False  # reloaded from disk, nothing to do
    assert second.status(T0) == first.status(T0)


# --- refresh -------------------------------------------------------------------------------


def test_refresh_with_nothing_near_expiry_changes_nothing(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    before = snapshot_tree(repo_dir)
    assert repo.refresh(T0 + DAY) == []
    assert snapshot_tree(repo_dir) == before


def test_refresh_resigns_the_timestamp_exactly_when_its_margin_starts(
    repo_dir: Path, keys: TufKeys
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    margin_starts = T0 + 7 * DAY - timedelta(hours=56)  # a third of 7 days remains
    assert repo.refresh(margin_starts) == []
    assert repo.refresh(margin_starts + timedelta(seconds=1)) == ["timestamp"]
    status = repo.status(margin_starts)
    assert status.roles["timestamp"].version == 2
    assert status.roles["timestamp"].expires == margin_starts + timedelta(seconds=1) + 7 * DAY
    assert status.roles["snapshot"].version == 1


def test_refresh_schedule_and_root_renewal(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    root_v1 = (repo_dir / "1.root.json").read_bytes()

    assert repo.refresh(T0 + 200 * DAY) == ["snapshot", "timestamp"]
    assert repo.status(T0 + 200 * DAY).roles["root"].version == 1

    later = T0 + 250 * DAY  # under a third of 365 days left for root and targets
    assert repo.refresh(later) == ["root", "targets", "snapshot", "timestamp"]
    assert (repo_dir / "1.root.json").read_bytes() == root_v1
    root_v2 = (repo_dir / "2.root.json").read_bytes()
    assert (repo_dir / "root.json").read_bytes() == root_v2 == repo.latest_root_bytes()
    old = Metadata[Root].from_bytes(root_v1).signed
    new = Metadata[Root].from_bytes(root_v2)
    assert new.signed.version == 2 and new.signed.expires == later + 365 * DAY
    assert new.signed.keys == old.keys and new.signed.roles == old.roles
    # v2 is signed by the keys v1 trusts, so clients holding v1 accept it.
    old.verify_delegate("root", new.signed_bytes, new.signatures)
    assert repo.refresh(later) == []  # no churn


def test_a_stack_refreshing_daily_never_serves_expired_metadata(
    repo_dir: Path, keys: TufKeys
) -> None:
    clock = MutableClock(T0)
    repo = TufRepository.create(repo_dir, keys, TARGETS, clock=clock)
    for _ in range(800):  # more than two years of daily refreshes
        clock.now += DAY
        repo.refresh()
        status = repo.status()
        assert not any(s.expired for s in status.roles.values()), clock.now
    assert status.roles["root"].version == 4  # renewed at ~243, ~486 and ~729 days
    TufRepository.open(repo_dir, keys)  # the whole chain still verifies


def test_health_reports_expired_metadata(repo_dir: Path, keys: TufKeys) -> None:
    clock = MutableClock(T0)
    repo = TufRepository.create(repo_dir, keys, TARGETS, clock=clock)
    repo.check_health()
    clock.now = T0 + 8 * DAY
    with pytest.raises(Unavailable, match=r"timestamp\.json expired"):
        repo.check_health()
    repo.refresh()
    repo.check_health()


# --- rollback: versions never go backwards -------------------------------------------------


def test_a_rolled_back_timestamp_is_refused_not_resigned(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    old_timestamp = (repo_dir / "timestamp.json").read_bytes()
    assert repo.publish({**TARGETS, "trusted_root.json": b"{}"}, T0) is True
    (repo_dir / "timestamp.json").write_bytes(old_timestamp)  # validly signed, version 1
    before = snapshot_tree(repo_dir)
    with pytest.raises(StateError, match="rolled back") as caught:
        repo.refresh(T0 + 200 * DAY)
    assert caught.value.path == repo_dir / "timestamp.json"
    with pytest.raises(StateError, match="rolled back"):
        repo.publish({**TARGETS, "trusted_root.json": b"[]"}, T0)
    assert snapshot_tree(repo_dir) == before  # nothing written over the old state


def test_a_timestamp_replaced_at_the_same_version_is_refused(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    path = repo_dir / "timestamp.json"
    other = Metadata[Timestamp].from_bytes(path.read_bytes())
    other.signed.expires += DAY  # same version 1, other content, validly signed
    other.signatures.clear()
    other.sign(CryptoSigner(keys.timestamp))
    path.write_bytes(other.to_bytes(JSONSerializer()))
    with pytest.raises(StateError, match="same version 1"):
        repo.refresh(T0 + 200 * DAY)


def test_a_version_below_one_on_disk_is_never_written(
    repo_dir: Path, keys: TufKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    (repo_dir / "3.snapshot.json").write_bytes(b"a higher version, e.g. restored from backup")
    # Even if the next version were computed from the loaded state alone...
    monkeypatch.setattr(repo, "_next_version", lambda role, current: current + 1)
    with pytest.raises(StateError, match="would reuse or go below") as caught:
        repo.refresh(T0 + 200 * DAY)  # snapshot is due
    assert caught.value.path == repo_dir / "3.snapshot.json"
    assert not (repo_dir / "2.snapshot.json").exists()


def test_versions_skip_past_everything_on_disk_after_a_reopen(
    repo_dir: Path, keys: TufKeys
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    old_timestamp = (repo_dir / "timestamp.json").read_bytes()
    for n in range(3):
        repo.publish({**TARGETS, "trusted_root.json": str(n).encode()}, T0)
    (repo_dir / "timestamp.json").write_bytes(old_timestamp)
    # A deliberate restore: the reopened object has no memory of versions 2..4.
    reopened = TufRepository.open(repo_dir, keys, accept_restored_timestamp=True)
    assert reopened.publish({**TARGETS, "trusted_root.json": b"new"}, T0) is True
    versions = {r: s.version for r, s in reopened.status(T0).roles.items()}
    assert versions["targets"] == 5 and versions["snapshot"] == 5
    assert versions["timestamp"] == 6  # 5 signed by the recovery itself


# --- rollback across restarts: the durable high-water mark -----------------------------------


def test_a_timestamp_rolled_back_across_a_restart_is_refused(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    old_timestamp = (repo_dir / "timestamp.json").read_bytes()
    repo.publish({**TARGETS, "trusted_root.json": b"{}"}, T0)
    (repo_dir / "timestamp.json").write_bytes(old_timestamp)
    before = snapshot_tree(repo_dir)
    with pytest.raises(StateError, match="rolled back") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == repo_dir / "timestamp.json"
    message = caught.value.problem
    assert "version 1" in message and MARK in message  # what is wrong, against what
    assert "accept_restored_timestamp=True" in message  # and how to recover
    assert f"Do not delete {MARK}" in message
    assert snapshot_tree(repo_dir) == before  # nothing written, the mark kept


def test_a_timestamp_replaced_at_the_same_version_across_a_restart_is_refused(
    repo_dir: Path, keys: TufKeys
) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    path = repo_dir / "timestamp.json"
    other = Metadata[Timestamp].from_bytes(path.read_bytes())
    other.signed.expires += DAY  # same version 1, other content, validly signed
    other.signatures.clear()
    other.sign(CryptoSigner(keys.timestamp))
    path.write_bytes(other.to_bytes(JSONSerializer()))
    with pytest.raises(StateError, match="has version 1 but not the content") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == path


def test_a_crash_before_the_timestamp_commit_keeps_the_old_one_and_skips_its_version(
    repo_dir: Path, keys: TufKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    served = (repo_dir / "timestamp.json").read_bytes()

    def crash_at_the_commit(path: Path, data: bytes, *args: Any, **kwargs: Any) -> None:
        if path.name == "timestamp.json":
            raise _Crash("simulated crash before timestamp.json is replaced")
        real_atomic_write(path, data, *args, **kwargs)

    real_atomic_write = repository.atomic_write
    monkeypatch.setattr(repository, "atomic_write", crash_at_the_commit)
    with pytest.raises(_Crash):
        repo.publish({**TARGETS, "trusted_root.json": b"{}"}, T0)
    monkeypatch.undo()
    # The mark already names version 2 (and still the served version 1): above the file.
    assert _json(repo_dir / MARK)["highest_version"] == 2
    assert (repo_dir / "timestamp.json").read_bytes() == served

    reopened = TufRepository.open(repo_dir, keys)  # accepted: version 2 was never served
    assert reopened.status(T0).roles["timestamp"].version == 1
    assert _json(repo_dir / MARK) == _mark(2, (1, hashlib.sha256(served).hexdigest()))
    # The interrupted object re-verifies from disk too, and also goes above the mark.
    for writer, version in ((repo, 3), (reopened, 4)):
        assert writer.publish({**TARGETS, "trusted_root.json": str(version).encode()}, T0)
        assert _timestamp_version(repo_dir / "timestamp.json") == version
    TufRepository.open(repo_dir, keys)


def test_a_mark_written_alone_for_the_next_version_is_accepted(
    repo_dir: Path, keys: TufKeys
) -> None:
    """The crash as the file system leaves it: the mark for version 2 (naming version 1
    and a version 2 that never reached timestamp.json), timestamp.json still version 1."""
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    served = _sha256(repo_dir / "timestamp.json")
    never_written = "0" * 64
    (repo_dir / MARK).write_text(json.dumps(_mark(2, (1, served), (2, never_written))))
    repo = TufRepository.open(repo_dir, keys)
    assert _json(repo_dir / MARK)["accepted"] == [{"version": 1, "sha256": served}]
    assert repo.refresh(T0 + 200 * DAY) == ["snapshot", "timestamp"]
    assert _timestamp_version(repo_dir / "timestamp.json") == 3


def test_a_crash_after_the_timestamp_commit_is_completed_on_open(
    repo_dir: Path, keys: TufKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    old = _sha256(repo_dir / "timestamp.json")
    writes: list[str] = []

    def crash_after_the_commit(path: Path, data: bytes, *args: Any, **kwargs: Any) -> None:
        if path.name == MARK and "timestamp.json" in writes:
            raise _Crash("simulated crash before the mark is settled")
        real_atomic_write(path, data, *args, **kwargs)
        writes.append(path.name)

    real_atomic_write = repository.atomic_write
    monkeypatch.setattr(repository, "atomic_write", crash_after_the_commit)
    with pytest.raises(_Crash):
        repo.refresh(T0 + 200 * DAY)
    monkeypatch.undo()
    assert writes[-2:] == [MARK, "timestamp.json"]  # the mark first, then the commit
    new = _sha256(repo_dir / "timestamp.json")
    assert _json(repo_dir / MARK)["accepted"] == [
        {"version": 1, "sha256": old},
        {"version": 2, "sha256": new},
    ]
    TufRepository.open(repo_dir, keys)
    assert _json(repo_dir / MARK) == _mark(2, (2, new))


def test_a_repository_without_a_mark_opens_and_gets_one(repo_dir: Path, keys: TufKeys) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    repo.publish({**TARGETS, "trusted_root.json": b"{}"}, T0)
    (repo_dir / MARK).unlink()  # as created before the mark existed
    before = snapshot_tree(repo_dir)

    opened = TufRepository.open(repo_dir, keys)
    assert opened.status(T0).roles["timestamp"].version == 2
    assert _json(repo_dir / MARK) == _mark(2, (2, _sha256(repo_dir / "timestamp.json")))
    after = snapshot_tree(repo_dir)
    assert {name: after[name] for name in before} == before  # nothing else touched
    # From now on a rollback is caught across restarts.
    old = (repo_dir / "timestamp.json").read_bytes()
    assert opened.publish({**TARGETS, "trusted_root.json": b"[]"}, T0) is True
    (repo_dir / "timestamp.json").write_bytes(old)
    with pytest.raises(StateError, match="rolled back"):
        TufRepository.open(repo_dir, keys)


def test_a_timestamp_above_the_mark_raises_it(repo_dir: Path, keys: TufKeys) -> None:
    """A newer timestamp.json written by a sigstack that predates the mark is accepted."""
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    stale_mark = (repo_dir / MARK).read_bytes()
    repo.publish({**TARGETS, "trusted_root.json": b"{}"}, T0)
    (repo_dir / MARK).write_bytes(stale_mark)
    TufRepository.open(repo_dir, keys)
    assert _json(repo_dir / MARK)["highest_version"] == 2


def test_versions_continue_above_the_mark(repo_dir: Path, keys: TufKeys) -> None:
    clock = MutableClock(T0)
    repo = TufRepository.create(repo_dir, keys, TARGETS, clock=clock)
    for n in range(3):
        repo.publish({**TARGETS, "trusted_root.json": str(n).encode()})
        reopened = TufRepository.open(repo_dir, keys, clock=clock)
        expected = n + 2
        assert reopened.status().roles["timestamp"].version == expected
        assert _json(repo_dir / MARK)["highest_version"] == expected
        repo = reopened
    clock.now += 200 * DAY
    assert repo.refresh() == ["snapshot", "timestamp"]
    assert _timestamp_version(repo_dir / "timestamp.json") == 5
    assert _json(repo_dir / MARK)["highest_version"] == 5


def test_the_mark_on_disk_bounds_the_next_timestamp_of_a_running_writer(
    repo_dir: Path, keys: TufKeys
) -> None:
    """Another writer crashed after marking version 2: this one re-reads and goes above."""
    first = TufRepository.create(repo_dir, keys, TARGETS, T0)
    second = TufRepository.open(repo_dir, keys)
    served = _sha256(repo_dir / "timestamp.json")
    (repo_dir / MARK).write_text(json.dumps(_mark(2, (1, served), (2, "1" * 64))))
    assert second.publish({**TARGETS, "trusted_root.json": b"{}"}, T0) is True
    assert _timestamp_version(repo_dir / "timestamp.json") == 3
    assert first.publish({**TARGETS, "trusted_root.json": b"[]"}, T0) is True  # re-verified
    assert _timestamp_version(repo_dir / "timestamp.json") == 4


def test_a_deliberate_restore_keeps_the_mark_and_signs_above_it(
    repo_dir: Path, keys: TufKeys
) -> None:
    repo = TufRepository.create(repo_dir, keys, TARGETS, T0)
    restored = (repo_dir / "timestamp.json").read_bytes()
    for n in range(2):
        repo.publish({**TARGETS, "trusted_root.json": str(n).encode()}, T0)
    (repo_dir / "timestamp.json").write_bytes(restored)  # version 1, from a "backup"

    recovered = TufRepository.open(
        repo_dir, keys, clock=lambda: T0 + DAY, accept_restored_timestamp=True
    )
    status = recovered.status(T0 + DAY)
    assert status.roles["timestamp"].version == 4  # above the 3 clients may have seen
    assert status.roles["timestamp"].expires == T0 + DAY + 7 * DAY
    assert status.targets == recovered.status(T0).targets
    assert status.roles["snapshot"].version == 1  # the restored state is what is served
    assert _json(repo_dir / MARK)["highest_version"] == 4
    TufRepository.open(repo_dir, keys)  # and it opens normally afterwards
    # Without a rollback the flag changes nothing.
    before = snapshot_tree(repo_dir)
    TufRepository.open(repo_dir, keys, accept_restored_timestamp=True)
    assert snapshot_tree(repo_dir) == before


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format": 2, "highest_version": 1, "accepted": []}',
        b'{"format": 1, "highest_version": true, "accepted": [{"version": 1, "sha256": "a"}]}',
        b'{"format": 1, "highest_version": 1, "accepted": [{"version": 2, "sha256": "'
        + b"a" * 64
        + b'"}]}',
        b'{"format": 1, "highest_version": 1, "accepted": [{"version": 1, "sha256": "'
        + b"A" * 64
        + b'"}]}',
    ],
)
def test_a_damaged_mark_is_refused_naming_it(repo_dir: Path, keys: TufKeys, content: bytes) -> None:
    TufRepository.create(repo_dir, keys, TARGETS, T0)
    (repo_dir / MARK).write_bytes(content)
    with pytest.raises(StateError, match="not a valid timestamp high-water mark") as caught:
        TufRepository.open(repo_dir, keys)
    assert caught.value.path == repo_dir / MARK
    assert (repo_dir / MARK).read_bytes() == content  # never "repaired" silently
