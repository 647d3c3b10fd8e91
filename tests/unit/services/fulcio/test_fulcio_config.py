"""The issuer allow-list and FulcioConfig fail closed, naming the file and key at fault."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sigstack.core.errors import ConfigError
from sigstack.services.fulcio.config import (
    FulcioConfig,
    IssuerAllowList,
    MetaIssuer,
    OIDCIssuer,
    builtin_issuer,
)

UPSTREAM_SHAPE: dict[str, Any] = {
    "OIDCIssuers": {
        "https://accounts.google.com": {
            "IssuerURL": "https://accounts.google.com",
            "ClientID": "sigstore",
            "Type": "email",
            "Description": "Google",
            "Contact": "tac@sigstore.dev",
        },
        "https://token.actions.githubusercontent.com": {
            "IssuerURL": "https://token.actions.githubusercontent.com",
            "ClientID": "sigstore",
            "Type": "github-workflow",
        },
        "https://oauth2.sigstore.dev/auth": {
            "IssuerURL": "https://oauth2.sigstore.dev/auth",
            "ClientID": "sigstore",
            "Type": "email",
            "IssuerClaim": "$.federated_claims.connector_id",
        },
    },
    "MetaIssuers": {
        "https://oidc.eks.*.amazonaws.com/id/*": {"ClientID": "sigstore", "Type": "kubernetes"},
        "https://container.googleapis.com/v1/projects/*/locations/*/clusters/*": {
            "ClientID": "sigstore",
            "Type": "kubernetes",
        },
    },
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "fulcio-config.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_loads_upstream_file_shape(tmp_path: Path) -> None:
    allow = IssuerAllowList.load(write(tmp_path, UPSTREAM_SHAPE))
    google = allow.get("https://accounts.google.com")
    assert google is not None
    assert (google.client_id, google.type, google.description) == ("sigstore", "email", "Google")
    dex = allow.get("https://oauth2.sigstore.dev/auth")
    assert dex is not None and dex.issuer_claim == "$.federated_claims.connector_id"
    eks = allow.get("https://oidc.eks.us-west-2.amazonaws.com/id/B02C93B6A2D30341AD01E1B6D48164CB")
    assert eks is not None and eks.type == "kubernetes"
    assert eks.issuer_url.endswith("/id/B02C93B6A2D30341AD01E1B6D48164CB")
    gke = allow.get(
        "https://container.googleapis.com/v1/projects/p-1/locations/us-west1-b/clusters/c_2"
    )
    assert gke is not None
    assert len(allow) == 5


def test_issuer_url_defaults_to_key(tmp_path: Path) -> None:
    data = {"OIDCIssuers": {"https://idp.example.com": {"ClientID": "sigstore", "Type": "email"}}}
    allow = IssuerAllowList.load(write(tmp_path, data))
    assert allow.get("https://idp.example.com") is not None


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://accounts.example.com", True),
        ("https://accounts.example.com:8443/realms/x", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:5556/dex", True),
        ("http://[::1]:9000", True),
        ("http://127.0.0.2:8080", True),  # all of 127.0.0.0/8 (core.net.is_loopback_host)
        ("http://LOCALHOST:1", True),
        ("http://accounts.example.com", False),
        ("http://10.0.0.1", False),
        ("http://0.0.0.0:8080", False),
        ("http://127.0.0.1.nip.io", False),
        ("http://foo.localhost", False),
        ("http://127.1", False),
        ("http://[::ffff:127.0.0.1]:1", False),
        ("ftp://accounts.example.com", False),
        ("https://user:pw@accounts.example.com", False),
        ("https://accounts.example.com?x=1", False),
        ("https://accounts.example.com#frag", False),
        ("https://", False),
        ("accounts.example.com", False),
    ],
)
def test_issuer_urls_must_be_https_except_loopback(url: str, allowed: bool) -> None:
    if allowed:
        assert OIDCIssuer(issuer_url=url, client_id="sigstore", type="email").issuer_url == url
    else:
        with pytest.raises(ConfigError):
            OIDCIssuer(issuer_url=url, client_id="sigstore", type="email")


def test_unknown_type_names_file_and_key(tmp_path: Path) -> None:
    data = {"OIDCIssuers": {"https://idp.example.com": {"ClientID": "sigstore", "Type": "magic"}}}
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        IssuerAllowList.load(path)
    assert str(path) in err.value.message
    assert "https://idp.example.com" in err.value.message
    assert "magic" in err.value.message


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"Type": "email"}, "ClientID"),
        ({"ClientID": "sigstore"}, "Type"),
        ({"ClientID": 7, "Type": "email"}, "ClientID"),
        ({"ClientID": "sigstore", "Type": "email", "Colour": "blue"}, "Colour"),
        ({"ClientID": "sigstore", "Type": "email", "CIProvider": "github"}, "CIProvider"),
        ({"ClientID": "sigstore", "Type": "email", "ChallengeClaim": "x"}, "ChallengeClaim"),
        ({"ClientID": "sigstore", "Type": "email", "SkipEmailVerification": "yes"}, "Skip"),
        ({"ClientID": "sigstore", "Type": "github-workflow", "IssuerClaim": "$.a"}, "IssuerClaim"),
        ({"ClientID": "sigstore", "Type": "email", "IssuerClaim": "a[0]"}, "IssuerClaim"),
        ({"ClientID": "sigstore", "Type": "email", "CACert": "not pem"}, "CACert"),
        ({"ClientID": "sigstore", "Type": "uri"}, "SubjectDomain"),
        (
            {"ClientID": "sigstore", "Type": "uri", "SubjectDomain": "https://other.net"},
            "SubjectDomain",
        ),
        (
            {"ClientID": "sigstore", "Type": "email", "IssuerURL": "https://elsewhere.com"},
            "IssuerURL",
        ),
        ("not an object", "must be an object"),
    ],
)
def test_malformed_entries_are_refused(tmp_path: Path, entry: Any, fragment: str) -> None:
    path = write(tmp_path, {"OIDCIssuers": {"https://idp.example.com": entry}})
    with pytest.raises(ConfigError) as err:
        IssuerAllowList.load(path)
    assert str(path) in err.value.message
    assert fragment in err.value.message


def test_uri_issuer_with_matching_subject_domain() -> None:
    iss = OIDCIssuer(
        issuer_url="https://accounts.example.com",
        client_id="sigstore",
        type="uri",
        subject_domain="https://users.example.com",
    )
    assert iss.subject_domain == "https://users.example.com"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "JSON object"),
        ({"Issuers": {}}, "Issuers"),
        ({"OIDCIssuers": []}, "OIDCIssuers"),
        ({"CIIssuerMetadata": {"GitHubWorkflow": {}}}, "CIIssuerMetadata"),
    ],
)
def test_malformed_top_level_is_refused(tmp_path: Path, data: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        IssuerAllowList.load(write(tmp_path, data))
    assert fragment in err.value.message


def test_invalid_json_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "{not json")
    with pytest.raises(ConfigError, match="not valid JSON") as err:
        IssuerAllowList.load(path)
    assert str(path) in err.value.message
    with pytest.raises(ConfigError, match="cannot read"):
        IssuerAllowList.load(tmp_path / "absent.json")


# --- meta-issuers ---------------------------------------------------------------------------

EKS = MetaIssuer(pattern="https://oidc.eks.*.amazonaws.com/id/*", client_id="s", type="kubernetes")


@pytest.mark.parametrize(
    ("url", "matches"),
    [
        ("https://oidc.eks.us-west-2.amazonaws.com/id/B02C93B6A2D30341AD01E1B6D48164CB", True),
        ("https://oidc.eks.a_b-c.amazonaws.com/id/x", True),
        # "*" is one label / one segment, never more
        ("https://oidc.eks.evil.com.amazonaws.com/id/x", False),
        ("https://oidc.eks.us-west-2.amazonaws.com/id/x/y", False),
        ("https://oidc.eks..amazonaws.com/id/x", False),
        ("https://oidc.eks.us-west-2.amazonaws.com/id/", False),
        # anchored at both ends (GHSA-59jp-pj84-45mr)
        ("http://localhost:3000?https://oidc.eks.x.amazonaws.com/id/y", False),
        ("https://oidc.eks.x.amazonaws.com/id/y?z", False),
        ("https://oidc.eks.x.amazonaws.com/id/y#z", False),
        ("https://oidc.eks.x.amazonaws.com.evil.com/id/y", False),
        ("https://oidc.eks.x%2eevil.amazonaws.com/id/y", False),
        ("http://oidc.eks.x.amazonaws.com/id/y", False),
    ],
)
def test_meta_issuer_wildcard_matches_one_label_or_segment(url: str, matches: bool) -> None:
    resolved = EKS.resolve(url)
    assert (resolved is not None) is matches
    if resolved is not None:
        assert resolved.issuer_url == url and resolved.type == "kubernetes"


@pytest.mark.parametrize(
    "pattern",
    [
        "https://*.com/id/x",
        "https://example.*/id",
        "https://foo.*/x",
        "https://*/x",
        "*://example.com/x",
        "https://example.com/no-wildcard",
        "http://*.example.com/x",
        "https://10.0.0.*/x",
        "https://example.com:*/x",
    ],
)
def test_unsafe_meta_issuer_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ConfigError):
        MetaIssuer(pattern=pattern, client_id="sigstore", type="kubernetes")


def test_exact_issuer_wins_over_meta_issuer() -> None:
    url = "https://oidc.eks.x.amazonaws.com/id/y"
    allow = IssuerAllowList.of(
        [OIDCIssuer(issuer_url=url, client_id="exact", type="kubernetes")], [EKS]
    )
    found = allow.get(url)
    assert found is not None and found.client_id == "exact"
    assert url in allow.issuers
    assert allow.get("https://unlisted.example.com") is None


# --- programmatic construction and merging ----------------------------------------------------


def test_builtin_issuer_merges_with_the_users_file(tmp_path: Path) -> None:
    builtin = IssuerAllowList.of([builtin_issuer("http://127.0.0.1:5556")])
    merged = builtin.merged(IssuerAllowList.load(write(tmp_path, UPSTREAM_SHAPE)))
    local = merged.get("http://127.0.0.1:5556")
    assert local is not None and (local.client_id, local.type) == ("sigstore", "email")
    assert merged.get("https://accounts.google.com") is not None


def test_conflicting_duplicate_issuer_is_refused(tmp_path: Path) -> None:
    builtin = IssuerAllowList.of([builtin_issuer("http://127.0.0.1:5556")])
    data = {"OIDCIssuers": {"http://127.0.0.1:5556": {"ClientID": "other", "Type": "email"}}}
    with pytest.raises(ConfigError, match="conflicts"):
        builtin.merged(IssuerAllowList.load(write(tmp_path, data)))
    same = IssuerAllowList.of([builtin_issuer("http://127.0.0.1:5556")])
    assert len(builtin.merged(same)) == 1
    with pytest.raises(ConfigError, match="twice"):
        IssuerAllowList.of(
            [builtin_issuer("http://127.0.0.1:1"), builtin_issuer("http://127.0.0.1:1")]
        )


def test_fulcio_config_defaults_and_limits() -> None:
    allow = IssuerAllowList.of([builtin_issuer("http://127.0.0.1:5556")])
    config = FulcioConfig(issuers=allow)
    assert config.cert_lifetime == timedelta(minutes=10)
    assert config.max_body_bytes == 64 * 1024
    with pytest.raises(ConfigError, match="at least one"):
        FulcioConfig(issuers=IssuerAllowList())
    with pytest.raises(ConfigError, match="cert_lifetime"):
        FulcioConfig(issuers=allow, cert_lifetime=timedelta(days=2))
    with pytest.raises(ConfigError, match="max_body_bytes"):
        FulcioConfig(issuers=allow, max_body_bytes=10)
    with pytest.raises(ConfigError, match="clock_leeway"):
        FulcioConfig(issuers=allow, clock_leeway=timedelta(hours=1))


# --- meta-issuers never vouch for email identities ---------------------------------------------


def test_email_meta_issuer_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    pattern = "https://idp.*.example.com"
    path = write(tmp_path, {"MetaIssuers": {pattern: {"ClientID": "sigstore", "Type": "email"}}})
    with pytest.raises(ConfigError, match="email") as err:
        IssuerAllowList.load(path)
    assert str(path) in err.value.message
    assert f"{pattern}.Type" in err.value.message
    with pytest.raises(ConfigError, match="wildcard issuer must not vouch for email"):
        MetaIssuer(pattern=pattern, client_id="sigstore", type="email")


def test_meta_issuer_resolves_with_every_shared_setting() -> None:
    meta = MetaIssuer(
        pattern="https://oidc.eks.*.amazonaws.com/id/*",
        client_id="aud",
        type="kubernetes",
        description="EKS",
        contact="ops@example.com",
        source="file.json",
    )
    resolved = meta.resolve("https://oidc.eks.x.amazonaws.com/id/y")
    assert resolved == OIDCIssuer(
        issuer_url="https://oidc.eks.x.amazonaws.com/id/y",
        client_id="aud",
        type="kubernetes",
        description="EKS",
        contact="ops@example.com",
    )
    assert resolved is not None and resolved.source == "file.json" and resolved.jwks is None


def test_builtin_issuer_with_static_keys_conflicts_with_a_fetched_duplicate(
    tmp_path: Path,
) -> None:
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "k"}]}
    builtin = IssuerAllowList.of([builtin_issuer("http://127.0.0.1:5556", jwks=jwks)])
    data = {"OIDCIssuers": {"http://127.0.0.1:5556": {"ClientID": "sigstore", "Type": "email"}}}
    with pytest.raises(ConfigError, match="conflicts"):
        builtin.merged(IssuerAllowList.load(write(tmp_path, data)))
    same = IssuerAllowList.of([builtin_issuer("http://127.0.0.1:5556", jwks=jwks)])
    assert builtin.merged(same).get("http://127.0.0.1:5556") == builtin_issuer(
        "http://127.0.0.1:5556", jwks=jwks
    )


def test_ca_cert_must_be_ascii_pem(tmp_path: Path) -> None:
    for value, fragment in (("\u00e9", "ASCII"), ("-----BEGIN CERTIFICATE-----\nAA\n", "PEM")):
        entry = {"ClientID": "sigstore", "Type": "email", "CACert": value}
        path = write(tmp_path, {"OIDCIssuers": {"https://idp.example.com": entry}})
        with pytest.raises(ConfigError, match=fragment) as err:
            IssuerAllowList.load(path)
        assert "https://idp.example.com.CACert" in err.value.message
