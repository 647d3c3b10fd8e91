"""OIDCConfig and OIDCIssuer: exact claims, key ids, and one named negative per check."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.types import Options
from sigstore.oidc import IdentityToken

from sigstack.core.errors import AuthenticationError, ConfigError, InvalidRequest
from sigstack.services.oidc import OIDCConfig, OIDCIssuer, key_id

ISSUER_URL = "http://127.0.0.1:8080"
FIXED = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
NO_TIME_CHECKS: Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}


def make_issuer(
    key: ec.EllipticCurvePrivateKey, clock: datetime | None = None, **config: object
) -> OIDCIssuer:
    cfg = OIDCConfig(ISSUER_URL, key, **config)  # type: ignore[arg-type]
    return OIDCIssuer(cfg) if clock is None else OIDCIssuer(cfg, clock=lambda: clock)


# --- configuration -------------------------------------------------------------------------


def test_config_defaults(signing_key: ec.EllipticCurvePrivateKey) -> None:
    config = OIDCConfig(ISSUER_URL, signing_key)
    assert config.default_audience == "sigstore"
    assert config.default_lifetime == timedelta(minutes=10)
    assert config.allow_token_endpoint is False  # minting for anyone is opt-in
    assert "signing_key" not in repr(config)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        b"-----BEGIN PRIVATE KEY-----",
    ],
)
def test_config_refuses_keys_other_than_p256(key: object) -> None:
    with pytest.raises(ConfigError, match="P-256"):
        OIDCConfig(ISSUER_URL, key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://127.0.0.1",
        "127.0.0.1:8080",
        "http://",
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8080?x=1",
        "http://127.0.0.1:8080#f",
        "http://user:pw@127.0.0.1:8080",
        "http://127.0.0.1:99999",
    ],
)
def test_config_refuses_bad_issuer_urls(signing_key: ec.EllipticCurvePrivateKey, url: str) -> None:
    with pytest.raises(ConfigError, match="issuer_url"):
        OIDCConfig(url, signing_key)


@pytest.mark.parametrize(
    "changes",
    [
        {"default_lifetime": timedelta(seconds=59)},
        {"default_lifetime": timedelta(hours=24, seconds=1)},
        {"default_audience": ""},
        {"allow_token_endpoint": "yes"},
    ],
)
def test_config_refuses_bad_defaults(
    signing_key: ec.EllipticCurvePrivateKey, changes: dict[str, object]
) -> None:
    with pytest.raises(ConfigError):
        OIDCConfig(ISSUER_URL, signing_key, **changes)  # type: ignore[arg-type]


# --- minting -------------------------------------------------------------------------------


def test_minted_claims_and_header_are_exact(signing_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = make_issuer(signing_key, FIXED)
    token = issuer.mint(email="dev@example.com")

    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": issuer.kid, "typ": "JWT"}
    claims = jwt.decode(
        token,
        signing_key.public_key(),
        algorithms=["ES256"],
        audience="sigstore",
        options=NO_TIME_CHECKS,
    )
    jti = claims.pop("jti")
    assert len(jti) == 32 and int(jti, 16) >= 0
    now = int(FIXED.timestamp())
    assert claims == {
        "iss": ISSUER_URL,
        "sub": "dev@example.com",
        "aud": "sigstore",
        "email": "dev@example.com",
        "email_verified": True,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }


def test_subject_audience_lifetime_and_extra_claims(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    issuer = make_issuer(signing_key, FIXED)
    token = issuer.mint(
        subject="repo:org/app:ref:refs/heads/main",
        audience="custom",
        lifetime=timedelta(hours=1),
        extra_claims={"repository": "org/app"},
    )
    claims = jwt.decode(
        token,
        signing_key.public_key(),
        algorithms=["ES256"],
        audience="custom",
        options=NO_TIME_CHECKS,
    )
    assert claims["sub"] == "repo:org/app:ref:refs/heads/main"
    assert "email" not in claims and "email_verified" not in claims
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["repository"] == "org/app"


def test_every_token_gets_a_fresh_jti(signing_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = make_issuer(signing_key, FIXED)
    tokens = [issuer.mint(email="a@example.com") for _ in range(20)]
    ids = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(ids) == 20


def test_sigstore_python_accepts_the_token(signing_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = make_issuer(signing_key)  # real clock: sigstore checks validity against it
    identity = IdentityToken(issuer.mint(email="dev@example.com"))
    assert identity.identity == "dev@example.com"
    assert identity.issuer == ISSUER_URL
    assert identity.federated_issuer == ISSUER_URL
    assert IdentityToken(issuer.mint(subject="ci-job-42")).identity == "ci-job-42"


def test_sigstore_python_refuses_a_token_for_another_audience(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    issuer = make_issuer(signing_key)
    with pytest.raises(Exception, match="malformed or missing claims"):
        IdentityToken(issuer.mint(email="dev@example.com", audience="not-sigstore"))


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        "@example.com",
        "dev@",
        "dev@@example.com",
        "dev @example.com",
        "dev@exa mple.com",
        ".dev@example.com",
        "dev.@example.com",
        "de..v@example.com",
        "dev@-example.com",
        "dev@example-.com",
        "dev@example..com",
        "dev@example.com.",
        "dev\n@example.com",
        "d" * 65 + "@example.com",
        "dev@" + "a" * 250 + ".com",
        '"quoted"@example.com',
        "dev@[127.0.0.1]",
        "",
    ],
)
def test_bad_email_is_refused(signing_key: ec.EllipticCurvePrivateKey, email: str) -> None:
    with pytest.raises(InvalidRequest, match="email"):
        make_issuer(signing_key, FIXED).mint(email=email)


@pytest.mark.parametrize(
    "email", ["dev@example.com", "first.last+tag@sub.example.co", "ci@localhost", "a_b-c@x-y.io"]
)
def test_plain_emails_are_accepted(signing_key: ec.EllipticCurvePrivateKey, email: str) -> None:
    make_issuer(signing_key, FIXED).mint(email=email)


@pytest.mark.parametrize(
    "lifetime",
    [
        timedelta(seconds=59),
        timedelta(hours=24, seconds=1),
        timedelta(0),
        timedelta(seconds=-60),
        timedelta(seconds=90, milliseconds=500),
    ],
)
def test_lifetime_out_of_bounds_is_refused(
    signing_key: ec.EllipticCurvePrivateKey, lifetime: timedelta
) -> None:
    with pytest.raises(InvalidRequest, match="lifetime"):
        make_issuer(signing_key, FIXED).mint(email="dev@example.com", lifetime=lifetime)


@pytest.mark.parametrize("lifetime", [timedelta(minutes=1), timedelta(hours=24)])
def test_lifetime_bounds_are_inclusive(
    signing_key: ec.EllipticCurvePrivateKey, lifetime: timedelta
) -> None:
    token = make_issuer(signing_key, FIXED).mint(email="dev@example.com", lifetime=lifetime)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == lifetime.total_seconds()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "email or a subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "a\x00b"}, "subject"),
        ({"email": "dev@example.com", "audience": ""}, "audience"),
        ({"email": "dev@example.com", "extra_claims": {"iss": "https://evil"}}, "iss"),
        ({"email": "dev@example.com", "extra_claims": {"email_verified": False}}, "email_verified"),
        ({"email": "dev@example.com", "extra_claims": {"x": object()}}, "JSON"),
        ({"email": "dev@example.com", "extra_claims": {"x": "y" * 9000}}, "bytes"),
    ],
)
def test_other_bad_inputs_are_refused(
    signing_key: ec.EllipticCurvePrivateKey, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        make_issuer(signing_key, FIXED).mint(**kwargs)  # type: ignore[arg-type]


# --- keys and verification ------------------------------------------------------------------


def test_kid_is_the_first_16_bytes_of_the_spki_sha256(
    signing_key: ec.EllipticCurvePrivateKey, other_key: ec.EllipticCurvePrivateKey
) -> None:
    spki = signing_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = hashlib.sha256(spki).hexdigest()[:32]
    assert key_id(signing_key.public_key()) == expected
    assert make_issuer(signing_key).kid == make_issuer(signing_key).kid == expected
    assert make_issuer(other_key).kid != expected


def test_jwks_holds_the_public_key(signing_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = make_issuer(signing_key)
    (jwk,) = issuer.jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "y", "alg", "use", "kid"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert jwk["kid"] == issuer.kid
    loaded = jwt.PyJWK(jwk).key
    assert loaded.public_numbers() == signing_key.public_key().public_numbers()


def test_verify_accepts_own_tokens(signing_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = make_issuer(signing_key, FIXED)
    claims = issuer.verify(issuer.mint(email="dev@example.com"))
    assert claims["email"] == "dev@example.com"


def test_signature_does_not_verify_with_another_key(
    signing_key: ec.EllipticCurvePrivateKey, other_key: ec.EllipticCurvePrivateKey
) -> None:
    token = make_issuer(signing_key, FIXED).mint(email="dev@example.com")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token,
            other_key.public_key(),
            algorithms=["ES256"],
            audience="sigstore",
            options=NO_TIME_CHECKS,
        )
    with pytest.raises(AuthenticationError, match="kid differs"):
        make_issuer(other_key, FIXED).verify(token)


def test_verify_rejects_a_tampered_token(signing_key: ec.EllipticCurvePrivateKey) -> None:
    issuer = make_issuer(signing_key, FIXED)
    header, payload, signature = issuer.mint(email="dev@example.com").split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b"dev@example.com", b"ops@example.com")
    ).decode()
    with pytest.raises(AuthenticationError, match="signature does not verify"):
        issuer.verify(f"{header}.{forged_payload}.{signature}")


def test_verify_checks_audience_and_validity_period(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    minted_at = make_issuer(signing_key, FIXED)
    token = minted_at.mint(email="dev@example.com")
    with pytest.raises(AuthenticationError, match=r"(?i)audience"):
        minted_at.verify(token, audience="other")
    with pytest.raises(AuthenticationError, match="validity period"):
        make_issuer(signing_key, FIXED + timedelta(minutes=10)).verify(token)
    with pytest.raises(AuthenticationError, match="validity period"):
        make_issuer(signing_key, FIXED - timedelta(seconds=1)).verify(token)
    with pytest.raises(AuthenticationError, match="not a JWT"):
        minted_at.verify("not.a.jwt")
