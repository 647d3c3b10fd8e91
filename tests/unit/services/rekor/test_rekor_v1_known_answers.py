"""Known answers: sigstack builds, byte for byte, the bodies the public Rekor stored.

Two real entries of rekor.sigstore.dev (``data/``, see PROVENANCE.md): a hashedrekord
0.0.1 uploaded by sigstore-python and an intoto 0.0.2 npm provenance uploaded by
sigstore-js. Each file carries the body the log stored and its inclusion proof against
the public log's root; the request is rebuilt from the bundle's material exactly as the
client built it, and sigstack's canonical body must equal the stored one, so its leaf
hash (the entry UUID) is the public log's.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rekor_kit import DATA, PY_CLIENT, V1Log, js_intoto_entry, only_entry
from sigstore.hashes import Hashed
from sigstore_models.common.v1 import HashAlgorithm

from sigstack.core.merkle import leaf_hash, verify_inclusion
from sigstack.services.rekor.v1_types import canonicalize

NPM_TARBALL_SHA512 = (
    "669cd60051c816ac85139e9d5ea817fc3903459773fab45c8e8224fd1414e085"
    "f4c220afd65f12ed9ad70c770273eb9a7feea8ef0de1da5de0e86606e5328df5"
)


def _load(name: str) -> tuple[dict[str, Any], bytes]:
    bundle = json.loads((DATA / name).read_text())
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    body = base64.b64decode(entry["canonicalizedBody"])
    proof = entry["inclusionProof"]
    # The stored body really is the public log's leaf (guards the test data itself).
    verify_inclusion(
        leaf_hash(body),
        int(proof["logIndex"]),
        int(proof["treeSize"]),
        [base64.b64decode(h) for h in proof["hashes"]],
        base64.b64decode(proof["rootHash"]),
    )
    return bundle, body


def _hashedrekord_request() -> tuple[dict[str, Any], bytes]:
    bundle, body = _load("sigstore_python_bundle_v3.txt.sigstore")
    material = bundle["verificationMaterial"]
    cert = x509.load_der_x509_certificate(base64.b64decode(material["certificate"]["rawBytes"]))
    signature = base64.b64decode(bundle["messageSignature"]["signature"])
    artifact = (DATA / "sigstore_python_bundle_v3.txt").read_bytes()
    hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=hashlib.sha256(artifact).digest())
    return dict(PY_CLIENT._build_hashed_rekord_request(hashed, signature, cert)), body


def _intoto_request() -> tuple[dict[str, Any], bytes]:
    bundle, body = _load("sigstore_js_npm_sigstore-3.1.0.sigstore.json")
    chain = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    cert = x509.load_der_x509_certificate(base64.b64decode(chain[0]["rawBytes"]))
    # sigstore-js sends Fulcio's PEM as it received it: no final newline.
    pem = cert.public_bytes(serialization.Encoding.PEM).rstrip(b"\n")
    return js_intoto_entry(bundle["dsseEnvelope"], pem), body


def test_sigstore_python_hashedrekord_body_is_the_public_logs() -> None:
    request, stored = _hashedrekord_request()
    assert canonicalize(request).body == stored


def test_sigstore_js_npm_provenance_body_is_the_public_logs() -> None:
    request, stored = _intoto_request()
    canonical = canonicalize(request)
    assert canonical.body == stored
    # The statement's subject (the npm tarball's sha512) is kept for search.
    assert canonical.digests == (f"sha512:{NPM_TARBALL_SHA512}",)


def test_logged_here_the_uuid_is_the_public_logs(v1: V1Log) -> None:
    for request, stored in (_hashedrekord_request(), _intoto_request()):
        entry_id, answer = v1.add(request)
        assert entry_id[16:] == leaf_hash(stored).hex()
        assert base64.b64decode(only_entry(answer)[1]["body"]) == stored
    query = json.dumps({"hash": f"sha512:{NPM_TARBALL_SHA512}"}).encode()
    assert len(v1.service.search_index(query)) == 1
