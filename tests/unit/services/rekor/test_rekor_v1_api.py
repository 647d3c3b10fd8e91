"""Rekor v1 over HTTP: status codes, read paths, search, proofs, and the real client.

sigstore-python's ``RekorClient`` (requests, over a real loopback server) creates,
reads and retrieves entries, including the trailing-slash ``entries/retrieve/`` its
detached verification calls. Every other route is driven in-process.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import rekor_types
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from rekor_kit import (
    HOST,
    ORIGIN,
    TREE_ID,
    LoopbackServer,
    Signer,
    V1Log,
    closing,
    http,
    make_signer,
    only_entry,
    open_v1_log,
)
from sigstore._internal.rekor import EntryRequestBody, RekorClientError
from sigstore._internal.rekor.checkpoint import SignedCheckpoint
from sigstore._internal.rekor.client import RekorClient
from sigstore._utils import KeyID
from sigstore.models import TransparencyLogEntry
from starlette.types import ASGIApp

from sigstack.core import note
from sigstack.core.merkle import leaf_hash, verify_consistency
from sigstack.log.engine import BatchPolicy, TransparencyLog
from sigstack.log.memory import MemoryStorage
from sigstack.services.rekor import v1 as v1_module
from sigstack.services.rekor.api import create_rekor_app
from sigstack.services.rekor.service import RekorService

V2_ORIGIN = "rekor.example.test"


@pytest.fixture
def v2() -> Iterator[RekorService]:
    storage = MemoryStorage()
    signer = note.Ed25519NoteSigner(V2_ORIGIN, ed25519.Ed25519PrivateKey.generate())
    TransparencyLog.create(storage, signer, V2_ORIGIN)
    tlog = TransparencyLog(
        storage, signer, V2_ORIGIN, verifier=signer.verifier(), policy=BatchPolicy(max_age=0.001)
    )
    tlog.open()
    try:
        yield RekorService(tlog, signer.verifier().key_id)
    finally:
        tlog.close()


@pytest.fixture
def app(v2: RekorService, v1: V1Log) -> ASGIApp:
    return create_rekor_app(v2, v1.service)


def _post(app: ASGIApp, path: str, body: Any) -> Any:
    return http(app, "POST", path, content=json.dumps(body).encode())


# --- writing ---------------------------------------------------------------------------------


def test_create_is_201_with_location_and_etag(app: ASGIApp, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"http")
    resp = _post(app, "/api/v1/log/entries", request)
    assert resp.status_code == 201, resp.text
    entry_id = only_entry(resp.json())[0]
    assert resp.headers["location"] == f"/api/v1/log/entries/{entry_id}"
    assert resp.headers["etag"] == entry_id
    assert resp.headers["content-type"] == "application/json"


def test_duplicate_is_409_and_location_leads_to_the_entry(app: ASGIApp, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"dup")
    first = _post(app, "/api/v1/log/entries", request)
    again = _post(app, "/api/v1/log/entries", request)
    assert again.status_code == 409
    error = rekor_types.Error.model_validate_json(again.text)  # sigstore-python's error model
    assert error.code == 409 and "already exists" in error.message
    fetched = http(app, "GET", again.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == first.json() | fetched.json()  # same entry ID
    assert only_entry(fetched.json())[1]["body"] == only_entry(first.json())[1]["body"]


def test_body_over_100_kib_is_413(app: ASGIApp) -> None:
    big = b'{"kind":"hashedrekord","pad":"' + b"x" * (100 * 1024) + b'"}'
    resp = http(app, "POST", "/api/v1/log/entries", content=big)
    assert resp.status_code == 413
    assert "limit" in resp.json()["message"]


def test_bad_entries_are_400_naming_the_problem(app: ASGIApp, signer: Signer) -> None:
    request, _ = signer.hashedrekord(b"bad")
    request["kind"] = "rpm"
    resp = _post(app, "/api/v1/log/entries", request)
    assert resp.status_code == 400 and "unsupported entry kind 'rpm'" in resp.json()["message"]
    request, _ = signer.hashedrekord(b"bad")
    request["spec"]["signature"]["content"] = base64.b64encode(
        b"\x30\x06\x02\x01\x01\x02\x01\x01"
    ).decode()
    resp = _post(app, "/api/v1/log/entries", request)
    assert resp.status_code == 400 and "signature" in resp.json()["message"]
    assert http(app, "POST", "/api/v1/log/entries", content=b"{").status_code == 400


# --- reading entries -------------------------------------------------------------------------


def _three(
    app: ASGIApp, signer: Signer, requests: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    out = []
    for i in range(3):
        request = signer.hashedrekord(f"read {i}".encode())[0]
        resp = _post(app, "/api/v1/log/entries", request)
        assert resp.status_code == 201
        out.append(resp.json())
        if requests is not None:
            requests.append(request)
    return out


def test_entries_by_index_and_uuid_verify(app: ASGIApp, v1: V1Log, signer: Signer) -> None:
    created = _three(app, signer)
    for i, answer in enumerate(created):
        entry_id, entry = only_entry(answer)
        uuid = entry_id[16:]
        for path in (
            f"/api/v1/log/entries?logIndex={i}",
            f"/api/v1/log/entries/{entry_id}",
            f"/api/v1/log/entries/{uuid}",
            f"/api/v1/log/entries/{entry_id.upper()}",
        ):
            resp = http(app, "GET", path)
            assert resp.status_code == 200, (path, resp.text)
            got_id, got = only_entry(resp.json())
            assert got_id == entry_id
            assert got["body"] == entry["body"] and got["integratedTime"] == entry["integratedTime"]
            assert got["verification"]["inclusionProof"]["treeSize"] == 3
            TransparencyLogEntry._from_v1_response(resp.json())._verify(v1.keyring)


def test_unknown_entries_are_404_and_malformed_ids_400(app: ASGIApp, signer: Signer) -> None:
    _three(app, signer)
    assert http(app, "GET", "/api/v1/log/entries?logIndex=3").status_code == 404
    assert http(app, "GET", "/api/v1/log/entries/" + "ab" * 32).status_code == 404
    other_tree = f"{TREE_ID + 1:016x}" + "ab" * 32
    assert http(app, "GET", f"/api/v1/log/entries/{other_tree}").status_code == 404
    for bad in ("xyz", "ab" * 31, "zz" * 32, "ab" * 33):
        resp = http(app, "GET", f"/api/v1/log/entries/{bad}")
        assert resp.status_code == 400, bad
        assert "entry UUID" in resp.json()["message"]
    for bad in ("", "-1", "one", "1.5"):
        assert http(app, "GET", f"/api/v1/log/entries?logIndex={bad}").status_code == 400
    assert http(app, "GET", "/api/v1/log/entries").status_code == 400


def test_retrieve_by_uuids_indexes_and_entries(app: ASGIApp, v1: V1Log, signer: Signer) -> None:
    requests: list[dict[str, Any]] = []
    created = _three(app, signer, requests)
    ids = [only_entry(c)[0] for c in created]
    query = {
        "entryUUIDs": [ids[0], ids[1][16:], "cd" * 32],
        "logIndexes": [2, 99],
        "entries": [requests[1]],  # the proposed entry as the client sent it
    }
    for path in ("/api/v1/log/entries/retrieve", "/api/v1/log/entries/retrieve/"):
        resp = _post(app, path, query)
        assert resp.status_code == 200, resp.text
        found = [only_entry(r)[0] for r in resp.json()]
        assert found == [ids[0], ids[1], ids[1], ids[2]]
        for result in resp.json():
            TransparencyLogEntry._from_v1_response(result)._verify(v1.keyring)


def test_retrieve_of_nothing_known_is_an_empty_list(app: ASGIApp) -> None:
    resp = _post(app, "/api/v1/log/entries/retrieve", {"entryUUIDs": ["ab" * 32]})
    assert resp.status_code == 200 and resp.json() == []


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"entryUUIDs": ["ab" * 32] * 11}, 422, "at most 10"),
        ({"entryUUIDs": ["ab"] * 5, "logIndexes": [1] * 6}, 422, "at most 10"),
        ({"entryUUIDs": ["nothex"]}, 400, "entry UUID"),
        ({"logIndexes": [-1]}, 400, "non-negative"),
        ({"logIndexes": ["1"]}, 400, "non-negative"),
        ({"entries": [{"kind": "hashedrekord"}]}, 400, "entries[0]"),
        ({"entryUUIDs": "ab"}, 400, "must be a JSON array"),
        ({}, 400, "names no"),
        ({"uuids": []}, 400, "unknown field"),
        ([], 400, "JSON object"),
    ],
)
def test_bad_retrieve_queries(app: ASGIApp, query: Any, status: int, message: str) -> None:
    resp = _post(app, "/api/v1/log/entries/retrieve", query)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["message"]


def test_retrieve_finds_an_entry_by_its_canonical_body(app: ASGIApp, signer: Signer) -> None:
    request, _ = signer.dsse()
    created = _post(app, "/api/v1/log/entries", request).json()
    entry_id, entry = only_entry(created)
    canonical = json.loads(base64.b64decode(entry["body"]))
    resp = _post(app, "/api/v1/log/entries/retrieve", {"entries": [canonical]})
    assert [only_entry(r)[0] for r in resp.json()] == [entry_id]


# --- search ----------------------------------------------------------------------------------


def test_search_by_hash_key_email_and_subject(app: ASGIApp, signer: Signer) -> None:
    bob = make_signer(email="bob@example.com", uri="https://example.com/bob")
    a = only_entry(_post(app, "/api/v1/log/entries", signer.hashedrekord(b"a")[0]).json())[0]
    b = only_entry(_post(app, "/api/v1/log/entries", bob.hashedrekord(b"b")[0]).json())[0]
    c = only_entry(_post(app, "/api/v1/log/entries", signer.hashedrekord(b"b")[0]).json())[0]
    digest_b = hashlib.sha256(b"b").hexdigest()
    cert_b64 = base64.b64encode(signer.cert_pem).decode()

    def search(query: dict[str, Any]) -> list[str]:
        resp = _post(app, "/api/v1/index/retrieve", query)
        assert resp.status_code == 200, resp.text
        return list(resp.json())

    assert search({"hash": f"sha256:{digest_b}"}) == [b, c]
    assert search({"hash": digest_b.upper()}) == [b, c]
    assert search({"publicKey": {"format": "x509", "content": cert_b64}}) == [a, c]
    assert search({"email": "ALICE@example.com"}) == [a, c]
    assert search({"subject": "https://example.com/bob"}) == [b]
    both = {"hash": digest_b, "email": "alice@example.com"}
    assert search({**both, "operator": "and"}) == [c]
    assert search({**both, "operator": "or"}) == [a, b, c]
    assert search({"email": "nobody@example.com"}) == []


def test_search_by_bare_public_key(app: ASGIApp) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(b"k").digest()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    request = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
            "signature": {
                "content": base64.b64encode(
                    key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
                ).decode(),
                "publicKey": {"content": base64.b64encode(pem).decode()},
            },
        },
    }
    entry_id = only_entry(_post(app, "/api/v1/log/entries", request).json())[0]
    # A different spelling of the same key (DER re-wrapped at 76 columns) finds it too.
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    odd = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----"
    query = {"publicKey": {"format": "x509", "content": base64.b64encode(odd).decode()}}
    assert _post(app, "/api/v1/index/retrieve", query).json() == [entry_id]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "at least one"),
        ({"hash": "xyz"}, "hex digest"),
        ({"hash": "sha512:" + "ab" * 32}, "not 64 hex"),
        ({"hash": 5}, "must be a string"),
        ({"email": "not-an-email"}, "not an email"),
        ({"email": "a@b", "operator": "xor"}, "operator"),
        ({"publicKey": {"format": "pgp", "content": "AAAA"}}, "not supported"),
        ({"publicKey": {"format": "x509", "content": "!!"}}, "not valid base64"),
        ({"publicKey": {"format": "x509", "content": "AAAA"}}, "not valid PEM"),
        ({"publicKey": "x"}, "publicKey must be an object"),
        ({"emial": "a@b"}, "unknown field 'emial'"),
        ([], "JSON object"),
    ],
)
def test_bad_search_queries_are_400(app: ASGIApp, query: Any, message: str) -> None:
    resp = _post(app, "/api/v1/index/retrieve", query)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["message"]


def test_index_keys_are_a_pure_function_of_the_record(v1: V1Log, signer: Signer) -> None:
    request, _ = signer.dsse(subject_digest="12" * 32)
    v1.add(request)
    record = v1.tlog.entry(0)
    keys = v1_module.index_keys(record)
    assert keys == v1_module.index_keys(bytes(record))
    namespaces = {ns for ns, _ in keys}
    assert namespaces == {"hash", "key", "san"}
    assert ("hash", b"sha256:" + b"12" * 32) in keys
    assert v1_module.index_keys(b"garbage") == []
    found = v1.service.search_index(json.dumps({"hash": "12" * 32}).encode())
    assert found[0][16:] == leaf_hash(v1_module.leaf_of(record)).hex()


def test_search_index_is_rebuilt_from_the_records(v1: V1Log, signer: Signer) -> None:
    """index_keys is a pure function of the stored record: a lost index comes back."""
    request, _ = signer.dsse(subject_digest="34" * 32)
    entry_id, _ = v1.add(request)
    queries = [{"hash": "34" * 32}, {"email": "alice@example.com"}]
    before = [v1.service.search_index(json.dumps(q).encode()) for q in queries]
    assert before == [[entry_id], [entry_id]]
    v1.tlog.close()
    v1.storage.index_truncate(0)  # the index is gone; the entry bundles remain
    for reopened in closing(open_v1_log(v1.key, v1.clock, v1.storage)):
        after = [reopened.service.search_index(json.dumps(q).encode()) for q in queries]
        assert after == before
        assert only_entry(reopened.service.entry_by_uuid(entry_id))[0] == entry_id


# --- the tree -------------------------------------------------------------------------------


def test_log_info_carries_a_verifiable_checkpoint(app: ASGIApp, v1: V1Log, signer: Signer) -> None:
    _three(app, signer)
    info = http(app, "GET", "/api/v1/log").json()
    assert info["treeSize"] == 3 and info["treeID"] == str(TREE_ID)
    checkpoint = SignedCheckpoint.from_text(info["signedTreeHead"])
    assert checkpoint.checkpoint.origin == ORIGIN
    assert checkpoint.checkpoint.log_size == 3
    assert checkpoint.checkpoint.log_hash == info["rootHash"]
    assert checkpoint.signed_note.signatures[0].name == HOST
    checkpoint.signed_note.verify(v1.keyring, KeyID(v1.service.log_id))


def test_empty_log_info(app: ASGIApp) -> None:
    info = http(app, "GET", "/api/v1/log").json()
    assert info["treeSize"] == 0 and info["rootHash"] == hashlib.sha256(b"").hexdigest()


def test_public_key_is_the_log_key(app: ASGIApp, v1: V1Log) -> None:
    resp = http(app, "GET", "/api/v1/log/publicKey")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-pem-file"
    key = serialization.load_pem_public_key(resp.content)
    assert key == v1.key.public_key()
    assert http(app, "GET", f"/api/v1/log/publicKey?treeID={TREE_ID}").status_code == 200
    assert http(app, "GET", "/api/v1/log/publicKey?treeID=42").status_code == 400


def test_consistency_proofs_verify(app: ASGIApp, signer: Signer) -> None:
    roots = {}
    for i in range(6):
        _post(app, "/api/v1/log/entries", signer.hashedrekord(f"c{i}".encode())[0])
        info = http(app, "GET", "/api/v1/log").json()
        roots[info["treeSize"]] = bytes.fromhex(info["rootHash"])
    for first in range(1, 7):
        for last in range(first, 7):
            resp = http(app, "GET", f"/api/v1/log/proof?firstSize={first}&lastSize={last}")
            assert resp.status_code == 200, resp.text
            proof = resp.json()
            assert bytes.fromhex(proof["rootHash"]) == roots[last]
            hashes = [bytes.fromhex(h) for h in proof["hashes"]]
            verify_consistency(first, last, roots[first], roots[last], hashes)
    default_first = http(app, "GET", "/api/v1/log/proof?lastSize=6").json()
    assert bytes.fromhex(default_first["rootHash"]) == roots[6]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?firstSize=2",
        "?lastSize=0",
        "?firstSize=0&lastSize=2",
        "?firstSize=3&lastSize=2",
        "?firstSize=1&lastSize=9",
        "?firstSize=a&lastSize=2",
        "?lastSize=2&treeID=7",
    ],
)
def test_bad_proof_requests_are_400(app: ASGIApp, signer: Signer, query: str) -> None:
    _three(app, signer)
    resp = http(app, "GET", f"/api/v1/log/proof{query}")
    assert resp.status_code == 400, resp.text


# --- the app ----------------------------------------------------------------------------------


def test_openapi_documents_every_route(app: ASGIApp) -> None:
    paths = http(app, "GET", "/openapi.json").json()["paths"]
    for path in (
        "/api/v1/log/entries",
        "/api/v1/log/entries/{entryUUID}",
        "/api/v1/log/entries/retrieve",
        "/api/v1/index/retrieve",
        "/api/v1/log",
        "/api/v1/log/publicKey",
        "/api/v1/log/proof",
        "/api/v2/log/entries",
        "/api/v2/checkpoint",
        "/api/v2/tile/{path}",
    ):
        assert path in paths, path
    assert set(paths["/api/v1/log/entries"]) == {"get", "post"}


def test_v2_routes_still_work_beside_v1(app: ASGIApp) -> None:
    assert http(app, "GET", "/api/v2/checkpoint").status_code == 200
    assert http(app, "GET", "/healthz").status_code == 200


def test_v2_only_app_has_no_v1_routes(v2: RekorService) -> None:
    app = create_rekor_app(v2)
    assert http(app, "GET", "/api/v1/log").status_code == 404
    assert "/api/v1/log" not in http(app, "GET", "/openapi.json").json()["paths"]


def test_health_fails_when_the_v1_log_stops(app: ASGIApp, v1: V1Log) -> None:
    v1.tlog.close()
    resp = http(app, "GET", "/healthz")
    assert resp.status_code == 503 and ORIGIN in resp.json()["reason"]


# --- the real client over a real socket ------------------------------------------------------


@pytest.fixture
def served(v2: RekorService, v1_key: Any, clock: Any) -> Iterator[tuple[str, V1Log]]:
    for v1 in closing(open_v1_log(v1_key, clock)):
        with LoopbackServer(create_rekor_app(v2, v1.service)) as server:
            yield server.url, v1


def test_sigstore_python_client_end_to_end(served: tuple[str, V1Log], signer: Signer) -> None:
    url, v1 = served
    client = RekorClient(url)
    requests_made = []
    for i in range(3):
        request, signature = signer.hashedrekord(f"client {i}".encode())
        entry = client.create_entry(EntryRequestBody(request))  # POST /api/v1/log/entries
        entry._verify(v1.keyring)
        requests_made.append((request, signature, entry))
    info = client.log.get()
    assert info.tree_size == 3 and info.tree_id == str(TREE_ID)
    by_index = client.log.entries.get(log_index=2)
    assert by_index._inner.canonicalized_body == requests_made[2][2]._inner.canonicalized_body
    by_index._verify(v1.keyring)
    # Detached verification's lookup: POST .../entries/retrieve/ with the expected body.
    from sigstore._internal.rekor import _hashedrekord_from_parts

    _, signature, created = requests_made[1]
    expected = _hashedrekord_from_parts(signer.cert, signature, signer.hashed(b"client 1"))
    found = client.log.entries.retrieve.post(expected)
    assert found is not None
    assert found._inner.log_index == created._inner.log_index
    assert found._inner.integrated_time == created._inner.integrated_time
    found._verify(v1.keyring)
    missing = _hashedrekord_from_parts(signer.cert, signature, signer.hashed(b"never signed"))
    with pytest.raises(RekorClientError, match=r"^400: "):
        client.log.entries.retrieve.post(missing)  # the signature does not match: 400
