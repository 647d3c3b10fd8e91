"""Rekor v1 entry kinds: validate a proposed entry and build the body upstream stores.

Kinds: ``hashedrekord`` 0.0.1, ``dsse`` 0.0.1 and ``intoto`` 0.0.2 (what
sigstore-python, sigstore-js, cosign and ``@sigstore/cli`` upload). For each,
:func:`canonicalize` guarantees:

* the entry is only accepted if upstream Rekor would accept it: required fields
  present with the right types, base64 and hex well formed, every signature
  verified with the key or certificate in the entry (hashedrekord: over the
  digest, with the key's own hash, which must be the declared one; DSSE kinds:
  over the DSSE PAE, every signature and every verifier accounted for), key types
  limited to those sigstack supports. Each refusal raises
  :class:`~sigstack.core.errors.InvalidRequest` (or ``VerificationError``, also
  400) naming the field at fault;
* the returned ``body`` is byte-identical to the body upstream Rekor stores for
  the same request: RFC 8785 JSON of ``{"apiVersion", "kind", "spec"}`` with the
  canonical spec of the kind (hashedrekord: signature and standard PEM key;
  dsse: signatures sorted by their base64 text, each with the standard PEM of
  the key that verified it, plus payload and envelope SHA-256; intoto: the
  envelope without its payload, signatures as sent, the client's envelope hash
  and the payload SHA-256). Its Merkle leaf hash is therefore upstream's UUID;
* ``insert=False`` is the lookup form used by ``/api/v1/log/entries/retrieve``:
  it also accepts an entry already in canonical form (a dsse or intoto body as
  the log stores it), validating its structure, so a client can find an entry
  from what it holds.

:func:`body_search_keys` derives, from a stored body alone, the search keys
upstream indexes: artifact and payload hashes, the SHA-256 of each verifier's
canonical PEM, and each certificate's subject alternative names. It never raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ed25519

from sigstack.core import keys
from sigstack.core.encoding import canonical_json
from sigstack.core.errors import InvalidRequest, VerificationError
from sigstack.services.rekor import dsse
from sigstack.services.rekor.material import PemVerifier, load_pem_verifier, san_values

HASHEDREKORD = "hashedrekord"
DSSE = "dsse"
INTOTO = "intoto"

SUPPORTED = {HASHEDREKORD: "0.0.1", DSSE: "0.0.1", INTOTO: "0.0.2"}
"""The kind and version of every entry type this log accepts."""

_HASHEDREKORD_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX = re.compile(r"[0-9a-f]+")
_B64_TEXT = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@dataclass(frozen=True)
class Canonical:
    """A validated entry: its kind and version, the canonical body, indexed digests."""

    kind: str
    api_version: str
    body: bytes
    digests: tuple[str, ...] = field(default=())
    """Artifact digests named inside the (unstored) DSSE payload, for the search index."""


# --- JSON field access -------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object")
    return value


def _field(obj: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in obj or obj[name] is None:
        raise InvalidRequest(f"{where}.{name} is missing")
    return obj[name]


def _str(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string")
    if not value and not empty:
        raise InvalidRequest(f"{where} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate escaped in the JSON
        raise InvalidRequest(f"{where} is not valid Unicode") from exc
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a JSON array")
    if not value:
        raise InvalidRequest(f"{where} is empty")
    return value


def _b64(value: Any, where: str) -> bytes:
    text = _str(value, where)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise InvalidRequest(f"{where} is not valid base64") from exc
    if not raw:
        raise InvalidRequest(f"{where} is empty")
    return raw


def _sha256_hash(value: Any, where: str) -> dict[str, str]:
    obj = _obj(value, where)
    algorithm = _str(_field(obj, "algorithm", where), f"{where}.algorithm")
    if algorithm != "sha256":
        raise InvalidRequest(f"{where}.algorithm must be 'sha256'")
    digest = _str(_field(obj, "value", where), f"{where}.value")
    if len(digest) != 64 or not _LOWER_HEX.fullmatch(digest):
        raise InvalidRequest(f"{where}.value must be 64 lowercase hex digits")
    return {"algorithm": algorithm, "value": digest}


def _dump(doc: dict[str, Any]) -> bytes:
    try:
        return canonical_json(doc)
    except (rfc8785.CanonicalizationError, UnicodeError, ValueError) as exc:
        raise InvalidRequest(f"the entry cannot be canonicalized: {exc}") from exc


def _verifier(pem: bytes, where: str) -> PemVerifier:
    return load_pem_verifier(pem, where)


# --- entry point ---------------------------------------------------------------------------


def canonicalize(proposed: Any, *, insert: bool = True) -> Canonical:
    """Validate a proposed entry (parsed JSON) and build its canonical body."""
    entry = _obj(proposed, "the proposed entry")
    unknown = sorted(set(entry) - {"kind", "apiVersion", "spec"})
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r} in the proposed entry")
    kind = _str(_field(entry, "kind", "entry"), "kind")
    version = _str(_field(entry, "apiVersion", "entry"), "apiVersion")
    supported = ", ".join(f"{k} {v}" for k, v in SUPPORTED.items())
    if kind not in SUPPORTED:
        raise InvalidRequest(f"unsupported entry kind {kind!r}; this log accepts {supported}")
    if version != SUPPORTED[kind]:
        raise InvalidRequest(
            f"unsupported {kind} version {version!r}; this log accepts {supported}"
        )
    spec = _obj(_field(entry, "spec", "entry"), "spec")
    if kind == HASHEDREKORD:
        return _hashedrekord(spec)
    if kind == DSSE:
        return _dsse(spec, insert)
    return _intoto(spec, insert)


def _wrap(kind: str, spec: dict[str, Any]) -> bytes:
    return _dump({"apiVersion": SUPPORTED[kind], "kind": kind, "spec": spec})


# --- hashedrekord 0.0.1 --------------------------------------------------------------------


def _hashedrekord(spec: dict[str, Any]) -> Canonical:
    signature = _obj(_field(spec, "signature", "spec"), "spec.signature")
    content = _b64(_field(signature, "content", "spec.signature"), "spec.signature.content")
    public = _obj(_field(signature, "publicKey", "spec.signature"), "spec.signature.publicKey")
    pem = _b64(
        _field(public, "content", "spec.signature.publicKey"), "spec.signature.publicKey.content"
    )
    data = _obj(_field(spec, "data", "spec"), "spec.data")
    hash_obj = _obj(_field(data, "hash", "spec.data"), "spec.data.hash")
    algorithm = _str(_field(hash_obj, "algorithm", "spec.data.hash"), "spec.data.hash.algorithm")
    length = _HASHEDREKORD_ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidRequest("spec.data.hash.algorithm must be one of sha256, sha384, sha512")
    value = _str(_field(hash_obj, "value", "spec.data.hash"), "spec.data.hash.value")
    if len(value) != length or not _LOWER_HEX.fullmatch(value):
        raise InvalidRequest(
            f"spec.data.hash.value must be the {length} lowercase hex digits of a "
            f"{algorithm} digest"
        )
    verifier = _verifier(pem, "spec.signature.publicKey.content")
    key = verifier.public_key
    if isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidRequest(
            "Ed25519 keys sign hashedrekord entries with Ed25519ph, which this log does not "
            "support; sign with ECDSA or RSA, or upload a dsse entry"
        )
    expected = keys.hash_for_key(key)
    assert expected is not None
    if expected.name != algorithm:
        raise InvalidRequest(
            f"entry algorithm not allowed: a {keys.key_details(key)} key signs {expected.name} "
            f"digests, the entry declares {algorithm}"
        )
    try:
        keys.verify_prehashed(key, content, bytes.fromhex(value), expected)
    except VerificationError as exc:
        raise VerificationError(f"verifying signature: {exc.message}") from exc
    body = _wrap(
        HASHEDREKORD,
        {
            "data": {"hash": {"algorithm": algorithm, "value": value}},
            "signature": {
                "content": base64.b64encode(content).decode(),
                "publicKey": {"content": base64.b64encode(verifier.canonical_pem).decode()},
            },
        },
    )
    return Canonical(HASHEDREKORD, SUPPORTED[HASHEDREKORD], body)


# --- dsse 0.0.1 ----------------------------------------------------------------------------


def _parse_envelope(text: str) -> tuple[str, bytes, list[str]]:
    """``(payloadType, payload, [sig text])`` of a DSSE envelope in JSON."""
    try:
        envelope = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"spec.proposedContent.envelope is not valid JSON: {exc}") from exc
    env = _obj(envelope, "the DSSE envelope")
    payload_type = _str(_field(env, "payloadType", "envelope"), "envelope.payloadType")
    payload = dsse.decode_envelope_b64(
        _str(_field(env, "payload", "envelope"), "envelope.payload", empty=True),
        "envelope.payload",
    )
    signatures = _list(_field(env, "signatures", "envelope"), "envelope.signatures")
    if len(signatures) > dsse.MAX_SIGNATURES:
        raise InvalidRequest(
            f"the DSSE envelope has {len(signatures)} signatures; at most "
            f"{dsse.MAX_SIGNATURES} are accepted"
        )
    sigs = []
    for i, item in enumerate(signatures):
        sig = _obj(item, f"envelope.signatures[{i}]")
        if "keyid" in sig and sig["keyid"] is not None:
            _str(sig["keyid"], f"envelope.signatures[{i}].keyid", empty=True)
        at = f"envelope.signatures[{i}]"
        sigs.append(_str(_field(sig, "sig", at), f"{at}.sig"))
    return payload_type, payload, sigs


def _dsse(spec: dict[str, Any], insert: bool) -> Canonical:
    proposed = spec.get("proposedContent")
    # JSON null means absent, as in upstream's decoder (sigstore-python sends nulls here).
    computed = [
        name for name in ("signatures", "envelopeHash", "payloadHash") if spec.get(name) is not None
    ]
    if proposed is None:
        if insert:
            raise InvalidRequest("spec.proposedContent is missing")
        return _dsse_canonical_form(spec)
    if computed:
        raise InvalidRequest(
            f"spec.{computed[0]} is computed by the log; send spec.proposedContent alone"
        )
    content = _obj(proposed, "spec.proposedContent")
    envelope_text = _str(
        _field(content, "envelope", "spec.proposedContent"), "spec.proposedContent.envelope"
    )
    raw_verifiers = _list(
        _field(content, "verifiers", "spec.proposedContent"), "spec.proposedContent.verifiers"
    )
    if len(raw_verifiers) > dsse.MAX_VERIFIERS:
        raise InvalidRequest(
            f"{len(raw_verifiers)} verifiers were given; at most {dsse.MAX_VERIFIERS} are accepted"
        )
    verifiers = [
        _verifier(
            _b64(item, f"spec.proposedContent.verifiers[{i}]"),
            f"spec.proposedContent.verifiers[{i}]",
        )
        for i, item in enumerate(raw_verifiers)
    ]
    payload_type, payload, sig_texts = _parse_envelope(envelope_text)
    signatures = [
        dsse.decode_envelope_b64(text, f"envelope.signatures[{i}].sig")
        for i, text in enumerate(sig_texts)
    ]
    owners = dsse.match_signatures(
        dsse.pae(payload_type, payload),
        signatures,
        [dsse.verify_v1(v.public_key) for v in verifiers],
    )
    by_sig: dict[str, bytes] = {}
    for text, owner in zip(sig_texts, owners, strict=True):
        by_sig.setdefault(text, verifiers[owner].canonical_pem)
    envelope_bytes = envelope_text.encode("utf-8")  # _str checked it encodes
    body = _wrap(
        DSSE,
        {
            "envelopeHash": {
                "algorithm": "sha256",
                "value": hashlib.sha256(envelope_bytes).hexdigest(),
            },
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [
                {"signature": text, "verifier": base64.b64encode(by_sig[text]).decode()}
                for text in sorted(by_sig)
            ],
        },
    )
    digests = dsse.in_toto_digests(payload_type, payload)
    return Canonical(DSSE, SUPPORTED[DSSE], body, tuple(digests))


def _dsse_canonical_form(spec: dict[str, Any]) -> Canonical:
    signatures = _list(_field(spec, "signatures", "spec"), "spec.signatures")
    if len(signatures) > dsse.MAX_SIGNATURES:
        raise InvalidRequest(f"spec.signatures holds more than {dsse.MAX_SIGNATURES} entries")
    items = []
    for i, item in enumerate(signatures):
        where = f"spec.signatures[{i}]"
        sig = _obj(item, where)
        text = _str(_field(sig, "signature", where), f"{where}.signature")
        if not _B64_TEXT.fullmatch(text):
            raise InvalidRequest(f"{where}.signature is not valid base64")
        verifier = _b64(_field(sig, "verifier", where), f"{where}.verifier")
        items.append({"signature": text, "verifier": base64.b64encode(verifier).decode()})
    items.sort(key=lambda s: s["signature"])
    body = _wrap(
        DSSE,
        {
            "envelopeHash": _sha256_hash(_field(spec, "envelopeHash", "spec"), "spec.envelopeHash"),
            "payloadHash": _sha256_hash(_field(spec, "payloadHash", "spec"), "spec.payloadHash"),
            "signatures": items,
        },
    )
    return Canonical(DSSE, SUPPORTED[DSSE], body)


# --- intoto 0.0.2 --------------------------------------------------------------------------


def _intoto(spec: dict[str, Any], insert: bool) -> Canonical:
    content = _obj(_field(spec, "content", "spec"), "spec.content")
    envelope = _obj(_field(content, "envelope", "spec.content"), "spec.content.envelope")
    where = "spec.content.envelope"
    payload_type = _str(_field(envelope, "payloadType", where), f"{where}.payloadType")
    envelope_hash = _sha256_hash(_field(content, "hash", "spec.content"), "spec.content.hash")
    signatures = _list(_field(envelope, "signatures", where), f"{where}.signatures")
    if len(signatures) > dsse.MAX_SIGNATURES:
        raise InvalidRequest(
            f"{where}.signatures has {len(signatures)} entries; at most "
            f"{dsse.MAX_SIGNATURES} are accepted"
        )
    stored: list[dict[str, str]] = []
    sig_texts: list[str] = []
    pems: list[bytes] = []
    for i, item in enumerate(signatures):
        at = f"{where}.signatures[{i}]"
        sig = _obj(item, at)
        # Both fields are base64 of what the envelope holds: the signature's own
        # base64 text and the PEM verifier ("double encoding", as upstream stores it).
        sig_outer = _b64(_field(sig, "sig", at), f"{at}.sig")
        key_outer = _b64(_field(sig, "publicKey", at), f"{at}.publicKey")
        try:
            sig_texts.append(sig_outer.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{at}.sig does not encode base64 text") from exc
        pems.append(key_outer)
        entry: dict[str, str] = {}
        keyid = sig.get("keyid")
        if keyid is not None and _str(keyid, f"{at}.keyid", empty=True):
            entry["keyid"] = keyid
        entry["publicKey"] = base64.b64encode(key_outer).decode()
        entry["sig"] = base64.b64encode(sig_outer).decode()
        stored.append(entry)
    payload_field = envelope.get("payload")
    if payload_field is None or payload_field == "":
        if insert:
            raise InvalidRequest(f"{where}.payload is missing")
        payload_hash = _sha256_hash(
            _field(content, "payloadHash", "spec.content"), "spec.content.payloadHash"
        )
        return Canonical(
            INTOTO,
            SUPPORTED[INTOTO],
            _intoto_body(payload_type, stored, envelope_hash, payload_hash),
        )
    inner = _b64(payload_field, f"{where}.payload")
    try:
        payload = base64.b64decode(inner, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"{where}.payload must be base64 of the envelope's base64 payload"
        ) from exc
    verifiers = [_verifier(pem, f"{where}.signatures[{i}].publicKey") for i, pem in enumerate(pems)]
    raw_sigs = [
        dsse.decode_envelope_b64(text, f"{where}.signatures[{i}].sig")
        for i, text in enumerate(sig_texts)
    ]
    dsse.match_signatures(
        dsse.pae(payload_type, payload),
        raw_sigs,
        [dsse.verify_v1(v.public_key) for v in verifiers],
    )
    payload_hash = {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}
    body = _intoto_body(payload_type, stored, envelope_hash, payload_hash)
    digests = dsse.in_toto_digests(payload_type, payload)
    return Canonical(INTOTO, SUPPORTED[INTOTO], body, tuple(digests))


def _intoto_body(
    payload_type: str,
    signatures: list[dict[str, str]],
    envelope_hash: dict[str, str],
    payload_hash: dict[str, str],
) -> bytes:
    return _wrap(
        INTOTO,
        {
            "content": {
                "envelope": {"payloadType": payload_type, "signatures": signatures},
                "hash": envelope_hash,
                "payloadHash": payload_hash,
            }
        },
    )


# --- search keys of a stored body --------------------------------------------------------


@dataclass
class SearchKeys:
    """What a stored body can be found by."""

    hashes: list[str] = field(default_factory=list)
    """``"<alg>:<lowercase hex>"`` artifact, payload and envelope digests."""
    key_hashes: list[bytes] = field(default_factory=list)
    """SHA-256 of each verifier's canonical PEM."""
    subjects: list[str] = field(default_factory=list)
    """Lowercased subject alternative names of the certificates."""


def body_search_keys(body: bytes) -> SearchKeys:
    """The search keys of a stored body (see the module docstring); never raises."""
    out = SearchKeys()
    try:
        doc = json.loads(body)
        kind = doc["kind"]
        spec = doc["spec"]
        pems: list[bytes] = []
        if kind == HASHEDREKORD:
            pems.append(base64.b64decode(spec["signature"]["publicKey"]["content"]))
            h = spec["data"]["hash"]
            out.hashes.append(f"{h['algorithm']}:{h['value']}".lower())
        elif kind == DSSE:
            pems.extend(base64.b64decode(s["verifier"]) for s in spec["signatures"])
            for name in ("payloadHash", "envelopeHash"):
                h = spec[name]
                out.hashes.append(f"{h['algorithm']}:{h['value']}".lower())
        elif kind == INTOTO:
            content = spec["content"]
            pems.extend(base64.b64decode(s["publicKey"]) for s in content["envelope"]["signatures"])
            h = content["payloadHash"]
            out.hashes.append(f"{h['algorithm']}:{h['value']}".lower())
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        return out
    for pem in pems:
        try:
            verifier = load_pem_verifier(pem, "verifier")
        except InvalidRequest:
            continue
        out.key_hashes.append(verifier.key_hash)
        if verifier.certificate is not None:
            out.subjects.extend(v.lower() for v in san_values(verifier.certificate))
    return out
