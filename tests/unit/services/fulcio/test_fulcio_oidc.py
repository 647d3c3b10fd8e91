"""TokenVerifier: one named negative test per check, plus JWKS discovery and caching."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fulcio_kit import (
    GITHUB_ISSUER,
    ISSUER_URL,
    K8S_ISSUER,
    Issuer,
    Kit,
    github_claims,
    gitlab_claims,
    k8s_claims,
    local_server,
    refusing_proxy,
    run,
    set_proxy_environment,
)

from sigstack.core.errors import AuthenticationError, ConfigError, UpstreamError
from sigstack.services import oidc as builtin_oidc
from sigstack.services.fulcio.config import IssuerAllowList, OIDCIssuer, builtin_issuer
from sigstack.services.fulcio.oidc import HttpxFetcher, TokenVerifier


def rejected(kit: Kit, token: str, match: str, verifier: TokenVerifier | None = None) -> str:
    """Assert ``token`` is refused with a message matching ``match`` that never echoes it."""
    with pytest.raises(AuthenticationError, match=match) as err:
        run((verifier or kit.verifier()).verify(token))
    assert token not in err.value.message
    assert err.value.http_status == 401
    return str(err.value.message)


def test_valid_tokens_of_every_algorithm_verify(kit: Kit) -> None:
    verifier = kit.verifier()
    email = run(verifier.verify(kit.email_token()))  # ES256
    assert email.issuer.issuer_url == ISSUER_URL and email.claims["email"] == "alice@example.com"
    gh = run(verifier.verify(kit.issuers["github"].token(kit.clock, **github_claims())))  # RS256
    assert gh.issuer.type == "github-workflow"
    gl = run(verifier.verify(kit.issuers["gitlab"].token(kit.clock, **gitlab_claims())))  # ES384
    assert gl.issuer.type == "gitlab-pipeline"
    k8s = run(verifier.verify(kit.issuers["k8s"].token(kit.clock, **k8s_claims())))  # EdDSA
    assert (k8s.issuer.issuer_url, k8s.issuer.type) == (K8S_ISSUER, "kubernetes")


def test_bad_signature_is_rejected(kit: Kit) -> None:
    token = kit.email_token()
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["email"] = "mallory@example.com"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    rejected(kit, f"{header}.{forged}.{sig}", "signature does not verify")
    # signed by a key the issuer never published, under the issuer's kid
    impostor = kit.issuers["email"].token(kit.clock, key=ec.generate_private_key(ec.SECP256R1()))
    rejected(kit, impostor, "signature does not verify")


def test_wrong_issuer_key_is_rejected(kit: Kit) -> None:
    # iss names the email issuer, but the token is signed by the GitHub issuer's key
    gh = kit.issuers["github"]
    token = jwt.encode(
        {"iss": ISSUER_URL, "aud": "sigstore", "sub": "x", "iat": 0, "exp": 2**40},
        gh.key,
        algorithm="RS256",
        headers={"kid": gh.kid},
    )
    rejected(kit, token, "not published by its issuer")


def test_discovery_naming_another_issuer_is_refused(kit: Kit) -> None:
    email = kit.issuers["email"]
    kit.web.docs[ISSUER_URL + "/.well-known/openid-configuration"] = lambda: {
        "issuer": "https://impostor.example.com",
        "jwks_uri": ISSUER_URL + "/keys",
    }
    with pytest.raises(UpstreamError, match="names issuer"):
        run(kit.verifier().verify(email.token(kit.clock)))


def test_issuer_not_allowed_is_rejected_without_fetching(kit: Kit) -> None:
    stranger = Issuer("https://stranger.example.com")
    kit.web.add(stranger)
    message = rejected(kit, stranger.token(kit.clock), "not allowed")
    assert "https://stranger.example.com" in message
    assert kit.web.requests == []


def test_meta_issuer_that_does_not_match_is_rejected(kit: Kit) -> None:
    outside = Issuer("https://oidc.eks.us-west-2.amazonaws.com.evil.com/id/x")
    rejected(kit, outside.token(kit.clock), "not allowed")


def test_wrong_audience_is_rejected(kit: Kit) -> None:
    rejected(kit, kit.email_token(aud="someone-else"), "audience")
    rejected(kit, kit.email_token(aud=["a", "b"]), "audience")
    rejected(kit, kit.email_token(aud=5), "aud")
    assert run(kit.verifier().verify(kit.email_token(aud=["other", "sigstore"])))


def test_expired_token_is_rejected(kit: Kit) -> None:
    now = int(kit.clock().timestamp())
    rejected(kit, kit.email_token(exp=now), "expired")
    rejected(kit, kit.email_token(exp=now - 3600, iat=now - 7200, nbf=now - 7200), "expired")
    rejected(kit, kit.email_token(exp="tomorrow"), "exp claim is not a number")
    rejected(
        kit, kit.issuers["email"].token(kit.clock, drop=("exp",), email="a@b.c"), "no exp claim"
    )


def test_expiry_follows_the_injected_clock(kit: Kit) -> None:
    verifier = kit.verifier()
    token = kit.email_token()  # exp = now + 300
    assert run(verifier.verify(token))
    kit.clock.advance(300)
    rejected(kit, token, "expired", verifier)


def test_nbf_in_the_future_is_rejected(kit: Kit) -> None:
    now = int(kit.clock().timestamp())
    rejected(kit, kit.email_token(nbf=now + 600), "not valid yet")
    # within the documented leeway (60 s) it is accepted
    assert run(kit.verifier().verify(kit.email_token(nbf=now + 30)))


def test_iat_in_the_future_is_rejected(kit: Kit) -> None:
    now = int(kit.clock().timestamp())
    rejected(kit, kit.email_token(iat=now + 600), "issued in the future")
    rejected(
        kit, kit.issuers["email"].token(kit.clock, drop=("iat",), email="a@b.c"), "no iat claim"
    )


def test_missing_sub_is_rejected(kit: Kit) -> None:
    token = kit.issuers["email"].token(kit.clock, drop=("sub",), email="a@b.c")
    rejected(kit, token, "no sub claim")


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(claims)}."


def test_alg_none_is_rejected_without_fetching(kit: Kit) -> None:
    now = int(kit.clock().timestamp())
    claims = {"iss": ISSUER_URL, "aud": "sigstore", "sub": "x", "iat": now, "exp": now + 60}
    rejected(kit, _unsigned(claims, {"alg": "none", "typ": "JWT"}), "algorithm 'none'")
    assert kit.web.requests == []


def test_hs256_is_rejected_without_fetching(kit: Kit) -> None:
    now = int(kit.clock().timestamp())
    claims = {"iss": ISSUER_URL, "aud": "sigstore", "sub": "x", "iat": now, "exp": now + 60}
    # the classic confusion attack: HMAC keyed with the issuer's public JWK
    secret = json.dumps(kit.issuers["email"].jwk()).encode()
    signing_input = _unsigned(claims, {"alg": "HS256", "kid": "k"})[:-1]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    rejected(kit, token, "algorithm 'HS256'")
    assert kit.web.requests == []


@pytest.mark.parametrize("alg", ["PS256", "RS512", "ES512", "HS512"])
def test_other_algorithms_are_rejected(kit: Kit, alg: str) -> None:
    header = {"alg": alg, "kid": kit.issuers["email"].kid}
    rejected(kit, _unsigned({"iss": ISSUER_URL}, header) + "c2ln", "not accepted")


def test_key_of_another_type_than_alg_is_rejected(kit: Kit) -> None:
    # header says ES384 but the kid names the issuer's P-256 key
    email = kit.issuers["email"]
    token = email.token(kit.clock, key=ec.generate_private_key(ec.SECP384R1()), alg="ES384")
    rejected(kit, token, "cannot verify ES384")


def test_jwk_alg_and_use_exclude_keys(kit: Kit) -> None:
    email = kit.issuers["email"]
    kit.web.docs[ISSUER_URL + "/keys"] = lambda: {"keys": [{**email.jwk(), "use": "enc"}]}
    rejected(kit, kit.email_token(), "cannot verify ES256")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_weak_rsa_jwk_is_not_used(kit: Kit) -> None:
    gh = kit.issuers["github"]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    weak_issuer = Issuer(GITHUB_ISSUER, key=weak, alg="RS256", kid=gh.kid)
    kit.web.add(weak_issuer)
    token = weak_issuer.token(kit.clock, **github_claims())
    rejected(kit, token, "cannot verify RS256")


def test_crit_header_is_rejected(kit: Kit) -> None:
    token = kit.issuers["email"].token(kit.clock, headers={"crit": ["exp"]}, email="a@b.c")
    # PyJWT refuses unknown crit parameters itself; the verifier re-checks regardless
    rejected(kit, token, "well-formed JWT|critical header")


@pytest.mark.parametrize("garbage", ["", "   ", "abc", "a.b.c", "x" * 40000])
def test_garbage_tokens_are_rejected(kit: Kit, garbage: str) -> None:
    with pytest.raises(AuthenticationError):
        run(kit.verifier().verify(garbage))


# --- JWKS discovery, caching and refresh ----------------------------------------------------


def test_jwks_is_cached_until_ttl(kit: Kit) -> None:
    verifier = kit.verifier()
    run(verifier.verify(kit.email_token()))
    run(verifier.verify(kit.email_token()))
    assert kit.web.requests == [
        ISSUER_URL + "/.well-known/openid-configuration",
        ISSUER_URL + "/keys",
    ]
    kit.clock.advance(601)  # default jwks_ttl is 10 minutes
    run(verifier.verify(kit.email_token()))
    assert len(kit.web.requests) == 4


def test_unknown_kid_refreshes_once_then_fails(kit: Kit) -> None:
    verifier = kit.verifier()
    run(verifier.verify(kit.email_token()))
    assert len(kit.web.requests) == 2
    unknown = kit.issuers["email"].token(kit.clock, headers={"kid": "nope"}, email="a@b.c")
    # within jwks_min_refresh of the last fetch: no refetch (no amplification)
    rejected(kit, unknown, "not published", verifier)
    assert len(kit.web.requests) == 2
    kit.clock.advance(31)
    rejected(kit, unknown, "not published", verifier)
    assert len(kit.web.requests) == 4  # exactly one refresh (discovery + keys)


def test_rotated_key_is_picked_up_by_the_refresh(kit: Kit) -> None:
    verifier = kit.verifier()
    email = kit.issuers["email"]
    run(verifier.verify(kit.email_token()))
    email.key = ec.generate_private_key(ec.SECP256R1())
    email.kid = "rotated"
    kit.clock.advance(31)
    assert run(verifier.verify(kit.email_token())).claims["email"] == "alice@example.com"


def test_unreachable_issuer_is_an_upstream_error(kit: Kit) -> None:
    del kit.web.docs[ISSUER_URL + "/keys"]
    with pytest.raises(UpstreamError, match="cannot load the signing keys"):
        run(kit.verifier().verify(kit.email_token()))


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"issuer": ISSUER_URL},
        {"issuer": ISSUER_URL, "jwks_uri": "http://issuer.example.com/keys"},
        {"issuer": ISSUER_URL, "jwks_uri": 7},
    ],
)
def test_bad_discovery_documents_are_upstream_errors(kit: Kit, doc: Any) -> None:
    kit.web.docs[ISSUER_URL + "/.well-known/openid-configuration"] = lambda: doc
    with pytest.raises(UpstreamError):
        run(kit.verifier().verify(kit.email_token()))


@pytest.mark.parametrize(
    "jwks",
    [{}, {"keys": "x"}, {"keys": []}, {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]}],
)
def test_unusable_jwks_are_upstream_errors(kit: Kit, jwks: Any) -> None:
    kit.web.docs[ISSUER_URL + "/keys"] = lambda: jwks
    with pytest.raises(UpstreamError):
        run(kit.verifier().verify(kit.email_token()))


# --- the default httpx fetcher ------------------------------------------------------------------

LOCAL = OIDCIssuer(issuer_url="http://127.0.0.1:1", client_id="sigstore", type="email")


def fetch_with(handler: Any, url: str = "https://idp.example.com/doc", **kw: Any) -> Any:
    fetcher = HttpxFetcher(transport=httpx.MockTransport(handler), **kw)
    return run(fetcher(url, LOCAL))


def test_fetcher_returns_json() -> None:
    assert fetch_with(lambda req: httpx.Response(200, json={"a": 1})) == {"a": 1}


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(404, json={}), "HTTP 404"),
        (httpx.Response(302, headers={"Location": "https://evil.example.com/"}), "HTTP 302"),
        (httpx.Response(200, content=b"<html>"), "did not answer JSON"),
        (httpx.Response(200, content=b"[" + b"1," * 600_000 + b"1]"), "more than"),
    ],
)
def test_fetcher_failures_are_upstream_errors(response: httpx.Response, match: str) -> None:
    with pytest.raises(UpstreamError, match=match):
        fetch_with(lambda req: response)


def test_fetcher_network_error_is_an_upstream_error() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamError, match="ConnectError"):
        fetch_with(boom)


def test_verifier_over_httpx_transport(kit: Kit) -> None:
    email = kit.issuers["email"]

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json=email.discovery())
        if url.endswith("/keys"):
            return httpx.Response(200, json=email.jwks())
        return httpx.Response(404)

    verifier = TokenVerifier(
        kit.allow, fetch=HttpxFetcher(transport=httpx.MockTransport(handler)), clock=kit.clock
    )
    assert run(verifier.verify(kit.email_token())).claims["sub"] == "user-123"


def test_fetcher_never_uses_a_proxy_for_a_loopback_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.dumps({"issuer": "x"}).encode()
    with (
        local_server(refusing_proxy()) as proxy,
        local_server(lambda m, p, b: (200, "application/json", document)) as idp,
    ):
        set_proxy_environment(monkeypatch, proxy.url)
        assert run(HttpxFetcher()(idp.url + "/doc", LOCAL)) == {"issuer": "x"}
    assert proxy.requests == []
    assert [(r.method, r.path) for r in idp.requests] == [("GET", "/doc")]


def test_fetcher_uses_environment_proxies_for_external_issuers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with local_server(refusing_proxy()) as proxy:
        set_proxy_environment(monkeypatch, proxy.url)
        with pytest.raises(UpstreamError, match="cannot fetch"):
            run(HttpxFetcher()("https://idp.example.com/doc", LOCAL))
    assert [(r.method, r.path) for r in proxy.requests] == [("CONNECT", "idp.example.com:443")]


# --- static key sets (the built-in issuer) ------------------------------------------------------

BUILTIN_URL = "http://127.0.0.1:5556"


@pytest.fixture
def builtin(kit: Kit) -> builtin_oidc.OIDCIssuer:
    """The stack's real built-in issuer (sigstack.services.oidc), not a test double."""
    key = ec.generate_private_key(ec.SECP256R1())
    return builtin_oidc.OIDCIssuer(builtin_oidc.OIDCConfig(BUILTIN_URL, key), clock=kit.clock)


def static_verifier(kit: Kit, builtin: builtin_oidc.OIDCIssuer) -> TokenVerifier:
    allow = IssuerAllowList.of([builtin_issuer(BUILTIN_URL, jwks=builtin.jwks())]).merged(kit.allow)
    return TokenVerifier(allow, fetch=kit.web, clock=kit.clock)


def test_builtin_issuer_with_static_keys_needs_no_fetch(
    kit: Kit, builtin: builtin_oidc.OIDCIssuer
) -> None:
    verifier = static_verifier(kit, builtin)
    token = builtin.mint(email="ci@sigstack.local")
    for _ in range(2):
        verified = run(verifier.verify(token))
        assert verified.claims["email"] == "ci@sigstack.local"
        assert verified.issuer.issuer_url == BUILTIN_URL
    kit.clock.advance(3600)  # far beyond jwks_ttl: static keys never expire or refetch
    run(verifier.verify(builtin.mint(email="ci@sigstack.local")))
    assert kit.web.requests == []
    # external issuers in the same allow-list are still discovered over the network
    run(verifier.verify(kit.email_token()))
    assert kit.web.requests == [
        ISSUER_URL + "/.well-known/openid-configuration",
        ISSUER_URL + "/keys",
    ]


def test_static_keys_refuse_other_keys_without_fetching(
    kit: Kit, builtin: builtin_oidc.OIDCIssuer
) -> None:
    verifier = static_verifier(kit, builtin)
    impostor = builtin_oidc.OIDCIssuer(
        builtin_oidc.OIDCConfig(BUILTIN_URL, ec.generate_private_key(ec.SECP256R1())),
        clock=kit.clock,
    )
    # another key: its kid is not in the static set, and no refresh is attempted
    rejected(kit, impostor.mint(email="a@b.c"), "not published", verifier)
    kit.clock.advance(60)  # past jwks_min_refresh
    rejected(kit, impostor.mint(email="a@b.c"), "not published", verifier)
    # another key under the built-in issuer's kid
    forged = jwt.encode(
        jwt.decode(builtin.mint(email="a@b.c"), options={"verify_signature": False}),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": builtin.kid},
    )
    rejected(kit, forged, "signature does not verify", verifier)
    assert kit.web.requests == []


@pytest.mark.parametrize(
    ("jwks", "match"),
    [
        ({}, "JWK set"),
        ({"keys": "x"}, "JWK set"),
        ({"keys": []}, "no key"),
        ({"keys": [{"kty": "EC", "x": object()}]}, "not JSON"),
        ([], "JWK set"),
    ],
)
def test_malformed_static_key_sets_are_config_errors(jwks: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        builtin_issuer(BUILTIN_URL, jwks=jwks)
    assert BUILTIN_URL in err.value.message


def test_unusable_static_key_sets_fail_when_the_verifier_is_built() -> None:
    symmetric = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]}
    allow = IssuerAllowList.of([builtin_issuer(BUILTIN_URL, jwks=symmetric)])
    with pytest.raises(ConfigError, match="no usable signing key") as err:
        TokenVerifier(allow)
    assert BUILTIN_URL in err.value.message


def test_static_key_set_is_a_private_copy(builtin: builtin_oidc.OIDCIssuer) -> None:
    jwks = builtin.jwks()
    issuer = builtin_issuer(BUILTIN_URL, jwks=jwks)
    jwks["keys"].clear()
    assert issuer.jwks is not None and len(issuer.jwks["keys"]) == 1
    assert "keys" not in repr(issuer)
    assert issuer == builtin_issuer(BUILTIN_URL, jwks=builtin.jwks())
    assert issuer != builtin_issuer(BUILTIN_URL)
    assert hash(issuer) == hash(builtin_issuer(BUILTIN_URL))
