"""The RFC 6962 read API monitors use: get-entries, get-proof-by-hash, get-entry-and-proof."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core import pki
from sigstack.core.merkle import verify_inclusion
from sigstack.core.sct import SignedCertificateTimestamp
from sigstack.services.ctlog import service as ctlog_service
from sigstack.services.ctlog.api import create_app
from sigstack.services.ctlog.service import CTLogService

pytestmark = pytest.mark.anyio
der = pki.cert_der


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def u24_list(data: bytes) -> list[bytes]:
    items, at = [], 0
    while at < len(data):
        n = int.from_bytes(data[at : at + 3], "big")
        items.append(data[at + 3 : at + 3 + n])
        at += 3 + n
    return items


@pytest.fixture
async def client(service: CTLogService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://ctlog.test") as c:
        yield c


async def _submit(
    client: httpx.AsyncClient, path: str, chain: list[bytes]
) -> SignedCertificateTimestamp:
    resp = await client.post(f"/ct/v1/{path}", json={"chain": [b64(d) for d in chain]})
    assert resp.status_code == 200, resp.text
    return SignedCertificateTimestamp.from_json(resp.json())


async def test_entries_are_what_was_logged_and_prove_into_the_sth(
    client: httpx.AsyncClient, fulcio_pki: Any, log_key: ec.EllipticCurvePrivateKey
) -> None:
    precert = der(fulcio_pki.precert())
    leaf_cert = der(fulcio_pki.leaf())
    sct_pre = await _submit(client, "add-pre-chain", [precert, *fulcio_pki.chain_ders])
    sct_x509 = await _submit(client, "add-chain", [leaf_cert, *fulcio_pki.chain_ders])
    sth = (await client.get("/ct/v1/get-sth")).json()
    assert sth["tree_size"] == 2

    entries = (await client.get("/ct/v1/get-entries", params={"start": 0, "end": 5})).json()[
        "entries"
    ]
    assert len(entries) == 2  # end is clamped to the tree
    root = base64.b64decode(sth["sha256_root_hash"])
    for i, (entry, sct) in enumerate(zip(entries, [sct_pre, sct_x509], strict=True)):
        leaf = base64.b64decode(entry["leaf_input"])
        assert leaf[:2] == b"\x00\x00"  # MerkleTreeLeaf v1, timestamped_entry
        sct.verify(log_key.public_key(), leaf[2:])  # the SCT covers exactly this entry
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        proof = (
            await client.get(
                "/ct/v1/get-proof-by-hash", params={"hash": b64(leaf_hash), "tree_size": 2}
            )
        ).json()
        assert proof["leaf_index"] == i
        path = [base64.b64decode(h) for h in proof["audit_path"]]
        verify_inclusion(leaf_hash, i, 2, path, root)
        both = (
            await client.get("/ct/v1/get-entry-and-proof", params={"leaf_index": i, "tree_size": 2})
        ).json()
        assert (
            both["leaf_input"] == entry["leaf_input"] and both["audit_path"] == proof["audit_path"]
        )

    pre_extra = base64.b64decode(entries[0]["extra_data"])
    (pre_cert,) = u24_list(pre_extra[: 3 + int.from_bytes(pre_extra[:3], "big")])
    assert pre_cert == precert
    chain_blob = pre_extra[3 + len(precert) :]
    assert u24_list(chain_blob[3:]) == list(fulcio_pki.chain_ders)
    x509_extra = base64.b64decode(entries[1]["extra_data"])
    assert u24_list(x509_extra[3:]) == list(fulcio_pki.chain_ders)


async def test_get_entries_pages(
    client: httpx.AsyncClient, fulcio_pki: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctlog_service, "MAX_GET_ENTRIES", 2)
    for _ in range(3):
        await _submit(client, "add-chain", [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders])
    first = (await client.get("/ct/v1/get-entries", params={"start": 0, "end": 2})).json()[
        "entries"
    ]
    rest = (await client.get("/ct/v1/get-entries", params={"start": 2, "end": 2})).json()["entries"]
    assert len(first) == 2 and len(rest) == 1


@pytest.mark.parametrize(
    ("path", "params", "status", "fragment"),
    [
        ("get-entries", {"start": 1, "end": 0}, 400, "start"),
        ("get-entries", {"start": 5, "end": 9}, 400, "not below the tree size"),
        ("get-entries", {"start": "x", "end": 1}, 400, "start"),
        ("get-proof-by-hash", {"hash": b64(b"\x00" * 32), "tree_size": 1}, 404, "no entry"),
        ("get-proof-by-hash", {"hash": b64(b"\x00" * 32), "tree_size": 0}, 400, "tree_size"),
        ("get-proof-by-hash", {"hash": b64(b"\x00" * 32), "tree_size": 2}, 400, "tree_size"),
        ("get-proof-by-hash", {"hash": "!!", "tree_size": 1}, 400, "hash"),
        ("get-proof-by-hash", {"hash": b64(b"short"), "tree_size": 1}, 400, "32-byte"),
        ("get-entry-and-proof", {"leaf_index": 1, "tree_size": 1}, 400, "leaf_index"),
    ],
)
async def test_bad_read_requests_are_named(
    client: httpx.AsyncClient,
    fulcio_pki: Any,
    path: str,
    params: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    await _submit(client, "add-chain", [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders])
    resp = await client.get(f"/ct/v1/{path}", params=params)
    assert resp.status_code == status, resp.text
    assert fragment in resp.json()["message"]


async def test_tiles_are_cached_for_a_year_and_the_tree_head_is_revalidated(
    client: httpx.AsyncClient, fulcio_pki: Any
) -> None:
    """static-ct-api: a tile or data tile at a path never changes (partial ones too, as
    only what a checkpoint covers is served); the checkpoint and the STH always may."""
    await _submit(client, "add-chain", [der(fulcio_pki.leaf()), *fulcio_pki.chain_ders])
    for path in ("/tile/0/000.p/1", "/tile/data/000.p/1"):
        resp = await client.get(path)
        assert resp.status_code == 200, path
        directives = {d.strip() for d in resp.headers["cache-control"].split(",")}
        assert {"public", "immutable", "max-age=31536000"} <= directives, path
    checkpoint = await client.get("/checkpoint")
    assert checkpoint.headers["cache-control"] == "no-cache"
    sth = await client.get("/ct/v1/get-sth")
    assert sth.headers["cache-control"] == "no-store"
    # Not covered by a checkpoint: absent, so nothing immutable is ever served early.
    assert (await client.get("/tile/0/000.p/2")).status_code == 404
