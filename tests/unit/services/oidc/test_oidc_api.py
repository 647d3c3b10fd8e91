"""The OIDC issuer over HTTP: tokens verify against the SERVED JWKS, the CI token
endpoint accepts JSON, forms and query strings, and is 404 unless enabled."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore.oidc import IdentityToken
from starlette.testclient import TestClient

from sigstack.services.oidc import OIDCConfig, OIDCIssuer, create_app

ISSUER_URL = "http://127.0.0.1:8080"


@pytest.fixture
def issuer(signing_key: ec.EllipticCurvePrivateKey) -> OIDCIssuer:
    return OIDCIssuer(OIDCConfig(ISSUER_URL, signing_key, allow_token_endpoint=True))


@pytest.fixture
def client(issuer: OIDCIssuer) -> TestClient:
    return TestClient(create_app(issuer))


def verify_with_served_jwks(client: TestClient, token: str, audience: str = "sigstore") -> Any:
    """Verify ``token`` the way a relying party (Fulcio) does: discovery -> jwks_uri -> key."""
    discovery = client.get("/.well-known/openid-configuration").json()
    jwks_path = discovery["jwks_uri"].removeprefix(discovery["issuer"])
    jwks = jwt.PyJWKSet.from_dict(client.get(jwks_path).json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(
        token, key.key, algorithms=["ES256"], audience=audience, issuer=discovery["issuer"]
    )


def test_discovery_document(client: TestClient, issuer: OIDCIssuer) -> None:
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.json() == {
        "issuer": ISSUER_URL,
        "jwks_uri": f"{ISSUER_URL}/keys",
        "token_endpoint": f"{ISSUER_URL}/token",
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "iat",
            "nbf",
            "exp",
            "jti",
            "email",
            "email_verified",
        ],
    }
    assert client.get("/keys").json() == issuer.jwks()


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"method": "POST", "url": "/token", "json": {"email": "ci@example.com"}},
        {"method": "POST", "url": "/token", "data": {"email": "ci@example.com"}},
        {"method": "GET", "url": "/token", "params": {"email": "ci@example.com"}},
    ],
    ids=["json", "form", "query"],
)
def test_token_endpoint_mints_verifiable_tokens(
    client: TestClient, request_kwargs: dict[str, Any]
) -> None:
    response = client.request(**request_kwargs)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "id_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["access_token"] == body["id_token"]
    claims = verify_with_served_jwks(client, body["access_token"])
    assert claims["email"] == claims["sub"] == "ci@example.com"
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 600
    assert IdentityToken(body["access_token"]).identity == "ci@example.com"


def test_token_endpoint_options(client: TestClient) -> None:
    response = client.post(
        "/token",
        json={"subject": "ci-job", "audience": "other", "lifetime_seconds": 3600},
    )
    assert response.status_code == 200
    assert response.json()["expires_in"] == 3600
    claims = verify_with_served_jwks(client, response.json()["id_token"], audience="other")
    assert claims["sub"] == "ci-job" and "email" not in claims
    assert claims["exp"] - claims["iat"] == 3600
    form = client.post("/token", data={"email": "ci@example.com", "lifetime_seconds": "120"})
    assert form.json()["expires_in"] == 120


CI = "ci@example.com"
JSON_CT = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"json": {"email": "not-an-email"}}, "email"),
        ({"method": "GET", "params": {"email": "a b@example.com"}}, "email"),
        ({"json": {"email": CI, "lifetime_seconds": 30}}, "lifetime"),
        ({"json": {"email": CI, "lifetime_seconds": 86401}}, "lifetime"),
        ({"json": {"email": CI, "lifetime_seconds": "1e3"}}, "lifetime_seconds"),
        ({"json": {"email": CI, "lifetime_seconds": True}}, "lifetime_seconds"),
        ({"data": {"email": CI, "lifetime_seconds": "-60"}}, "lifetime_seconds"),
        ({"json": {"email": CI, "sub": "x"}}, "unknown"),
        ({"json": {"email": [CI]}}, "must be a string"),
        ({"json": [CI]}, "JSON object"),
        ({"json": {}}, "email or a subject"),
        ({"method": "GET", "url": f"/token?email={CI}&email=b@example.com"}, "more than once"),
        ({"content": b"email=x", "headers": {"content-type": "text/plain"}}, "JSON"),
        ({"content": b"{", "headers": JSON_CT}, "not valid JSON"),
    ],
)
def test_token_endpoint_names_what_was_wrong(
    client: TestClient, request_kwargs: dict[str, Any], message: str
) -> None:
    request_kwargs.setdefault("method", "POST")
    request_kwargs.setdefault("url", "/token")
    response = client.request(**request_kwargs)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert "access_token" not in response.text


def test_token_endpoint_limits_the_body(client: TestClient) -> None:
    response = client.post("/token", json={"email": "ci@example.com", "pad": "x" * 5000})
    assert response.status_code == 413


def test_disabled_token_endpoint_is_404(signing_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = OIDCIssuer(OIDCConfig(ISSUER_URL, signing_key))
    client = TestClient(create_app(issuer))
    assert client.get("/token", params={"email": "ci@example.com"}).status_code == 404
    assert client.post("/token", json={"email": "ci@example.com"}).status_code == 404
    discovery = client.get("/.well-known/openid-configuration").json()
    assert "token_endpoint" not in discovery
    assert "/token" not in client.get("/openapi.json").json()["paths"]
    assert client.get("/keys").status_code == 200  # verification still works


def test_token_from_another_issuer_does_not_verify_against_this_jwks(
    client: TestClient, other_key: ec.EllipticCurvePrivateKey
) -> None:
    impostor = OIDCIssuer(OIDCConfig(ISSUER_URL, other_key, allow_token_endpoint=True))
    token = impostor.mint(email="ci@example.com")
    (served,) = client.get("/keys").json()["keys"]
    forged_kid = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}),
        other_key,
        algorithm="ES256",
        headers={"kid": served["kid"]},  # claims to be signed by the served key
    )
    with pytest.raises(jwt.InvalidSignatureError):
        verify_with_served_jwks(client, forged_kid)
    with pytest.raises(KeyError):
        verify_with_served_jwks(client, token)  # its kid is not in the served set


def test_openapi_and_health(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/.well-known/openid-configuration", "/keys", "/token"}
    assert client.get("/healthz").json() == {"status": "ok"}
