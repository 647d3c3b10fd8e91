"""The CT log service on the real log engine, judged by independent oracles.

* SCTs are verified by sigstore-python's own verifier (``sigstore._internal.sct``)
  against the final certificate assembled here, as a Sigstore client does.
* Tree heads are verified with ``cryptography`` over a TreeHeadSignature built here
  byte by byte from RFC 6962 section 3.5.
* Inclusion is checked with an RFC 9162 2.1.3.2 verifier written in this file.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.certificate_transparency import LogEntryType, Version
from sigstore._internal.sct import _pack_digitally_signed, verify_sct
from sigstore._internal.trust import CTKeyring, Keyring
from sigstore._utils import KeyID
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore_models.common import v1 as common_v1

from sigstack.core import pki
from sigstack.core.errors import (
    Conflict,
    InvalidRequest,
    SigstackError,
    Unavailable,
    VerificationError,
)
from sigstack.core.keys import spki_der
from sigstack.log.memory import Fault, FaultPlan, MemoryStorage
from sigstack.services.ctlog.config import CTLogConfig
from sigstack.services.ctlog.service import CTLogService, create_ctlog, open_ctlog
from sigstack.services.ctlog.sthnote import to_millis

pytestmark = pytest.mark.anyio

der = pki.cert_der


# --- independent oracles ------------------------------------------------------------------


def ct_keyring(log_key: ec.EllipticCurvePrivateKey) -> CTKeyring:
    """The keyring sigstore-python builds from a trusted root's ``ctlogs``."""
    public = common_v1.PublicKey(
        raw_bytes=base64.b64encode(spki_der(log_key.public_key())),
        key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
    )
    return CTKeyring(Keyring([public]))


def rfc9162_root(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 2.1.3.2: the root an inclusion proof leads to (written for the tests)."""
    assert 0 <= index < size
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        assert sn != 0, "proof too long"
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0, "proof too short"
    return r


def verify_sth_json(sth: dict[str, Any], log_key: ec.EllipticCurvePrivateKey) -> None:
    """Verify a get-sth body with cryptography only (RFC 6962 3.5 and 4.3)."""
    root = base64.b64decode(sth["sha256_root_hash"])
    ds = base64.b64decode(sth["tree_head_signature"])
    assert ds[0] == 4 and ds[1] == 3  # sha256, ecdsa
    (n,) = struct.unpack(">H", ds[2:4])
    assert len(ds) == 4 + n
    signed = struct.pack(">BBQQ", 0, 1, sth["timestamp"], sth["tree_size"]) + root
    log_key.public_key().verify(ds[4:], signed, ec.ECDSA(hashes.SHA256()))


# --- fixtures -----------------------------------------------------------------------------


# --- add-pre-chain ------------------------------------------------------------------------


async def test_precert_sct_verifies_with_sigstore(
    service: CTLogService, fulcio_pki: Any, log_key: Any, kit: Any
) -> None:
    pre = fulcio_pki.precert()
    sct = await service.add_pre_chain([der(pre), *fulcio_pki.chain_ders])
    assert sct.log_id == hashlib.sha256(spki_der(log_key.public_key())).digest()
    assert sct.timestamp_ms == to_millis(kit.NOW)

    final = fulcio_pki.final_certificate([sct])
    keyring = ct_keyring(log_key)
    verify_sct(final, [fulcio_pki.intermediate, fulcio_pki.root], keyring)

    # The oracle is live: the same SCT on a certificate with another serial fails.
    other = fulcio_pki.final_certificate([sct], serial=0xBAD)
    with pytest.raises(SigstoreVerificationError):
        verify_sct(other, [fulcio_pki.intermediate, fulcio_pki.root], keyring)


async def test_precert_without_root_in_chain_verifies(
    service: CTLogService, fulcio_pki: Any, log_key: Any
) -> None:
    pre = fulcio_pki.precert(serial=77)
    sct = await service.add_pre_chain([der(pre), der(fulcio_pki.intermediate)])
    final = fulcio_pki.final_certificate([sct], serial=77)
    verify_sct(final, [fulcio_pki.intermediate, fulcio_pki.root], ct_keyring(log_key))


async def test_entry_is_in_the_log(service: CTLogService, fulcio_pki: Any, log_key: Any) -> None:
    accepted = [
        await service.submit(
            [der(fulcio_pki.precert(serial=s)), *fulcio_pki.chain_ders], precert=True
        )
        for s in (1, 2, 3)
    ]
    assert [a.index for a in accepted] == [0, 1, 2]
    sth = service.get_sth().to_json()
    verify_sth_json(sth, log_key)
    assert sth["tree_size"] == 3
    root = base64.b64decode(sth["sha256_root_hash"])
    for a in accepted:
        # The leaf is RFC 6962's MerkleTreeLeaf over the TimestampedEntry the SCT signs.
        assert a.leaf == b"\x00\x00" + a.timestamped_entry
        assert struct.unpack(">Q", a.timestamped_entry[:8])[0] == a.sct.timestamp_ms
        leaf_hash = hashlib.sha256(b"\x00" + a.leaf).digest()
        proof = service.log.inclusion_proof(a.index, 3)
        assert rfc9162_root(a.index, 3, leaf_hash, proof) == root


async def test_level0_tile_holds_the_leaf_hash(service: CTLogService, fulcio_pki: Any) -> None:
    a = await service.submit([der(fulcio_pki.precert()), *fulcio_pki.chain_ders], precert=True)
    tile = service.log.read("tile/0/000.p/1")
    assert tile == hashlib.sha256(b"\x00" + a.leaf).digest()


async def test_entry_bundle_holds_tile_leaf_and_issuers_are_stored(
    service: CTLogService, fulcio_pki: Any, storage: MemoryStorage
) -> None:
    from sigstack.core.tiles import decode_bundle

    pre = der(fulcio_pki.precert())
    a = await service.submit([pre, der(fulcio_pki.intermediate)], precert=True)
    bundle = service.log.read("tile/entries/000.p/1")
    assert bundle is not None
    (tile_leaf,) = decode_bundle(bundle, expected=1)
    fps = [hashlib.sha256(d).digest() for d in fulcio_pki.chain_ders]
    assert tile_leaf == (
        a.timestamped_entry + len(pre).to_bytes(3, "big") + pre + b"\x00\x40" + b"".join(fps)
    )
    for fp, d in zip(fps, fulcio_pki.chain_ders, strict=True):
        assert storage.get(f"issuer/{fp.hex()}") == d


async def test_issuer_storage_failure_issues_no_sct(
    config: CTLogConfig, clock: Any, fulcio_pki: Any
) -> None:
    plan = FaultPlan(Fault.FAIL, operation="put", key_prefix="issuer/", times=None)
    storage = MemoryStorage(fault=plan)
    create_ctlog(config, storage, clock=clock)
    svc = await open_ctlog(config, storage, clock=clock)
    try:
        with pytest.raises(SigstackError):
            await svc.add_pre_chain([der(fulcio_pki.precert()), *fulcio_pki.chain_ders])
        assert plan.fired >= 1
        assert svc.get_sth().tree_size == 0
    finally:
        await svc.close()


# --- add-chain ----------------------------------------------------------------------------


async def test_add_chain_sct_verifies_over_x509_entry(
    service: CTLogService, fulcio_pki: Any, log_key: Any
) -> None:
    leaf = fulcio_pki.leaf(serial=4242)
    sct = await service.add_chain([der(leaf), *fulcio_pki.chain_ders])

    # sigstore-python's own packing of an x509_entry, verified with its keyring.
    sct_view: Any = SimpleNamespace(
        version=Version.v1,
        entry_type=LogEntryType.X509_CERTIFICATE,
        timestamp=dt.datetime.fromtimestamp(sct.timestamp_ms / 1000, dt.UTC).replace(tzinfo=None),
        extension_bytes=sct.extensions,
    )
    data = _pack_digitally_signed(sct_view, leaf, None)
    signature = sct.digitally_signed[4:]
    ct_keyring(log_key).verify(key_id=KeyID(sct.log_id), signature=signature, data=data)

    # And by hand from RFC 6962 3.2.
    cert = der(leaf)
    manual = (
        struct.pack(">BBQH", 0, 0, sct.timestamp_ms, 0)
        + len(cert).to_bytes(3, "big")
        + cert
        + b"\x00\x00"
    )
    assert manual == data
    log_key.public_key().verify(signature, manual, ec.ECDSA(hashes.SHA256()))


async def test_add_chain_entry_is_x509_entry(service: CTLogService, fulcio_pki: Any) -> None:
    leaf = der(fulcio_pki.leaf())
    a = await service.submit([leaf, *fulcio_pki.chain_ders], precert=False)
    assert a.timestamped_entry[8:10] == b"\x00\x00"  # entry_type x509_entry
    assert a.timestamped_entry[13 : 13 + len(leaf)] == leaf


# --- timestamps ---------------------------------------------------------------------------


async def test_timestamps_never_decrease(
    service: CTLogService, fulcio_pki: Any, clock: Any, log_key: Any
) -> None:
    seen: list[int] = []
    for step, serial in ((0, 10), (-3600, 11), (5, 12), (-86400, 13)):
        clock.advance(seconds=step)
        sct = await service.add_pre_chain(
            [der(fulcio_pki.precert(serial=serial)), *fulcio_pki.chain_ders]
        )
        seen.append(sct.timestamp_ms)
        sth = service.get_sth()
        seen.append(sth.timestamp_ms)
        verify_sth_json(sth.to_json(), log_key)
    assert seen == sorted(seen)


async def test_reopen_keeps_timestamps_monotonic(
    config: CTLogConfig, fulcio_pki: Any, clock: Any, tmp_path: Any, log_key: Any
) -> None:
    from sigstack.log.fs import FilesystemStorage

    create_ctlog(config, FilesystemStorage(tmp_path / "log"), clock=clock)
    svc = await open_ctlog(config, FilesystemStorage(tmp_path / "log"), clock=clock)
    first = await svc.add_pre_chain([der(fulcio_pki.precert(serial=1)), *fulcio_pki.chain_ders])
    size_before = svc.get_sth().tree_size
    last = svc.get_sth().timestamp_ms
    await svc.close()

    clock.advance(days=-1)  # the wall clock stepped back across the restart
    svc = await open_ctlog(config, FilesystemStorage(tmp_path / "log"), clock=clock)
    try:
        assert svc.get_sth().tree_size == size_before
        second = await svc.add_pre_chain(
            [der(fulcio_pki.precert(serial=2)), *fulcio_pki.chain_ders]
        )
        assert second.timestamp_ms >= last >= first.timestamp_ms
        assert svc.get_sth().timestamp_ms >= second.timestamp_ms
        verify_sth_json(svc.get_sth().to_json(), log_key)
    finally:
        await svc.close()


async def test_concurrent_submissions_all_logged(
    service: CTLogService, fulcio_pki: Any, log_key: Any
) -> None:
    chains = [[der(fulcio_pki.precert(serial=100 + i)), *fulcio_pki.chain_ders] for i in range(12)]
    accepted = await asyncio.gather(*(service.submit(c, precert=True) for c in chains))
    assert sorted(a.index for a in accepted) == list(range(12))
    sth = service.get_sth().to_json()
    assert sth["tree_size"] == 12
    root = base64.b64decode(sth["sha256_root_hash"])
    keyring = ct_keyring(log_key)
    for i, a in enumerate(accepted):
        leaf_hash = hashlib.sha256(b"\x00" + a.leaf).digest()
        assert (
            rfc9162_root(a.index, 12, leaf_hash, service.log.inclusion_proof(a.index, 12)) == root
        )
        final = fulcio_pki.final_certificate([a.sct], serial=100 + i)
        verify_sct(final, [fulcio_pki.intermediate, fulcio_pki.root], keyring)


# --- reads, lifecycle, failures -----------------------------------------------------------


async def test_get_roots(service: CTLogService, fulcio_pki: Any) -> None:
    assert service.get_roots() == [der(fulcio_pki.root)]


async def test_empty_log_sth(service: CTLogService, log_key: Any) -> None:
    sth = service.get_sth().to_json()
    assert sth["tree_size"] == 0
    assert base64.b64decode(sth["sha256_root_hash"]) == hashlib.sha256(b"").digest()
    verify_sth_json(sth, log_key)


async def test_create_twice_is_an_error(
    config: CTLogConfig, storage: MemoryStorage, clock: Any
) -> None:
    create_ctlog(config, storage, clock=clock)
    with pytest.raises((Conflict, SigstackError)):
        create_ctlog(config, storage, clock=clock)


async def test_open_with_another_key_fails_closed(
    config: CTLogConfig, storage: MemoryStorage, clock: Any, fulcio_pki: Any
) -> None:
    create_ctlog(config, storage, clock=clock)
    other = CTLogConfig(
        origin=config.origin,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        roots=[fulcio_pki.root],
    )
    with pytest.raises(SigstackError):
        await open_ctlog(other, storage, clock=clock)


async def test_closed_service_refuses(service: CTLogService, fulcio_pki: Any) -> None:
    await service.check_health()
    await service.close()
    await service.close()  # idempotent
    with pytest.raises(Unavailable):
        await service.check_health()
    with pytest.raises(Unavailable):
        await service.add_pre_chain([der(fulcio_pki.precert()), *fulcio_pki.chain_ders])
    with pytest.raises(Unavailable):
        service.get_sth()


async def test_rejected_submission_is_not_logged(service: CTLogService, fulcio_pki: Any) -> None:
    with pytest.raises(InvalidRequest):
        await service.add_pre_chain([der(fulcio_pki.leaf()), *fulcio_pki.chain_ders])
    with pytest.raises(VerificationError):
        await service.add_chain([der(fulcio_pki.leaf()), der(fulcio_pki.intermediate), b"junk"])
    assert service.get_sth().tree_size == 0


async def test_expiry_uses_the_injected_clock(
    service: CTLogService, fulcio_pki: Any, clock: Any
) -> None:
    leaf = der(fulcio_pki.leaf())  # valid until NOW + 10 minutes
    clock.advance(minutes=11)
    with pytest.raises(InvalidRequest, match="expired"):
        await service.add_chain([leaf, *fulcio_pki.chain_ders])


async def test_issuers_written_once_per_process(
    config: CTLogConfig, clock: Any, fulcio_pki: Any
) -> None:
    writes: list[str] = []

    def count(operation: str, key: str) -> None:
        if operation == "put" and key.startswith("issuer/"):
            writes.append(key)

    storage = MemoryStorage(fault=count)
    create_ctlog(config, storage, clock=clock)
    svc = await open_ctlog(config, storage, clock=clock)
    try:
        for serial in (1, 2, 3):
            await svc.add_pre_chain(
                [der(fulcio_pki.precert(serial=serial)), *fulcio_pki.chain_ders]
            )
        assert sorted(writes) == sorted(
            f"issuer/{hashlib.sha256(d).hexdigest()}" for d in fulcio_pki.chain_ders
        )
        for d in fulcio_pki.chain_ders:
            assert svc.get_issuer(hashlib.sha256(d).hexdigest()) == d
    finally:
        await svc.close()


async def test_storage_failure_is_retryable_and_issues_no_sct(
    config: CTLogConfig, clock: Any, fulcio_pki: Any, log_key: Any
) -> None:
    plan = FaultPlan(Fault.FAIL, operation="put", key_prefix="tile/", times=1)
    storage = MemoryStorage(fault=plan)
    create_ctlog(config, storage, clock=clock)
    svc = await open_ctlog(config, storage, clock=clock)
    try:
        chain = [der(fulcio_pki.precert()), *fulcio_pki.chain_ders]
        with pytest.raises(Unavailable, match="could not record the entry") as info:
            await svc.add_pre_chain(chain)
        assert info.value.http_status == 503
        assert plan.fired == 1
        assert svc.get_sth().tree_size == 0
        sct = await svc.add_pre_chain(chain)  # the engine recovered; a retry succeeds
        final = fulcio_pki.final_certificate([sct])
        verify_sct(final, [fulcio_pki.intermediate, fulcio_pki.root], ct_keyring(log_key))
        assert svc.get_sth().tree_size == 1
    finally:
        await svc.close()
