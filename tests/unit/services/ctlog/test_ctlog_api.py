"""The RFC 6962 HTTP surface: happy paths, and one named 400 per rejected submission."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import CTKeyring, Keyring
from sigstore_models.common import v1 as common_v1

from sigstack.core import pki
from sigstack.core.keys import spki_der
from sigstack.core.sct import SignedCertificateTimestamp
from sigstack.services.ctlog.api import OPENAPI, create_app, parse_chain_request
from sigstack.services.ctlog.service import CTLogService

pytestmark = pytest.mark.anyio

der = pki.cert_der


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(*ders: bytes) -> dict[str, Any]:
    return {"chain": [b64(d) for d in ders]}


@pytest.fixture
async def client(service: CTLogService) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ctlog.test") as c:
        yield c


async def expect_400(resp: httpx.Response, fragment: str) -> None:
    assert resp.status_code == 400, resp.text
    data = resp.json()
    assert data["code"] == 400
    assert fragment in data["message"], data["message"]


# --- happy paths --------------------------------------------------------------------------


async def test_add_pre_chain_returns_verifiable_sct(
    client: httpx.AsyncClient, fulcio_pki: Any, log_key: ec.EllipticCurvePrivateKey
) -> None:
    resp = await client.post(
        "/ct/v1/add-pre-chain", json=body(der(fulcio_pki.precert()), *fulcio_pki.chain_ders)
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert set(data) == {"sct_version", "id", "timestamp", "extensions", "signature"}
    assert base64.b64decode(data["id"]) == hashlib.sha256(spki_der(log_key.public_key())).digest()
    sct = SignedCertificateTimestamp.from_json(data)
    final = fulcio_pki.final_certificate([sct])
    keyring = CTKeyring(
        Keyring(
            [
                common_v1.PublicKey(
                    raw_bytes=base64.b64encode(spki_der(log_key.public_key())),
                    key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
                )
            ]
        )
    )
    verify_sct(final, [fulcio_pki.intermediate, fulcio_pki.root], keyring)


async def test_add_chain_returns_sct(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    resp = await client.post(
        "/ct/v1/add-chain", json=body(der(fulcio_pki.leaf()), *fulcio_pki.chain_ders)
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["sct_version"] == 0


async def test_get_roots(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    resp = await client.get("/ct/v1/get-roots")
    assert resp.status_code == 200
    assert resp.json() == {"certificates": [b64(der(fulcio_pki.root))]}


async def test_get_sth_grows(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    first = (await client.get("/ct/v1/get-sth")).json()
    assert first["tree_size"] == 0
    await client.post(
        "/ct/v1/add-pre-chain", json=body(der(fulcio_pki.precert()), *fulcio_pki.chain_ders)
    )
    resp = await client.get("/ct/v1/get-sth")
    assert resp.status_code == 200
    second = resp.json()
    assert second["tree_size"] == 1
    assert second["timestamp"] >= first["timestamp"]
    assert set(second) == {"tree_size", "timestamp", "sha256_root_hash", "tree_head_signature"}


async def test_health_ok_then_unavailable_when_closed(
    client: httpx.AsyncClient, service: CTLogService
) -> None:
    assert (await client.get("/healthz")).status_code == 200
    await service.close()
    resp = await client.get("/healthz")
    assert resp.status_code == 503
    assert "closed" in resp.json()["reason"]
    resp = await client.get("/ct/v1/get-sth")
    assert resp.status_code == 503


async def test_openapi_describes_routes(client: httpx.AsyncClient) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    assert set(paths) == {
        "/ct/v1/add-chain",
        "/ct/v1/add-pre-chain",
        "/ct/v1/get-roots",
        "/ct/v1/get-sth",
        "/ct/v1/get-sth-consistency",
        "/ct/v1/get-entries",
        "/ct/v1/get-proof-by-hash",
        "/ct/v1/get-entry-and-proof",
        "/checkpoint",
        "/tile/{path}",
        "/tile/data/{path}",
        "/issuer/{fingerprint}",
    }
    assert "post" in paths["/ct/v1/add-pre-chain"] and "get" in paths["/ct/v1/get-sth"]
    assert OPENAPI["openapi"] == "3.1.0"


# --- rejected submissions: each maps to 400 with a message ---------------------------------


async def test_http_unknown_root(client: httpx.AsyncClient, kit: Any) -> None:
    stranger = kit.FulcioPKI(*kit.make_ca_pair("stranger"))
    resp = await client.post(
        "/ct/v1/add-pre-chain", json=body(der(stranger.precert()), *stranger.chain_ders)
    )
    await expect_400(resp, "accepted root")


async def test_http_broken_signature(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    raw = bytearray(der(fulcio_pki.precert()))
    raw[-1] ^= 0x01
    resp = await client.post("/ct/v1/add-pre-chain", json=body(bytes(raw), *fulcio_pki.chain_ders))
    await expect_400(resp, "is not signed by chain[1]")


async def test_http_intermediate_not_a_ca(
    client: httpx.AsyncClient, fulcio_pki: Any, kit: Any
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    not_ca = kit.build_cert(
        subject=pki.name("sigstack-test", "not a ca"),
        public_key=key.public_key(),
        issuer=fulcio_pki.root,
        issuer_key=fulcio_pki.root_key,
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (pki.subject_key_identifier(key.public_key()), False),
        ],
    )
    pre = fulcio_pki.precert(issuer=not_ca, issuer_key=key)
    resp = await client.post(
        "/ct/v1/add-pre-chain", json=body(der(pre), der(not_ca), der(fulcio_pki.root))
    )
    await expect_400(resp, "is not a CA")


async def test_http_precert_without_poison(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    resp = await client.post(
        "/ct/v1/add-pre-chain", json=body(der(fulcio_pki.leaf()), *fulcio_pki.chain_ders)
    )
    await expect_400(resp, "lacks the poison extension")


async def test_http_poisoned_cert_on_add_chain(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    resp = await client.post(
        "/ct/v1/add-chain", json=body(der(fulcio_pki.precert()), *fulcio_pki.chain_ders)
    )
    await expect_400(resp, "submit it to add-pre-chain")


async def test_http_non_critical_poison(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    pre = fulcio_pki.leaf(last_extension=(x509.PrecertPoison(), False))
    resp = await client.post("/ct/v1/add-pre-chain", json=body(der(pre), *fulcio_pki.chain_ders))
    await expect_400(resp, "NON-critical poison")


async def test_http_empty_chain(client: httpx.AsyncClient) -> None:
    resp = await client.post("/ct/v1/add-pre-chain", json={"chain": []})
    await expect_400(resp, "chain is empty")


async def test_http_garbage_base64(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    resp = await client.post(
        "/ct/v1/add-pre-chain",
        json={"chain": [b64(der(fulcio_pki.precert())), "not*base64!"]},
    )
    await expect_400(resp, "chain[1] is not valid base64")


async def test_http_non_certificate_bytes(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    resp = await client.post(
        "/ct/v1/add-pre-chain", json=body(der(fulcio_pki.precert()), b"hello, world")
    )
    await expect_400(resp, "chain[1] is not a valid DER certificate")


async def test_http_chain_too_long(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    chain = [der(fulcio_pki.precert()), *([der(fulcio_pki.intermediate)] * 10)]
    resp = await client.post("/ct/v1/add-pre-chain", json=body(*chain))
    await expect_400(resp, "at most 10")


async def test_http_expired_leaf(client: httpx.AsyncClient, fulcio_pki: Any, kit: Any) -> None:
    pre = fulcio_pki.precert(
        not_before=kit.NOW - dt.timedelta(days=3), not_after=kit.NOW - dt.timedelta(days=1)
    )
    resp = await client.post("/ct/v1/add-pre-chain", json=body(der(pre), *fulcio_pki.chain_ders))
    await expect_400(resp, "expired")


async def test_http_precert_signing_certificate_refused(
    client: httpx.AsyncClient, fulcio_pki: Any, kit: Any
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    signer = kit.build_cert(
        subject=pki.name("sigstack-test", "precert signer"),
        public_key=key.public_key(),
        issuer=fulcio_pki.intermediate,
        issuer_key=fulcio_pki.inter_key,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CERTIFICATE_TRANSPARENCY]), False),
            (pki.subject_key_identifier(key.public_key()), False),
        ],
    )
    pre = fulcio_pki.precert(issuer=signer, issuer_key=key)
    resp = await client.post(
        "/ct/v1/add-pre-chain", json=body(der(pre), der(signer), *fulcio_pki.chain_ders)
    )
    await expect_400(resp, "precertificate signing certificate")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", 'no "chain" field'),
        (b'{"chain": "MII="}', "must be a list"),
        (b'{"chain": [1]}', "chain[0] must be a base64 string"),
        (b'{"chain": [""]}', "chain[0] is empty"),
    ],
    ids=["empty", "not-json", "array", "no-chain", "chain-string", "chain-int", "empty-item"],
)
async def test_http_malformed_bodies(
    client: httpx.AsyncClient, content: bytes, fragment: str
) -> None:
    resp = await client.post(
        "/ct/v1/add-chain", content=content, headers={"content-type": "application/json"}
    )
    await expect_400(resp, fragment)


async def test_http_body_too_large(client: httpx.AsyncClient, service: CTLogService) -> None:
    content = b'{"chain": ["' + b"A" * service.config.max_body_bytes + b'"]}'
    resp = await client.post("/ct/v1/add-pre-chain", content=content)
    assert resp.status_code == 413
    assert "limit" in resp.json()["message"]


async def test_http_wrong_method(client: httpx.AsyncClient) -> None:
    assert (await client.get("/ct/v1/add-chain")).status_code == 405
    assert (await client.post("/ct/v1/get-sth")).status_code == 405


def test_parse_chain_request_decodes(fulcio_pki: Any) -> None:
    chain = [der(fulcio_pki.precert()), *fulcio_pki.chain_ders]
    assert parse_chain_request(body(*chain)) == chain


def test_parse_chain_request_leaves_length_checks_to_the_service(fulcio_pki: Any) -> None:
    """Empty and too-long chains are validate_chain's to refuse (one place, same message)."""
    assert parse_chain_request({"chain": []}) == []
    chain = [der(fulcio_pki.intermediate)] * 20
    assert parse_chain_request(body(*chain)) == chain


async def _run_lifespan(app: Any) -> None:
    """Drive the ASGI lifespan protocol through startup and shutdown."""
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"], sent


async def test_app_shutdown_leaves_the_service_to_its_owner(
    service: CTLogService, fulcio_pki: Any
) -> None:
    """Whoever called open_ctlog closes the service; the app's shutdown does not."""
    app = create_app(service)
    await _run_lifespan(app)
    await service.check_health()  # still open
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ctlog.test") as c:
        resp = await c.post(
            "/ct/v1/add-pre-chain", json=body(der(fulcio_pki.precert()), *fulcio_pki.chain_ders)
        )
    assert resp.status_code == 200, resp.text


# --- monitoring reads (static-ct-api) -----------------------------------------------------


def rfc9162_consistent(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> None:
    """RFC 9162 2.1.4.2 consistency verification (written for the tests)."""

    def h(left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + left + right).digest()

    assert 0 < old <= new
    if old == new:
        assert proof == [] and old_root == new_root
        return
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        proof = [old_root, *proof]
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        assert sn != 0
        if fn & 1 or fn == sn:
            fr, sr = h(c, fr), h(c, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = h(sr, c)
        fn >>= 1
        sn >>= 1
    assert sn == 0 and fr == old_root and sr == new_root


async def test_static_read_path_serves_entries_and_issuers(
    client: httpx.AsyncClient, fulcio_pki: Any
) -> None:
    pre = der(fulcio_pki.precert())
    await client.post("/ct/v1/add-pre-chain", json=body(pre, *fulcio_pki.chain_ders))
    sth = (await client.get("/ct/v1/get-sth")).json()

    cp = await client.get("/checkpoint")
    assert cp.status_code == 200
    assert cp.headers["content-type"].startswith("text/plain")
    lines = cp.text.split("\n")
    assert lines[1] == "1" and lines[2] == sth["sha256_root_hash"]

    data = await client.get("/tile/data/000.p/1")
    assert data.status_code == 200
    raw = data.content
    # TileLeaf: TimestampedEntry (precert), then ASN.1Cert pre_certificate, then fingerprints.
    te_len = 8 + 2 + 32 + 3 + int.from_bytes(raw[42:45], "big") + 2
    te, rest = raw[:te_len], raw[te_len:]
    assert te[8:10] == b"\x00\x01"
    n = int.from_bytes(rest[:3], "big")
    assert rest[3 : 3 + n] == pre
    fps = rest[3 + n :]
    assert int.from_bytes(fps[:2], "big") == 64
    for i, expected in enumerate(fulcio_pki.chain_ders):
        fp = fps[2 + 32 * i : 2 + 32 * (i + 1)]
        got = await client.get(f"/issuer/{fp.hex()}")
        assert got.status_code == 200 and got.content == expected
        assert got.headers["content-type"] == "application/pkix-cert"

    tile = await client.get("/tile/0/000.p/1")
    leaf_hash = hashlib.sha256(b"\x00\x00\x00" + te).digest()
    assert tile.content == leaf_hash
    assert base64.b64decode(sth["sha256_root_hash"]) == leaf_hash


async def test_static_read_path_refusals(client: httpx.AsyncClient) -> None:
    assert (await client.get("/tile/0/000.p/1")).status_code == 404  # empty tree
    assert (await client.get("/tile/data/000.p/1")).status_code == 404
    assert (await client.get("/tile/entries/000.p/1")).status_code == 400
    assert (await client.get("/tile/0/0001")).status_code == 400
    assert (await client.get("/issuer/ABC")).status_code == 400
    assert (await client.get("/issuer/" + "0" * 64)).status_code == 404


async def test_get_sth_consistency(client: httpx.AsyncClient, fulcio_pki: Any) -> None:
    roots = {}
    for serial in (1, 2, 3):
        chain = body(der(fulcio_pki.precert(serial=serial)), *fulcio_pki.chain_ders)
        assert (await client.post("/ct/v1/add-pre-chain", json=chain)).status_code == 200
        sth = (await client.get("/ct/v1/get-sth")).json()
        roots[sth["tree_size"]] = base64.b64decode(sth["sha256_root_hash"])
    for old in (1, 2, 3):
        resp = await client.get(f"/ct/v1/get-sth-consistency?first={old}&second=3")
        assert resp.status_code == 200
        proof = [base64.b64decode(h) for h in resp.json()["consistency"]]
        rfc9162_consistent(old, 3, roots[old], roots[3], proof)


@pytest.mark.parametrize(
    "query", ["", "?first=1", "?first=a&second=2", "?first=2&second=1", "?first=1&second=99"]
)
async def test_get_sth_consistency_bad_sizes(client: httpx.AsyncClient, query: str) -> None:
    resp = await client.get(f"/ct/v1/get-sth-consistency{query}")
    assert resp.status_code == 400
    assert resp.json()["message"]


async def test_fulcio_http_submitter_accepts_our_sct(
    service: CTLogService, fulcio_pki: Any, log_key: ec.EllipticCurvePrivateKey
) -> None:
    """Cross-check with Fulcio's own CT client, which verifies every SCT it receives."""
    ctclient = pytest.importorskip("sigstack.services.fulcio.ctclient")
    submitter = ctclient.HttpCTSubmitter(
        "http://ctlog.test",
        log_key.public_key(),
        transport=httpx.ASGITransport(app=create_app(service)),
    )
    chain = [der(fulcio_pki.precert()), *fulcio_pki.chain_ders]
    sct = await submitter.add_pre_chain(chain)
    assert sct.log_id == hashlib.sha256(spki_der(log_key.public_key())).digest()


class _OverloadedLog:
    """A stand-in log that sheds every entry, as the engine does past max_pending."""

    async def add(self, entry: Any) -> Any:
        from sigstack.core.errors import Overloaded

        raise Overloaded("the log has 50000 entries waiting; retry shortly", retry_after=2)

    def close(self) -> None:
        pass


async def test_http_overload_maps_to_503_with_retry_after(
    config: Any, fulcio_pki: Any, clock: Any
) -> None:
    from sigstack.services.ctlog.sthnote import MillisClock

    stub: Any = _OverloadedLog()
    svc = CTLogService(config, stub, timestamps=MillisClock(clock))
    transport = httpx.ASGITransport(app=create_app(svc))
    async with httpx.AsyncClient(transport=transport, base_url="http://ctlog.test") as c:
        resp = await c.post(
            "/ct/v1/add-pre-chain", json=body(der(fulcio_pki.precert()), *fulcio_pki.chain_ders)
        )
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "2"
    assert "retry" in resp.json()["message"]
