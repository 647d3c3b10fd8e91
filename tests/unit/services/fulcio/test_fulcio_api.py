"""The HTTP layer: both client request shapes, status codes, limits, and no token echo."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fulcio_kit import ISSUER_URL, Issuer, Kit, github_claims, run
from sigstore._internal.fulcio.client import _serialize_cert_request

from sigstack.core.errors import UpstreamError
from sigstack.core.keys import sign
from sigstack.services.fulcio.api import create_app

URL = "/api/v2/signingCert"


class Client:
    """A synchronous facade over httpx.ASGITransport (one event loop per request).

    Used instead of starlette.testclient, whose httpx bridge is deprecated.
    """

    __test__ = False

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://fulcio") as c:
                resp = await c.request(method, url, **kwargs)
                await resp.aread()
                return resp

        return run(go())

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)


@pytest.fixture
def client(kit: Kit) -> Client:
    return Client(create_app(kit.service()))


def spki_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def python_body(key: Any) -> str:
    """Exactly what sigstore-python 4.5.1 sends (its own serializer)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _serialize_cert_request(csr)


def public_key_body(key: Any, proof: bytes, token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "publicKeyRequest": {
            "publicKey": {"algorithm": "ECDSA", "content": spki_pem(key)},
            "proofOfPossession": base64.b64encode(proof).decode(),
        }
    }
    if token is not None:
        body["credentials"] = {"oidcIdentityToken": token}
    return body


def check_chain(kit: Kit, resp: httpx.Response, key: Any) -> list[x509.Certificate]:
    """Parse the answer the way sigstore-python's client does."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    pems = resp.json()["signedCertificateEmbeddedSct"]["chain"]["certificates"]
    assert len(pems) == 3
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in pems]
    assert certs[1:] == [kit.ca.intermediate, kit.ca.root]
    assert certs[0].public_key() == key.public_key()
    for p, cert in zip(pems, certs, strict=True):  # standard 64-column PEM, byte for byte
        assert p == cert.public_bytes(serialization.Encoding.PEM).decode()
        assert all(len(line) <= 64 for line in p.splitlines())
    return certs


def test_python_shape_csr_with_bearer_token(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = client.post(
        URL,
        content=python_body(key),
        headers={
            "Authorization": f"Bearer {kit.email_token()}",
            "Content-Type": "application/json",
            "Accept": "application/pem-certificate-chain",
        },
    )
    leaf = check_chain(kit, resp, key)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]


def test_js_shape_token_in_credentials(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = public_key_body(key, sign(key, b"alice@example.com"), token=kit.email_token())
    check_chain(kit, client.post(URL, json=body), key)


def test_go_shape_public_key_with_bearer_token(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = kit.issuers["github"].token(kit.clock, **github_claims())
    body = public_key_body(key, sign(key, github_claims()["sub"].encode()))
    check_chain(kit, client.post(URL, json=body, headers={"Authorization": f"Bearer {token}"}), key)


def test_snake_case_protojson_names_are_accepted(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    proof = base64.urlsafe_b64encode(sign(key, b"alice@example.com")).decode().rstrip("=")
    body = {
        "credentials": {"oidc_identity_token": kit.email_token()},
        "public_key_request": {
            "public_key": {"content": spki_pem(key)},
            "proof_of_possession": proof,
        },
    }
    check_chain(kit, client.post(URL, json=body), key)


def test_missing_token_is_401(client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = client.post(URL, content=python_body(key))
    assert resp.status_code == 401
    assert resp.json()["code"] == 401 and "identity token" in resp.json()["message"]


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer    "])
def test_malformed_authorization_header_is_401(client: Client, header: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = client.post(URL, content=python_body(key), headers={"Authorization": header})
    assert resp.status_code == 401


def test_authorization_token_is_never_echoed(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(kit.clock().timestamp())
    bad_tokens = [
        kit.email_token(aud="other"),  # wrong audience
        kit.email_token(exp=now - 1),  # expired
        kit.email_token(email_verified=False),  # claim mapping failure
        Issuer("https://stranger.example.com").token(kit.clock),  # issuer not allowed
        kit.issuers["email"].token(kit.clock, key=ec.generate_private_key(ec.SECP256R1())),
        "not-a-jwt-" + "s3cr3t" * 10,
    ]
    for token in bad_tokens:
        resp = client.post(
            URL, content=python_body(key), headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 401, resp.text
        assert token not in resp.text
        for part in token.split("."):
            if len(part) > 8:
                assert part not in resp.text
        assert set(resp.json()) == {"code", "message"}


def test_two_different_tokens_are_refused(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = public_key_body(key, sign(key, b"alice@example.com"), token=kit.email_token())
    other = kit.email_token(sub="someone-else")
    resp = client.post(URL, json=body, headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 400
    assert other not in resp.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{nope", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "certificateSigningRequest"),
        (b'{"certificateSigningRequest": "@@@"}', "base64"),
        (b'{"certificateSigningRequest": "QUJD"}', "could not be parsed"),
        (b'{"publicKeyRequest": {"publicKey": {}}}', "content"),
        (b'{"publicKeyRequest": "x"}', "object"),
        (b'{"certificateSigningRequest": "QUJD", "publicKeyRequest": {}}', "not both"),
        (
            b'{"publicKeyRequest": {"publicKey": {"content": "nope"}, '
            b'"proofOfPossession": "QUJD"}}',
            "could not be parsed",
        ),
    ],
)
def test_malformed_requests_are_400(kit: Kit, client: Client, body: bytes, fragment: str) -> None:
    resp = client.post(URL, content=body, headers={"Authorization": f"Bearer {kit.email_token()}"})
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["message"]


def test_bad_proof_of_possession_is_400(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = public_key_body(key, sign(key, b"user-123"), token=kit.email_token())
    resp = client.post(URL, json=body)
    assert resp.status_code == 400
    assert "proof of possession" in resp.json()["message"]


def test_oversized_body_is_413(kit: Kit) -> None:
    client = Client(create_app(kit.service(max_body_bytes=4096)))
    key = ec.generate_private_key(ec.SECP256R1())
    body = json.loads(python_body(key))
    body["padding"] = "x" * 5000
    resp = client.post(URL, json=body, headers={"Authorization": f"Bearer {kit.email_token()}"})
    assert resp.status_code == 413
    assert resp.json()["code"] == 413
    assert kit.web.requests == []  # refused before the token was even looked at


def test_oversized_streamed_body_without_length_is_413(kit: Kit) -> None:
    app = create_app(kit.service(max_body_bytes=4096))

    async def go() -> httpx.Response:
        async def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 1000

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fulcio") as c:
            return await c.post(URL, content=chunks())

    assert run(go()).status_code == 413


def test_ct_failure_is_502(kit: Kit, client: Client) -> None:
    kit.ct.fail_with = UpstreamError("the CT log refused the precertificate: HTTP 500")
    key = ec.generate_private_key(ec.SECP256R1())
    resp = client.post(
        URL, content=python_body(key), headers={"Authorization": f"Bearer {kit.email_token()}"}
    )
    assert resp.status_code == 502
    assert "CT log" in resp.json()["message"]


def test_asgi_transport_roundtrip(kit: Kit) -> None:
    app = create_app(kit.service())
    key = ec.generate_private_key(ec.SECP256R1())

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fulcio") as c:
            body = public_key_body(key, sign(key, b"alice@example.com"), token=kit.email_token())
            return await c.post(URL, json=body)

    check_chain(kit, run(go()), key)


# --- read endpoints and the rest --------------------------------------------------------------


def test_read_endpoints(kit: Kit, client: Client) -> None:
    bundle = client.get("/api/v2/trustBundle")
    assert bundle.status_code == 200
    [chain] = bundle.json()["chains"]
    assert [x509.load_pem_x509_certificate(p.encode()) for p in chain["certificates"]] == [
        kit.ca.intermediate,
        kit.ca.root,
    ]
    config = client.get("/api/v2/configuration").json()
    assert {"issuerUrl": ISSUER_URL, "audience": "sigstore", "challengeClaim": "email",
            "issuerType": "email"} in config["issuers"]  # fmt: skip
    root = client.get("/api/v1/rootCert")
    assert root.status_code == 200
    assert root.headers["content-type"].startswith("application/pem-certificate-chain")
    assert x509.load_pem_x509_certificates(root.content) == [kit.ca.intermediate, kit.ca.root]


def _legacy_body(key: Any, proof: bytes, *, pem: bool = False) -> dict[str, Any]:
    """What cosign v2 sends to /api/v1/signingCert (protojson bytes are base64)."""
    encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
    content = key.public_key().public_bytes(
        encoding, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "publicKey": {"content": base64.b64encode(content).decode(), "algorithm": "ecdsa"},
        "signedEmailAddress": base64.b64encode(proof).decode(),
    }


@pytest.mark.parametrize("pem", [False, True])
def test_legacy_v1_signing_cert_issues_a_pem_chain(kit: Kit, client: Client, pem: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = client.post(
        "/api/v1/signingCert",
        json=_legacy_body(key, sign(key, b"alice@example.com"), pem=pem),
        headers={"Authorization": f"Bearer {kit.email_token()}"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["content-type"].startswith("application/pem-certificate-chain")
    certs = x509.load_pem_x509_certificates(resp.content)
    assert certs[1:] == [kit.ca.intermediate, kit.ca.root]
    assert certs[0].public_key() == key.public_key()
    certs[0].extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps)


def test_legacy_v1_refuses_a_proof_over_another_identity(kit: Kit, client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = client.post(
        "/api/v1/signingCert",
        json=_legacy_body(key, sign(key, b"mallory@example.com")),
        headers={"Authorization": f"Bearer {kit.email_token()}"},
    )
    assert resp.status_code == 400 and "proof of possession" in resp.json()["message"]


def test_legacy_v1_needs_a_bearer_token(client: Client) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = client.post("/api/v1/signingCert", json=_legacy_body(key, sign(key, b"x")))
    assert resp.status_code == 401


def test_legacy_v1_malformed_body_is_400(kit: Kit, client: Client) -> None:
    headers = {"Authorization": f"Bearer {kit.email_token()}"}
    for body in ({"publicKey": {}, "signedEmailAddress": "eA=="}, {"publicKey": "x"}, [1]):
        assert client.post("/api/v1/signingCert", json=body, headers=headers).status_code == 400


def test_health_and_openapi(client: Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    doc = client.get("/openapi.json").json()
    assert set(doc["paths"]) >= {
        "/api/v2/signingCert",
        "/api/v2/trustBundle",
        "/api/v2/configuration",
        "/api/v1/rootCert",
    }


def test_wrong_method_is_405(client: Client) -> None:
    assert client.get(URL).status_code == 405


def test_openapi_errors_use_the_shared_error_schema(client: Client) -> None:
    doc = client.get("/openapi.json").json()
    responses = doc["paths"]["/api/v2/signingCert"]["post"]["responses"]
    for code in ("400", "401", "413", "502", "503"):
        schema = responses[code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    legacy = doc["paths"]["/api/v1/signingCert"]["post"]["responses"]
    assert legacy["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_whitespace_in_protojson_base64_is_tolerated_but_garbage_is_not(
    kit: Kit, client: Client
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    proof = base64.b64encode(sign(key, b"alice@example.com")).decode()
    body = public_key_body(key, b"", token=kit.email_token())
    body["publicKeyRequest"]["proofOfPossession"] = proof[:10] + "\n" + proof[10:]
    check_chain(kit, client.post(URL, json=body), key)
    body["publicKeyRequest"]["proofOfPossession"] = proof[:10] + "*" + proof[10:]
    resp = client.post(URL, json=body)
    assert resp.status_code == 400
    assert "proofOfPossession is not valid base64" in resp.json()["message"]


class ClosingCT:
    """A CT submitter that records being closed (the real one closes its client)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.closed = 0

    async def add_pre_chain(self, chain_der: list[bytes]) -> Any:
        return await self.inner.add_pre_chain(chain_der)

    async def aclose(self) -> None:
        self.closed += 1


async def run_lifespan(app: Any) -> list[str]:
    """Drive an ASGI app through startup and shutdown; the message types it sent."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


def test_app_shutdown_closes_the_ct_submitter(kit: Kit) -> None:
    from sigstack.services.fulcio.service import FulcioService

    ct = ClosingCT(kit.ct)
    config = kit.config()
    service = FulcioService(config, kit.ca.key, kit.ca.chain, ct, kit.verifier(), kit.clock)
    sent = run(run_lifespan(create_app(service)))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert ct.closed == 1


def test_shutdown_with_a_submitter_that_holds_nothing(kit: Kit) -> None:
    # LocalCTLog has no aclose(): closing the service is then a no-op
    sent = run(run_lifespan(create_app(kit.service())))
    assert sent[-1] == "lifespan.shutdown.complete"


@pytest.mark.parametrize("email", [{"x": "y"}, ["alice@example.com"]])
def test_structured_email_claim_is_401_not_500(kit: Kit, client: Client, email: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = kit.email_token(email=email)
    resp = client.post(URL, content=python_body(key), headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401, resp.text
    assert "email claim" in resp.json()["message"]
    assert kit.ct.submissions == []
