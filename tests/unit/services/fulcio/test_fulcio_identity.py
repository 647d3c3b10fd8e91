"""Issuer types: the pinned claim sets, and the claim -> certificate mapping per type."""

from __future__ import annotations

from typing import Any

import pytest
from asn1crypto import core as asn1_core
from cryptography import x509
from fulcio_kit import (
    GITHUB_ISSUER,
    GITLAB_ISSUER,
    ISSUER_URL,
    K8S_ISSUER,
    URI_ISSUER,
    github_claims,
    gitlab_claims,
    k8s_claims,
)

from sigstack.core.errors import AuthenticationError
from sigstack.services.fulcio.config import OIDCIssuer
from sigstack.services.fulcio.identity import (
    BASE_VARIABLES,
    COMMON_EXTENSIONS,
    ISSUER_TYPES,
    Encoding,
    Principal,
    principal_from_claims,
    template_variables,
)

EMAIL = OIDCIssuer(issuer_url=ISSUER_URL, client_id="sigstore", type="email")
GITHUB = OIDCIssuer(issuer_url=GITHUB_ISSUER, client_id="sigstore", type="github-workflow")
GITLAB = OIDCIssuer(issuer_url=GITLAB_ISSUER, client_id="sigstore", type="gitlab-pipeline")
K8S = OIDCIssuer(issuer_url=K8S_ISSUER, client_id="sigstore", type="kubernetes")
URI = OIDCIssuer(
    issuer_url=URI_ISSUER, client_id="sigstore", type="uri", subject_domain="https://example.org"
)


def ext_values(p: Principal) -> dict[str, bytes]:
    return {e.oid.dotted_string: e.value for e in p.extensions}


def utf8(value: str) -> bytes:
    return bytes(asn1_core.UTF8String(value).dump())


# --- the pinned declaration (warehouse style) -------------------------------------------------


def test_supported_issuer_types_are_pinned() -> None:
    pinned = {
        "email": ({"email"}, {"email_verified"}),
        "uri": (set(), set()),
        "github-workflow": (
            {
                "job_workflow_ref",
                "job_workflow_sha",
                "sha",
                "event_name",
                "repository",
                "workflow",
                "ref",
                "runner_environment",
                "repository_id",
                "repository_owner",
                "repository_owner_id",
                "repository_visibility",
                "workflow_ref",
                "workflow_sha",
                "run_id",
                "run_attempt",
            },
            {"environment"},
        ),
        "gitlab-pipeline": (
            {
                "project_path",
                "project_id",
                "pipeline_source",
                "pipeline_id",
                "ci_config_ref_uri",
                "namespace_path",
                "namespace_id",
                "job_id",
                "ref",
                "ref_type",
                "sha",
                "runner_environment",
                "runner_id",
            },
            {"ci_config_sha", "project_visibility", "environment"},
        ),
        "kubernetes": ({"kubernetes.io"}, set()),
    }
    actual = {
        name: (set(kind.required_claims), set(kind.optional_claims))
        for name, kind in ISSUER_TYPES.items()
    }
    assert actual == pinned


@pytest.mark.parametrize("name", sorted(ISSUER_TYPES))
def test_every_template_variable_is_declared(name: str) -> None:
    kind = ISSUER_TYPES[name]
    declared = BASE_VARIABLES | kind.required_claims | kind.optional_claims | kind.derived
    used = template_variables(kind.san_template)
    for rule in COMMON_EXTENSIONS + kind.extensions:
        used |= template_variables(rule.template)
        # optional claims may only feed optional extensions
        if not rule.optional:
            assert not (template_variables(rule.template) & kind.optional_claims), rule
    assert used <= declared, used - declared


@pytest.mark.parametrize("name", sorted(ISSUER_TYPES))
def test_extension_encodings_follow_oid_info(name: str) -> None:
    for rule in COMMON_EXTENSIONS + ISSUER_TYPES[name].extensions:
        assert rule.arc != 7
        expected = Encoding.RAW if 1 <= rule.arc <= 6 else Encoding.UTF8
        assert rule.encoding is expected, rule


# --- email ------------------------------------------------------------------------------------


def email_claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER_URL,
        "sub": "user-1",
        "email": "alice@example.com",
        "email_verified": True,
    }
    claims.update(extra)
    return claims


def test_email_principal() -> None:
    p = principal_from_claims(EMAIL, email_claims())
    assert p.san == x509.RFC822Name("alice@example.com")
    assert (p.identity, p.issuer, p.subject) == ("alice@example.com", ISSUER_URL, "user-1")
    assert (p.challenge_claim, p.challenge) == ("email", "alice@example.com")
    assert ext_values(p) == {
        "1.3.6.1.4.1.57264.1.1": ISSUER_URL.encode(),
        "1.3.6.1.4.1.57264.1.8": utf8(ISSUER_URL),
        "1.3.6.1.4.1.57264.1.24": utf8("user-1"),
    }


@pytest.mark.parametrize("verified", [False, None, "false", "no", 1, "", [True]])
def test_email_verified_false_is_refused(verified: Any) -> None:
    claims = email_claims(email_verified=verified)
    if verified is None:
        del claims["email_verified"]
    with pytest.raises(AuthenticationError, match="email_verified"):
        principal_from_claims(EMAIL, claims)


def test_email_verified_string_true_is_accepted() -> None:
    assert principal_from_claims(EMAIL, email_claims(email_verified="true")).identity


def test_skip_email_verification_is_honoured() -> None:
    skip = OIDCIssuer(
        issuer_url=ISSUER_URL, client_id="sigstore", type="email", skip_email_verification=True
    )
    assert principal_from_claims(skip, email_claims(email_verified=False)).identity


def test_missing_email_is_refused() -> None:
    claims = email_claims()
    del claims["email"]
    with pytest.raises(AuthenticationError, match="email claim"):
        principal_from_claims(EMAIL, claims)


@pytest.mark.parametrize("email", ["alice", "a@b@c", "al ice@example.com", "é@example.com", 5])
def test_invalid_email_is_refused(email: Any) -> None:
    with pytest.raises(AuthenticationError):
        principal_from_claims(EMAIL, email_claims(email=email))


def test_issuer_claim_maps_the_certificate_issuer() -> None:
    dex = OIDCIssuer(
        issuer_url="https://oauth2.example.com/auth",
        client_id="sigstore",
        type="email",
        issuer_claim="$.federated_claims.connector_id",
    )
    claims = email_claims(federated_claims={"connector_id": "https://github.com/login/oauth"})
    p = principal_from_claims(dex, claims)
    assert p.issuer == "https://github.com/login/oauth"
    assert ext_values(p)["1.3.6.1.4.1.57264.1.1"] == b"https://github.com/login/oauth"
    with pytest.raises(AuthenticationError, match="issuer claim"):
        principal_from_claims(dex, email_claims())


def test_missing_sub_is_refused() -> None:
    claims = email_claims()
    del claims["sub"]
    with pytest.raises(AuthenticationError, match="sub"):
        principal_from_claims(EMAIL, claims)


# --- github-workflow --------------------------------------------------------------------------


def test_github_workflow_principal() -> None:
    p = principal_from_claims(GITHUB, github_claims())
    ref = "octo/hello/.github/workflows/release.yml@refs/heads/main"
    assert p.san == x509.UniformResourceIdentifier(f"https://github.com/{ref}")
    assert (p.challenge_claim, p.challenge) == ("sub", "repo:octo/hello:ref:refs/heads/main")
    oid = "1.3.6.1.4.1.57264.1."
    assert ext_values(p) == {
        oid + "1": GITHUB_ISSUER.encode(),
        oid + "2": b"push",
        oid + "3": b"b" * 40,
        oid + "4": b"Release",
        oid + "5": b"octo/hello",
        oid + "6": b"refs/heads/main",
        oid + "8": utf8(GITHUB_ISSUER),
        oid + "9": utf8(f"https://github.com/{ref}"),
        oid + "10": utf8("a" * 40),
        oid + "11": utf8("github-hosted"),
        oid + "12": utf8("https://github.com/octo/hello"),
        oid + "13": utf8("b" * 40),
        oid + "14": utf8("refs/heads/main"),
        oid + "15": utf8("12345"),
        oid + "16": utf8("https://github.com/octo"),
        oid + "17": utf8("678"),
        oid + "18": utf8(f"https://github.com/{ref}"),
        oid + "19": utf8("c" * 40),
        oid + "20": utf8("push"),
        oid + "21": utf8("https://github.com/octo/hello/actions/runs/999/attempts/1"),
        oid + "22": utf8("public"),
        oid + "24": utf8("repo:octo/hello:ref:refs/heads/main"),
    }
    with_env = principal_from_claims(GITHUB, {**github_claims(), "environment": "prod"})
    assert ext_values(with_env)[oid + "23"] == utf8("prod")


@pytest.mark.parametrize("claim", ["job_workflow_ref", "run_id", "repository_visibility"])
def test_github_missing_claim_is_refused(claim: str) -> None:
    claims = github_claims()
    del claims[claim]
    with pytest.raises(AuthenticationError, match=claim):
        principal_from_claims(GITHUB, claims)


def test_github_claim_of_wrong_type_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="wrong type"):
        principal_from_claims(GITHUB, {**github_claims(), "run_id": 999})


def test_claims_that_would_break_the_uri_are_refused() -> None:
    claims = {**github_claims(), "job_workflow_ref": "octo/x y.yml@refs/heads/main"}
    with pytest.raises(AuthenticationError, match="URI"):
        principal_from_claims(GITHUB, claims)


# --- gitlab-pipeline --------------------------------------------------------------------------


def test_gitlab_pipeline_principal() -> None:
    p = principal_from_claims(GITLAB, gitlab_claims())
    config_uri = "https://gitlab.example.com/grp/proj//.gitlab-ci.yml@refs/heads/main"
    assert p.san == x509.UniformResourceIdentifier(config_uri)
    values = ext_values(p)
    oid = "1.3.6.1.4.1.57264.1."
    assert values[oid + "9"] == utf8(config_uri)
    assert values[oid + "12"] == utf8("https://gitlab.example.com/grp/proj")
    assert values[oid + "14"] == utf8("refs/heads/main")
    assert values[oid + "21"] == utf8("https://gitlab.example.com/grp/proj/-/jobs/1001")
    assert values[oid + "22"] == utf8("private")
    tag = principal_from_claims(GITLAB, {**gitlab_claims(), "ref_type": "tag", "ref": "v1"})
    assert ext_values(tag)[oid + "14"] == utf8("refs/tags/v1")


def test_gitlab_bad_ref_type_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="ref_type"):
        principal_from_claims(GITLAB, {**gitlab_claims(), "ref_type": "merge"})


def test_gitlab_optional_claims_may_be_absent() -> None:
    claims = gitlab_claims()
    del claims["ci_config_sha"], claims["project_visibility"]
    values = ext_values(principal_from_claims(GITLAB, claims))
    assert "1.3.6.1.4.1.57264.1.10" not in values
    assert "1.3.6.1.4.1.57264.1.22" not in values


# --- kubernetes -------------------------------------------------------------------------------


def test_kubernetes_principal() -> None:
    p = principal_from_claims(K8S, k8s_claims())
    uri = "https://kubernetes.io/namespaces/default/serviceaccounts/builder"
    assert p.san == x509.UniformResourceIdentifier(uri)
    assert set(ext_values(p)) == {
        "1.3.6.1.4.1.57264.1.1",
        "1.3.6.1.4.1.57264.1.8",
        "1.3.6.1.4.1.57264.1.24",
    }


@pytest.mark.parametrize(
    "k8s",
    [
        "default",
        {"namespace": "default"},
        {"namespace": "../etc", "serviceaccount": {"name": "x"}},
        {"namespace": "default", "serviceaccount": {"name": "a/b"}},
        {"namespace": "Default", "serviceaccount": {"name": "x"}},
    ],
)
def test_kubernetes_bad_claims_are_refused(k8s: Any) -> None:
    with pytest.raises(AuthenticationError):
        principal_from_claims(K8S, {**k8s_claims(), "kubernetes.io": k8s})


# --- uri --------------------------------------------------------------------------------------


def test_uri_principal() -> None:
    p = principal_from_claims(URI, {"sub": "https://example.org/users/alice"})
    assert p.san == x509.UniformResourceIdentifier("https://example.org/users/alice")


@pytest.mark.parametrize(
    "sub", ["https://evil.org/users/a", "http://example.org/a", "alice@example.org", "example.org"]
)
def test_uri_subject_outside_the_domain_is_refused(sub: str) -> None:
    with pytest.raises(AuthenticationError):
        principal_from_claims(URI, {"sub": sub})


def test_challenge_is_email_when_present_else_sub() -> None:
    p = principal_from_claims(URI, {"sub": "https://example.org/a", "email": "a@example.org"})
    assert (p.challenge_claim, p.challenge) == ("email", "a@example.org")


# --- JSON types: no object or array reaches a check or a certificate field ---------------------


@pytest.mark.parametrize("bad", [{"x": "y"}, ["a@example.com"], 5, True])
def test_email_claim_of_wrong_type_names_the_claim(bad: Any) -> None:
    with pytest.raises(AuthenticationError, match="email claim"):
        principal_from_claims(EMAIL, email_claims(email=bad))


@pytest.mark.parametrize(
    ("claim", "bad"),
    [
        ("ref", {"x": "y"}),  # would have become "refs/heads/{'x': 'y'}"
        ("ref", ["main"]),
        ("ref_type", {"branch": True}),
        ("project_path", {"a": "b"}),
        ("runner_id", {"id": 55}),
        ("runner_id", True),
        ("ci_config_sha", {"sha": "d"}),  # optional claims too, when present
        ("project_visibility", ["private"]),
        ("environment", {"name": "prod"}),
    ],
)
def test_gitlab_claims_of_wrong_type_name_the_claim(claim: str, bad: Any) -> None:
    with pytest.raises(AuthenticationError, match=f"{claim} claim has the wrong type") as err:
        principal_from_claims(GITLAB, {**gitlab_claims(), claim: bad})
    assert "{" not in err.value.message


@pytest.mark.parametrize("claim", ["sha", "job_workflow_ref", "repository", "environment"])
def test_github_object_claims_are_refused(claim: str) -> None:
    with pytest.raises(AuthenticationError, match=f"{claim} claim has the wrong type"):
        principal_from_claims(GITHUB, {**github_claims(), claim: {"x": "y"}})


@pytest.mark.parametrize("bad", ["default", ["default"], 7])
def test_kubernetes_claim_must_be_an_object(bad: Any) -> None:
    with pytest.raises(AuthenticationError, match=r"kubernetes\.io claim must be a JSON object"):
        principal_from_claims(K8S, {**k8s_claims(), "kubernetes.io": bad})


def test_only_a_types_own_object_claims_may_be_objects() -> None:
    # kubernetes.io is an object claim for the kubernetes type only
    assert ISSUER_TYPES["kubernetes"].object_claims == frozenset({"kubernetes.io"})
    for name, kind in ISSUER_TYPES.items():
        assert kind.object_claims <= kind.required_claims, name
        if name != "kubernetes":
            assert not kind.object_claims, name


@pytest.mark.parametrize("bad", [{"v": True}, 1, [True]])
def test_email_verified_of_wrong_type_is_refused_even_when_skipped(bad: Any) -> None:
    skip = OIDCIssuer(
        issuer_url=ISSUER_URL, client_id="sigstore", type="email", skip_email_verification=True
    )
    with pytest.raises(AuthenticationError, match="email_verified claim has the wrong type"):
        principal_from_claims(skip, email_claims(email_verified=bad))


# --- one email syntax for the built-in issuer and Fulcio ---------------------------------------

EMAILS = [
    "dev@example.com",
    "first.last+tag@sub.example.co",
    "ci@localhost",
    "a_b-c@x-y.io",
    ".dev@example.com",
    "de..v@example.com",
    "dev.@example.com",
    "dev@example..com",
    "dev@-example.com",
    "d" * 65 + "@example.com",
    "dev@" + "a" * 250 + ".com",
    '"quoted"@example.com',
    "dev@[127.0.0.1]",
    "a@b@c.com",
]


@pytest.mark.parametrize("address", EMAILS)
def test_fulcio_and_the_builtin_issuer_agree_on_email_syntax(address: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from sigstack.core.errors import InvalidRequest
    from sigstack.services.oidc import OIDCConfig
    from sigstack.services.oidc import OIDCIssuer as BuiltinIssuer

    builtin = BuiltinIssuer(
        OIDCConfig("http://127.0.0.1:1", ec.generate_private_key(ec.SECP256R1()))
    )
    try:
        builtin.mint(email=address)
        minted = True
    except InvalidRequest:
        minted = False
    try:
        principal_from_claims(EMAIL, email_claims(email=address))
        certified = True
    except AuthenticationError:
        certified = False
    assert minted == certified, address
