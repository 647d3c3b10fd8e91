"""The TSA's HTTP layer, driven in-process through httpx's ASGI transport (no sockets).

Requests are shaped as the real clients send them (interop.md section 7): sigstore-python
posts a DER query with nonce and certReq; sigstore-go a DER query without either;
sigstore-js the JSON form ``{"artifactHash", "hashAlgorithm"}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder, decode_timestamp_response

SIGNATURE = b"signature bytes to timestamp"
DIGEST = hashlib.sha256(SIGNATURE).digest()
URL = "/api/v1/timestamp"
DER_HEADERS = {"Content-Type": "application/timestamp-query"}
JSON_HEADERS = {"Content-Type": "application/json"}

DerRequest = Callable[..., bytes]


@pytest.fixture
def client(tsa_kit: Any) -> Any:
    return tsa_kit.client()


def js_body(**extra: Any) -> bytes:
    doc = {"artifactHash": base64.b64encode(DIGEST).decode(), "hashAlgorithm": "sha256"}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_der_request_from_sigstore_python(client: Any, tsa_kit: Any) -> None:
    request = (
        TimestampRequestBuilder()
        .hash_algorithm(HashAlgorithm.SHA256)
        .data(SIGNATURE)
        .nonce(nonce=True)
        .build()
    )
    response = client.post(URL, content=request.as_bytes(), headers=DER_HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/timestamp-reply"
    tsa_kit.rfc3161_verify(response.content, SIGNATURE)
    assert decode_timestamp_response(response.content).tst_info.nonce == request.nonce


def test_der_request_like_sigstore_go(client: Any, tsa_kit: Any, der_request: DerRequest) -> None:
    response = client.post(URL, content=der_request(DIGEST, cert_req=False), headers=DER_HEADERS)
    assert response.status_code in (200, 201)  # what sigstore-go accepts
    assert tsa_kit.openssl_verify(response.content, SIGNATURE).returncode == 0


def test_content_type_parameters_are_ignored(client: Any, der_request: DerRequest) -> None:
    response = client.post(
        URL,
        content=der_request(DIGEST),
        headers={"Content-Type": "Application/Timestamp-Query; charset=binary"},
    )
    assert response.status_code == 200


def test_json_request_end_to_end(client: Any, tsa_kit: Any) -> None:
    """What sigstore-js sends, verified by rfc3161-client and OpenSSL."""
    response = client.post(URL, content=js_body(), headers=JSON_HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/timestamp-reply"
    tsa_kit.rfc3161_verify(response.content, SIGNATURE)
    assert tsa_kit.openssl_verify(response.content, SIGNATURE).returncode == 0


def test_json_request_with_nonce_and_certificates(client: Any, tsa_kit: Any) -> None:
    nonce = 2**130 + 17
    response = client.post(
        URL, content=js_body(nonce=nonce, certificates=True), headers=JSON_HEADERS
    )
    assert response.status_code == 200
    parsed = decode_timestamp_response(response.content)
    assert parsed.tst_info.nonce == nonce
    assert len(parsed.signed_data.certificates) == 2


def test_json_rejection_is_json_400(client: Any) -> None:
    response = client.post(URL, content=js_body(hashAlgorithm="sha1"), headers=JSON_HEADERS)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == 400
    assert "sha1" in body["message"]


def test_json_garbage_is_json_400(client: Any) -> None:
    response = client.post(URL, content=b"{oops", headers=JSON_HEADERS)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_der_garbage_is_400_with_der_rejection(client: Any, tsa_kit: Any) -> None:
    response = client.post(URL, content=b"\x30\x03garbage", headers=DER_HEADERS)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/timestamp-reply"
    info = tsa_kit.status_info(response.content)
    assert info["status"] == "rejection"
    assert info["fail_info"] == {"bad_data_format"}


def test_der_non_canonical_request_is_400_with_der_rejection(
    client: Any, tsa_kit: Any, der_request: DerRequest
) -> None:
    good = der_request(DIGEST)
    ber = b"\x30\x80" + good[2:] + b"\x00\x00"  # indefinite length: BER, not DER
    response = client.post(URL, content=ber, headers=DER_HEADERS)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/timestamp-reply"
    info = tsa_kit.status_info(response.content)
    assert info["status"] == "rejection"
    assert info["fail_info"] == {"bad_data_format"}


def test_der_empty_body_is_400_with_der_rejection(client: Any, tsa_kit: Any) -> None:
    response = client.post(URL, content=b"", headers=DER_HEADERS)
    assert response.status_code == 400
    assert tsa_kit.status_info(response.content)["fail_info"] == {"bad_data_format"}


@pytest.mark.parametrize(("algorithm", "size"), [("sha1", 20), ("md5", 16)])
def test_der_weak_hash_is_400_bad_alg(
    client: Any, tsa_kit: Any, der_request: DerRequest, algorithm: str, size: int
) -> None:
    response = client.post(
        URL, content=der_request(b"\x01" * size, algorithm=algorithm), headers=DER_HEADERS
    )
    assert response.status_code == 400
    info = tsa_kit.status_info(response.content)
    assert info["status"] == "rejection"
    assert info["fail_info"] == {"bad_alg"}


def test_der_wrong_policy_is_400_unaccepted_policy(
    client: Any, tsa_kit: Any, der_request: DerRequest
) -> None:
    response = client.post(URL, content=der_request(DIGEST, policy="1.2.3"), headers=DER_HEADERS)
    assert response.status_code == 400
    assert tsa_kit.status_info(response.content)["fail_info"] == {"unaccepted_policy"}


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "text/plain", "application/jsonx"]
)
def test_unsupported_media_type_is_415(
    client: Any, der_request: DerRequest, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(URL, content=der_request(DIGEST), headers=headers)
    assert response.status_code == 415
    assert "application/timestamp-query" in response.json()["message"]


def test_body_over_limit_is_413(tsa_kit: Any) -> None:
    client = tsa_kit.client(body_limit=64)
    response = client.post(URL, content=b"\x30" * 65, headers=DER_HEADERS)
    assert response.status_code == 413
    assert response.json()["code"] == 413


def test_get_on_timestamp_is_405(client: Any) -> None:
    assert client.get(URL).status_code == 405


def test_certchain(client: Any, tsa_kit: Any) -> None:
    response = client.get("/api/v1/timestamp/certchain")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pem-certificate-chain"
    assert x509.load_pem_x509_certificates(response.content) == [tsa_kit.leaf, tsa_kit.root]


def test_healthz_follows_signer_validity(tsa_kit: Any) -> None:
    client = tsa_kit.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    tsa_kit.clock.now = tsa_kit.leaf.not_valid_after_utc + dt.timedelta(days=1)
    health = client.get("/healthz")
    assert health.status_code == 503
    assert "not valid" in health.json()["reason"]
    response = client.post(URL, content=js_body(), headers=JSON_HEADERS)
    assert response.status_code == 503
    assert "renew" in response.json()["message"]


def test_openapi_describes_routes(client: Any) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/api/v1/timestamp"]["post"]
    assert set(post["requestBody"]["content"]) == {
        "application/timestamp-query",
        "application/json",
    }
    assert "200" in post["responses"] and "400" in post["responses"]
    assert "get" in doc["paths"]["/api/v1/timestamp/certchain"]
