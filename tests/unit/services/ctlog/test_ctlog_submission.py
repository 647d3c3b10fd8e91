"""Chain validation and entry encoding: one named test per security check."""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstack.core import pki
from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.core.keys import spki_der
from sigstack.core.sct import PRECERT_POISON_OID, SignedCertificateTimestamp
from sigstack.services.ctlog.submission import (
    ValidatedChain,
    issuer_objects,
    merkle_leaf_from_tile_leaf,
    split_tile_leaves,
    tile_leaf,
    timestamped_entry,
    validate_chain,
)

der = pki.cert_der


def validate(
    kit: Any, fulcio_pki: Any, chain: list[bytes], *, precert: bool, **kw: Any
) -> ValidatedChain:
    return validate_chain(
        chain,
        precert=precert,
        roots=kw.pop("roots", [fulcio_pki.root]),
        now=kw.pop("now", kit.NOW),
        max_length=kw.pop("max_length", 10),
    )


def ca_cert(
    kit: Any, issuer: x509.Certificate, issuer_key: Any, cn: str, extensions: list[Any]
) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = kit.build_cert(
        subject=pki.name("sigstack-test", cn),
        public_key=key.public_key(),
        issuer=issuer,
        issuer_key=issuer_key,
        extensions=[
            *extensions,
            (pki.subject_key_identifier(key.public_key()), False),
            (pki.authority_key_identifier(issuer), False),
        ],
    )
    return key, cert


CA_EXTS = [
    (x509.BasicConstraints(ca=True, path_length=None), True),
]


# --- accepted chains --------------------------------------------------------------------------


def test_precert_chain_with_root_accepted(kit: Any, fulcio_pki: Any) -> None:
    pre = fulcio_pki.precert()
    chain = [der(pre), *fulcio_pki.chain_ders]
    v = validate(kit, fulcio_pki, chain, precert=True)
    assert v.precert and not v.root_appended
    assert v.ders == tuple(chain)
    assert v.leaf == pre


def test_root_appended_when_omitted(kit: Any, fulcio_pki: Any) -> None:
    chain = [der(fulcio_pki.precert()), der(fulcio_pki.intermediate)]
    v = validate(kit, fulcio_pki, chain, precert=True)
    assert v.root_appended
    assert v.ders == (*chain, der(fulcio_pki.root))


def test_final_certificate_chain_accepted(kit: Any, fulcio_pki: Any) -> None:
    v = validate(kit, fulcio_pki, [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders], precert=False)
    assert not v.precert


def test_leaf_issued_directly_by_root(kit: Any, fulcio_pki: Any) -> None:
    pre = fulcio_pki.precert(issuer=fulcio_pki.root, issuer_key=fulcio_pki.root_key)
    v = validate(kit, fulcio_pki, [der(pre)], precert=True)
    assert v.certificates[1] == fulcio_pki.root


def test_not_yet_valid_leaf_accepted(kit: Any, fulcio_pki: Any) -> None:
    # RFC 6962 logs accept certificates before their notBefore; only expiry is refused.
    leaf = fulcio_pki.leaf(
        not_before=kit.NOW + dt.timedelta(days=1), not_after=kit.NOW + dt.timedelta(days=2)
    )
    validate(kit, fulcio_pki, [der(leaf), *fulcio_pki.chain_ders], precert=False)


def test_second_root_accepted(kit: Any, fulcio_pki: Any) -> None:
    _, other_root, _, _ = kit.make_ca_pair("other")
    chain = [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders]
    validate(kit, fulcio_pki, chain, precert=False, roots=[other_root, fulcio_pki.root])


# --- rejected chains ------------------------------------------------------------------------


def test_empty_chain_rejected(kit: Any, fulcio_pki: Any) -> None:
    with pytest.raises(InvalidRequest, match="chain is empty"):
        validate(kit, fulcio_pki, [], precert=True)


def test_chain_too_long_rejected(kit: Any, fulcio_pki: Any) -> None:
    chain = [der(fulcio_pki.precert()), *fulcio_pki.chain_ders]
    with pytest.raises(InvalidRequest, match="at most 2"):
        validate(kit, fulcio_pki, chain, precert=True, max_length=2)


def test_non_certificate_bytes_rejected(kit: Any, fulcio_pki: Any) -> None:
    with pytest.raises(VerificationError, match=r"chain\[1\] is not a valid DER certificate"):
        validate(
            kit, fulcio_pki, [der(fulcio_pki.precert()), b"\x30\x03\x02\x01\x01"], precert=True
        )


def test_non_bytes_element_rejected(kit: Any, fulcio_pki: Any) -> None:
    with pytest.raises(InvalidRequest, match=r"chain\[0\] must be DER bytes"):
        chain: Any = ["MII..."]
        validate(kit, fulcio_pki, chain, precert=True)


def test_unknown_root_rejected(kit: Any, fulcio_pki: Any) -> None:
    root_key, root, inter_key, inter = kit.make_ca_pair("stranger")
    stranger = kit.FulcioPKI(root_key, root, inter_key, inter)
    chain = [der(stranger.precert()), der(inter), der(root)]
    with pytest.raises(VerificationError, match="accepted root"):
        validate(kit, fulcio_pki, chain, precert=True)


def test_unknown_root_with_same_name_rejected(kit: Any, fulcio_pki: Any) -> None:
    # Same subject names as the accepted PKI, different keys: names chain, keys do not.
    root_key, root, inter_key, inter = kit.make_ca_pair("sigstack-test")
    impostor = kit.FulcioPKI(root_key, root, inter_key, inter)
    with pytest.raises(VerificationError, match="accepted root"):
        validate(kit, fulcio_pki, [der(impostor.precert()), der(inter)], precert=True)


def test_broken_leaf_signature_rejected(kit: Any, fulcio_pki: Any) -> None:
    raw = bytearray(der(fulcio_pki.precert()))
    raw[-1] ^= 0x01  # last byte of the ECDSA signature's s value
    with pytest.raises(VerificationError, match=r"chain\[0\].*is not signed by chain\[1\]"):
        validate(kit, fulcio_pki, [bytes(raw), *fulcio_pki.chain_ders], precert=True)


def test_broken_intermediate_signature_rejected(kit: Any, fulcio_pki: Any) -> None:
    raw = bytearray(der(fulcio_pki.intermediate))
    raw[-1] ^= 0x01
    chain = [der(fulcio_pki.precert()), bytes(raw), der(fulcio_pki.root)]
    with pytest.raises(VerificationError, match=r"chain\[1\].*is not signed by chain\[2\]"):
        validate(kit, fulcio_pki, chain, precert=True)


def test_wrong_order_rejected(kit: Any, fulcio_pki: Any) -> None:
    chain = [der(fulcio_pki.precert()), der(fulcio_pki.root), der(fulcio_pki.intermediate)]
    with pytest.raises(VerificationError, match="not signed by"):
        validate(kit, fulcio_pki, chain, precert=True)


def test_intermediate_not_a_ca_rejected(kit: Any, fulcio_pki: Any) -> None:
    key, not_ca = ca_cert(
        kit,
        fulcio_pki.root,
        fulcio_pki.root_key,
        "not a ca",
        [(x509.BasicConstraints(ca=False, path_length=None), True)],
    )
    pre = fulcio_pki.precert(issuer=not_ca, issuer_key=key)
    with pytest.raises(VerificationError, match=r"chain\[1\].*is not a CA"):
        validate(kit, fulcio_pki, [der(pre), der(not_ca), der(fulcio_pki.root)], precert=True)


def test_intermediate_without_basic_constraints_rejected(kit: Any, fulcio_pki: Any) -> None:
    key, no_bc = ca_cert(kit, fulcio_pki.root, fulcio_pki.root_key, "no bc", [])
    pre = fulcio_pki.precert(issuer=no_bc, issuer_key=key)
    with pytest.raises(VerificationError, match="no BasicConstraints"):
        validate(kit, fulcio_pki, [der(pre), der(no_bc)], precert=True)


def test_intermediate_without_key_cert_sign_rejected(kit: Any, fulcio_pki: Any) -> None:
    key, cert = ca_cert(
        kit,
        fulcio_pki.root,
        fulcio_pki.root_key,
        "no keyCertSign",
        [*CA_EXTS, (pki.digital_signature_usage(), True)],
    )
    pre = fulcio_pki.precert(issuer=cert, issuer_key=key)
    with pytest.raises(VerificationError, match="keyCertSign"):
        validate(kit, fulcio_pki, [der(pre), der(cert)], precert=True)


def test_path_length_violation_rejected(kit: Any, fulcio_pki: Any) -> None:
    # The intermediate has path length 0, so it may not issue another CA.
    key, sub = ca_cert(kit, fulcio_pki.intermediate, fulcio_pki.inter_key, "sub ca", CA_EXTS)
    pre = fulcio_pki.precert(issuer=sub, issuer_key=key)
    chain = [der(pre), der(sub), *fulcio_pki.chain_ders]
    with pytest.raises(VerificationError, match="path length 0"):
        validate(kit, fulcio_pki, chain, precert=True)


def test_precert_without_poison_rejected(kit: Any, fulcio_pki: Any) -> None:
    with pytest.raises(InvalidRequest, match="lacks the poison"):
        validate(kit, fulcio_pki, [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders], precert=True)


def test_poisoned_cert_on_add_chain_rejected(kit: Any, fulcio_pki: Any) -> None:
    with pytest.raises(InvalidRequest, match="add-pre-chain"):
        validate(
            kit, fulcio_pki, [der(fulcio_pki.precert()), *fulcio_pki.chain_ders], precert=False
        )


def test_non_critical_poison_rejected(kit: Any, fulcio_pki: Any) -> None:
    pre = fulcio_pki.leaf(last_extension=(x509.PrecertPoison(), False))
    with pytest.raises(InvalidRequest, match="NON-critical poison"):
        validate(kit, fulcio_pki, [der(pre), *fulcio_pki.chain_ders], precert=True)


def test_expired_leaf_rejected(kit: Any, fulcio_pki: Any) -> None:
    pre = fulcio_pki.precert(
        not_before=kit.NOW - dt.timedelta(days=2), not_after=kit.NOW - dt.timedelta(seconds=1)
    )
    with pytest.raises(InvalidRequest, match="expired"):
        validate(kit, fulcio_pki, [der(pre), *fulcio_pki.chain_ders], precert=True)


def test_precert_signing_certificate_refused(kit: Any, fulcio_pki: Any) -> None:
    key, signing = ca_cert(
        kit,
        fulcio_pki.intermediate,
        fulcio_pki.inter_key,
        "precert signer",
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CERTIFICATE_TRANSPARENCY]), False),
        ],
    )
    pre = fulcio_pki.precert(issuer=signing, issuer_key=key)
    chain = [der(pre), der(signing), *fulcio_pki.chain_ders]
    with pytest.raises(InvalidRequest, match="precertificate signing certificate"):
        validate(kit, fulcio_pki, chain, precert=True)


# --- entries ----------------------------------------------------------------------------


def test_precert_entry_matches_final_certificate_tbs(kit: Any, fulcio_pki: Any) -> None:
    pre = fulcio_pki.precert()
    v = validate(kit, fulcio_pki, [der(pre), *fulcio_pki.chain_ders], precert=True)
    te = timestamped_entry(v, 1234)
    sct = SignedCertificateTimestamp(b"\x01" * 32, 1234, b"", b"\x04\x03\x00\x00")
    final = fulcio_pki.final_certificate([sct])
    tbs = final.tbs_precertificate_bytes  # cryptography strips the SCT list
    issuer_hash = hashlib.sha256(spki_der(fulcio_pki.intermediate.public_key())).digest()
    expected = (
        struct.pack(">QH", 1234, 1) + issuer_hash + len(tbs).to_bytes(3, "big") + tbs + b"\x00\x00"
    )
    assert te == expected
    assert PRECERT_POISON_OID.dotted_string.encode() not in te


def test_x509_entry_layout(kit: Any, fulcio_pki: Any) -> None:
    leaf = der(fulcio_pki.leaf())
    v = validate(kit, fulcio_pki, [leaf, *fulcio_pki.chain_ders], precert=False)
    assert timestamped_entry(v, 99) == (
        struct.pack(">QH", 99, 0) + len(leaf).to_bytes(3, "big") + leaf + b"\x00\x00"
    )


def test_tile_leaf_precert_layout(kit: Any, fulcio_pki: Any) -> None:
    pre = der(fulcio_pki.precert())
    v = validate(kit, fulcio_pki, [pre, der(fulcio_pki.intermediate)], precert=True)
    te = timestamped_entry(v, 5)
    fps = (
        hashlib.sha256(der(fulcio_pki.intermediate)).digest()
        + hashlib.sha256(der(fulcio_pki.root)).digest()
    )
    assert tile_leaf(v, te) == te + len(pre).to_bytes(3, "big") + pre + b"\x00\x40" + fps


def test_tile_leaf_x509_layout(kit: Any, fulcio_pki: Any) -> None:
    leaf = der(fulcio_pki.leaf())
    v = validate(kit, fulcio_pki, [leaf, *fulcio_pki.chain_ders], precert=False)
    te = timestamped_entry(v, 5)
    fps = b"".join(hashlib.sha256(d).digest() for d in fulcio_pki.chain_ders)
    assert tile_leaf(v, te) == te + b"\x00\x40" + fps


def test_issuer_objects_are_keyed_by_fingerprint(kit: Any, fulcio_pki: Any) -> None:
    v = validate(
        kit, fulcio_pki, [der(fulcio_pki.precert()), der(fulcio_pki.intermediate)], precert=True
    )
    objs = issuer_objects(v)
    assert objs == {f"issuer/{hashlib.sha256(d).hexdigest()}": d for d in fulcio_pki.chain_ders}


def test_oversized_entry_rejected(kit: Any, fulcio_pki: Any) -> None:
    big = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x00" * 70_000)
    leaf = der(fulcio_pki.leaf(last_extension=(big, False)))
    v = validate(kit, fulcio_pki, [leaf, *fulcio_pki.chain_ders], precert=False)
    with pytest.raises(InvalidRequest, match="too large"):
        tile_leaf(v, timestamped_entry(v, 1))


def test_merkle_leaf_is_recovered_from_stored_tile_leaves(kit: Any, fulcio_pki: Any) -> None:
    pre = validate(
        kit, fulcio_pki, [der(fulcio_pki.precert()), der(fulcio_pki.intermediate)], precert=True
    )
    x509_chain = validate(
        kit, fulcio_pki, [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders], precert=False
    )
    records = []
    for chain in (pre, x509_chain):
        te = timestamped_entry(chain, 7)
        record = tile_leaf(chain, te)
        assert merkle_leaf_from_tile_leaf(record) == b"\x00\x00" + te
        records.append(record)
    assert split_tile_leaves(b"".join(records)) == records
    assert split_tile_leaves(b"") == []


@pytest.mark.parametrize("damage", ["truncated", "trailing", "unknown type"])
def test_malformed_tile_leaves_are_refused(kit: Any, fulcio_pki: Any, damage: str) -> None:
    chain = validate(
        kit, fulcio_pki, [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders], precert=False
    )
    record = tile_leaf(chain, timestamped_entry(chain, 7))
    bad = {
        "truncated": record[:-1],
        "trailing": record + b"\x00",
        "unknown type": record[:8] + b"\x00\x07" + record[10:],
    }[damage]
    with pytest.raises(VerificationError):
        merkle_leaf_from_tile_leaf(bad)
    if damage != "trailing":
        with pytest.raises(VerificationError):
            split_tile_leaves(bad)
