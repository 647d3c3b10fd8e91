"""Issuer types: which claims each requires, and how they become certificate fields.

Each supported ``Type`` of the issuer configuration is declared as data (an
:class:`IssuerKind`): the claims it requires, the claims it uses when present, the
Subject Alternative Name it produces and the Sigstore extensions it renders, as
templates over the token's claims. A small ``derive`` function per type covers what a
template cannot (checks such as ``email_verified``, values computed from nested claims);
it declares the names it adds so a test can pin every variable a template uses.

Guarantees:

* :func:`principal_from_claims` raises :class:`~sigstack.core.errors.AuthenticationError`
  naming the claim at fault when a required claim is missing or empty, or when ANY
  claim the type reads (required or optional, when present) does not have its JSON
  type: a string, except a few numeric identifiers that may be integers, the boolean
  (or ``"true"``) ``email_verified``, and the object claims the type's own derivation
  reads (``object_claims``, e.g. ``kubernetes.io``). No object or array ever reaches a
  check or a certificate field. It never returns a partial result.
* Every principal carries ``1.3.6.1.4.1.57264.1.1`` (issuer, raw UTF-8 bytes),
  ``1.3.6.1.4.1.57264.1.8`` (issuer, DER UTF8String) and ``1.3.6.1.4.1.57264.1.24``
  (token ``sub``, DER UTF8String); ``.1.2``-``.1.6`` are raw strings and ``.1.8``-
  ``.1.24`` DER UTF8Strings, as fulcio ``docs/oid-info.md`` specifies. The service adds
  them all NON-critical.
* A SAN URI is ASCII, has a scheme and host, and contains no whitespace or characters a
  URI may not carry; an email SAN is a syntactically valid address
  (:func:`sigstack.core.net.check_email`, the check the built-in issuer applies too).
* ``challenge`` is the string the proof of possession signs: the ``email`` claim when
  present, else ``sub`` (what sigstore-js and sigstore-go sign).

Supported types (pinned by a unit test): ``email``, ``uri``, ``github-workflow``,
``gitlab-pipeline``, ``kubernetes``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from asn1crypto import core as asn1_core
from cryptography import x509

from sigstack.core.errors import AuthenticationError, InvalidRequest
from sigstack.core.net import check_email

if TYPE_CHECKING:
    from sigstack.services.fulcio.config import OIDCIssuer

Claims = Mapping[str, Any]

SIGSTORE_OID_PREFIX = "1.3.6.1.4.1.57264.1"

# Longest value accepted into a single certificate field (keeps certificates small).
MAX_VALUE_CHARS = 2048


class Encoding(enum.Enum):
    """How an extension value is encoded (fulcio docs/oid-info.md)."""

    RAW = "raw"  # .1.1-.1.6: the UTF-8 bytes of the string, no DER
    UTF8 = "utf8"  # .1.8-.1.24: DER UTF8String


class SanKind(enum.Enum):
    """The Subject Alternative Name general-name type a principal produces."""

    EMAIL = "email"
    URI = "uri"


@dataclass(frozen=True)
class ExtensionRule:
    """One Sigstore extension: OID arc under 57264.1, value template, encoding.

    ``optional`` rules are skipped when a variable they use is absent or empty;
    required rules make the whole issuance fail instead.
    """

    arc: int
    template: str
    encoding: Encoding
    optional: bool = False

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return x509.ObjectIdentifier(f"{SIGSTORE_OID_PREFIX}.{self.arc}")


Derive = Callable[[Claims, "OIDCIssuer"], dict[str, str]]


@dataclass(frozen=True)
class IssuerKind:
    """Everything one issuer type needs, declared as data.

    ``object_claims`` are the required claims that must be JSON objects (read by
    ``derive`` only, never rendered); every other claim is a string (see ``_scalar``).
    """

    name: str
    required_claims: frozenset[str]
    optional_claims: frozenset[str]
    san: SanKind
    san_template: str
    extensions: tuple[ExtensionRule, ...]
    derived: frozenset[str] = frozenset()
    derive: Derive | None = None
    object_claims: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Principal:
    """The identity a verified token proves, ready to be embedded in a certificate."""

    issuer_type: str
    issuer: str  # the value of 57264.1.1 / .1.8 (``iss``, or the mapped IssuerClaim)
    subject: str  # the token's ``sub``
    identity: str  # the SAN value
    san: x509.GeneralName
    challenge_claim: str  # "email" or "sub": the claim the proof of possession signs
    challenge: str  # that claim's value
    extensions: tuple[x509.UnrecognizedExtension, ...]


# Variables every template may use, whatever the type.
BASE_VARIABLES = frozenset({"issuer", "sub"})

# Rendered for every issuer type.
COMMON_EXTENSIONS: tuple[ExtensionRule, ...] = (
    ExtensionRule(1, "{issuer}", Encoding.RAW),
    ExtensionRule(8, "{issuer}", Encoding.UTF8),
    ExtensionRule(24, "{sub}", Encoding.UTF8),
)

_VAR_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_URI_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\"<>\\^`{|}]")
_DNS1123_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Claims whose upstream JSON type is a number.
_INTEGER_CLAIMS = frozenset({"runner_id"})
# Claims that are a JSON boolean (some providers send the string "true").
_BOOLEAN_CLAIMS = frozenset({"email_verified"})


def template_variables(template: str) -> frozenset[str]:
    """The ``{name}`` variables a template uses."""
    return frozenset(_VAR_RE.findall(template))


# --- per-type derivations -----------------------------------------------------------------


def _truthy_claim(value: Any) -> bool:
    # A boolean true, or the string "true" some providers send. Any other string (even
    # "false", which Python considers truthy) is not verified.
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _claim_path(claims: Claims, path: str) -> Any:
    node: Any = claims
    for part in path.removeprefix("$.").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _is_email(value: str) -> bool:
    try:
        check_email(value)
    except InvalidRequest:
        return False
    return True


def _derive_email(claims: Claims, issuer: OIDCIssuer) -> dict[str, str]:
    if not _is_email(claims["email"]):
        raise AuthenticationError("the token's email claim is not a valid email address")
    if not issuer.skip_email_verification and not _truthy_claim(claims.get("email_verified")):
        raise AuthenticationError(
            "the token's email is not verified (email_verified must be true); "
            "verify the address with the identity provider"
        )
    out: dict[str, str] = {}
    if issuer.issuer_claim:
        mapped = _claim_path(claims, issuer.issuer_claim)
        if not isinstance(mapped, str) or not mapped:
            raise AuthenticationError(
                f"the token lacks the issuer claim {issuer.issuer_claim} this issuer requires"
            )
        out["issuer"] = mapped
    return out


def _derive_uri(claims: Claims, issuer: OIDCIssuer) -> dict[str, str]:
    sub = claims["sub"]
    if _is_email(sub):
        raise AuthenticationError("for 'uri' issuers the sub claim must be a URI, not an email")
    domain = urlsplit(issuer.subject_domain or "")
    try:
        parts = urlsplit(sub)
        host = parts.hostname
    except ValueError as exc:
        raise AuthenticationError("the token's sub claim is not a valid URI") from exc
    if parts.scheme != domain.scheme or host != domain.hostname:
        raise AuthenticationError(
            f"the token's sub must be a URI under {domain.scheme}://{domain.hostname}"
        )
    return {}


def _derive_gitlab(claims: Claims, issuer: OIDCIssuer) -> dict[str, str]:
    ref_type, ref = claims["ref_type"], claims["ref"]
    if ref_type == "branch":
        git_ref = f"refs/heads/{ref}"
    elif ref_type == "tag":
        git_ref = f"refs/tags/{ref}"
    else:
        raise AuthenticationError(f"unexpected ref_type claim {ref_type!r} (branch or tag)")
    return {"git_ref": git_ref, "server_url": issuer.issuer_url.rstrip("/")}


def _derive_kubernetes(claims: Claims, issuer: OIDCIssuer) -> dict[str, str]:
    k8s = claims["kubernetes.io"]
    namespace = k8s.get("namespace") if isinstance(k8s, Mapping) else None
    account_claim = k8s.get("serviceaccount") if isinstance(k8s, Mapping) else None
    account = account_claim.get("name") if isinstance(account_claim, Mapping) else None
    if not isinstance(namespace, str) or not isinstance(account, str):
        raise AuthenticationError(
            "the token's kubernetes.io claim must carry namespace and serviceaccount.name"
        )
    for what, value in (("namespace", namespace), ("serviceaccount name", account)):
        if not _DNS1123_RE.fullmatch(value):
            raise AuthenticationError(f"the token's kubernetes {what} is not a valid DNS-1123 name")
    return {"k8s_namespace": namespace, "k8s_serviceaccount": account}


# --- the registry -------------------------------------------------------------------------

_GITHUB = "https://github.com"

ISSUER_TYPES: Mapping[str, IssuerKind] = {
    kind.name: kind
    for kind in (
        IssuerKind(
            name="email",
            required_claims=frozenset({"email"}),
            optional_claims=frozenset({"email_verified"}),
            san=SanKind.EMAIL,
            san_template="{email}",
            extensions=(),
            derive=_derive_email,
        ),
        IssuerKind(
            name="uri",
            required_claims=frozenset(),
            optional_claims=frozenset(),
            san=SanKind.URI,
            san_template="{sub}",
            extensions=(),
            derive=_derive_uri,
        ),
        IssuerKind(
            name="github-workflow",
            required_claims=frozenset(
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
                }
            ),
            optional_claims=frozenset({"environment"}),
            san=SanKind.URI,
            san_template=_GITHUB + "/{job_workflow_ref}",
            extensions=(
                ExtensionRule(2, "{event_name}", Encoding.RAW),
                ExtensionRule(3, "{sha}", Encoding.RAW),
                ExtensionRule(4, "{workflow}", Encoding.RAW),
                ExtensionRule(5, "{repository}", Encoding.RAW),
                ExtensionRule(6, "{ref}", Encoding.RAW),
                ExtensionRule(9, _GITHUB + "/{job_workflow_ref}", Encoding.UTF8),
                ExtensionRule(10, "{job_workflow_sha}", Encoding.UTF8),
                ExtensionRule(11, "{runner_environment}", Encoding.UTF8),
                ExtensionRule(12, _GITHUB + "/{repository}", Encoding.UTF8),
                ExtensionRule(13, "{sha}", Encoding.UTF8),
                ExtensionRule(14, "{ref}", Encoding.UTF8),
                ExtensionRule(15, "{repository_id}", Encoding.UTF8),
                ExtensionRule(16, _GITHUB + "/{repository_owner}", Encoding.UTF8),
                ExtensionRule(17, "{repository_owner_id}", Encoding.UTF8),
                ExtensionRule(18, _GITHUB + "/{workflow_ref}", Encoding.UTF8),
                ExtensionRule(19, "{workflow_sha}", Encoding.UTF8),
                ExtensionRule(20, "{event_name}", Encoding.UTF8),
                ExtensionRule(
                    21,
                    _GITHUB + "/{repository}/actions/runs/{run_id}/attempts/{run_attempt}",
                    Encoding.UTF8,
                ),
                ExtensionRule(22, "{repository_visibility}", Encoding.UTF8),
                ExtensionRule(23, "{environment}", Encoding.UTF8, optional=True),
            ),
        ),
        IssuerKind(
            name="gitlab-pipeline",
            required_claims=frozenset(
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
                }
            ),
            optional_claims=frozenset({"ci_config_sha", "project_visibility", "environment"}),
            san=SanKind.URI,
            san_template="https://{ci_config_ref_uri}",
            extensions=(
                ExtensionRule(9, "https://{ci_config_ref_uri}", Encoding.UTF8),
                ExtensionRule(10, "{ci_config_sha}", Encoding.UTF8, optional=True),
                ExtensionRule(11, "{runner_environment}", Encoding.UTF8),
                ExtensionRule(12, "{server_url}/{project_path}", Encoding.UTF8),
                ExtensionRule(13, "{sha}", Encoding.UTF8),
                ExtensionRule(14, "{git_ref}", Encoding.UTF8),
                ExtensionRule(15, "{project_id}", Encoding.UTF8),
                ExtensionRule(16, "{server_url}/{namespace_path}", Encoding.UTF8),
                ExtensionRule(17, "{namespace_id}", Encoding.UTF8),
                ExtensionRule(18, "https://{ci_config_ref_uri}", Encoding.UTF8),
                ExtensionRule(19, "{ci_config_sha}", Encoding.UTF8, optional=True),
                ExtensionRule(20, "{pipeline_source}", Encoding.UTF8),
                ExtensionRule(21, "{server_url}/{project_path}/-/jobs/{job_id}", Encoding.UTF8),
                ExtensionRule(22, "{project_visibility}", Encoding.UTF8, optional=True),
                ExtensionRule(23, "{environment}", Encoding.UTF8, optional=True),
            ),
            derived=frozenset({"git_ref", "server_url"}),
            derive=_derive_gitlab,
        ),
        IssuerKind(
            name="kubernetes",
            required_claims=frozenset({"kubernetes.io"}),
            optional_claims=frozenset(),
            san=SanKind.URI,
            san_template=(
                "https://kubernetes.io/namespaces/{k8s_namespace}"
                "/serviceaccounts/{k8s_serviceaccount}"
            ),
            extensions=(),
            derived=frozenset({"k8s_namespace", "k8s_serviceaccount"}),
            derive=_derive_kubernetes,
            object_claims=frozenset({"kubernetes.io"}),
        ),
    )
}


# --- rendering ----------------------------------------------------------------------------


def _scalar(name: str, value: Any) -> str | None:
    """A claim as template text: strings as-is, integers only where upstream uses numbers."""
    if isinstance(value, str):
        return value
    if name in _INTEGER_CLAIMS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _typed_claim(kind: IssuerKind, name: str, value: Any) -> str | None:
    """Check a present claim's JSON type; its template text, or None if it is not text.

    Objects are accepted only for the kind's ``object_claims`` (and are then required to
    be objects); booleans only for ``_BOOLEAN_CLAIMS``; everything else must be a string
    (or, for ``_INTEGER_CLAIMS``, an integer). Anything else names the claim.
    """
    if name in kind.object_claims:
        if not isinstance(value, Mapping):
            raise AuthenticationError(f"the token's {name} claim must be a JSON object")
        return None
    if name in _BOOLEAN_CLAIMS:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            return value
        raise AuthenticationError(f"the token's {name} claim has the wrong type (a boolean)")
    text = _scalar(name, value)
    if text is None:
        expected = "a string or integer" if name in _INTEGER_CLAIMS else "a string"
        raise AuthenticationError(f"the token's {name} claim has the wrong type ({expected})")
    return text


def _render(template: str, variables: Mapping[str, str]) -> str | None:
    """Fill ``template``; None when a variable is missing or empty."""
    missing = False

    def sub(match: re.Match[str]) -> str:
        nonlocal missing
        value = variables.get(match.group(1))
        if not value:
            missing = True
            return ""
        return value

    out = _VAR_RE.sub(sub, template)
    return None if missing else out


def _encode(rule: ExtensionRule, value: str) -> x509.UnrecognizedExtension:
    if rule.encoding is Encoding.RAW:
        raw = value.encode("utf-8")
    else:
        raw = asn1_core.UTF8String(value).dump()
    return x509.UnrecognizedExtension(rule.oid, raw)


def _check_uri(value: str) -> str:
    if not value.isascii() or _URI_FORBIDDEN.search(value):
        raise AuthenticationError(
            "the token's claims do not form a valid URI for the certificate "
            "(non-ASCII, whitespace or forbidden characters)"
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        raise AuthenticationError("the token's claims do not form a valid URI") from exc
    if not parts.scheme or not host:
        raise AuthenticationError(
            "the certificate URI derived from the token has no scheme or host"
        )
    return value


def principal_from_claims(issuer: OIDCIssuer, claims: Claims) -> Principal:
    """Map verified ``claims`` from ``issuer`` to the certificate identity and extensions."""
    kind = ISSUER_TYPES.get(issuer.type)
    if kind is None:  # configuration validation makes this unreachable
        raise AuthenticationError(f"issuer type {issuer.type!r} is not supported")

    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthenticationError("the token has no sub claim")
    variables: dict[str, str] = {"issuer": issuer.issuer_url, "sub": sub}
    for name in sorted(kind.required_claims):
        value = claims.get(name)
        if value is None or value == "":
            raise AuthenticationError(f"the token lacks the {name} claim ({kind.name} issuers)")
        text = _typed_claim(kind, name, value)
        if text is not None:
            variables[name] = text
    for name in sorted(kind.optional_claims):
        value = claims.get(name)
        if value is None:
            continue
        text = _typed_claim(kind, name, value)
        if text:
            variables[name] = text
    if kind.derive is not None:
        variables.update(kind.derive(claims, issuer))
    for name, value in variables.items():
        if len(value) > MAX_VALUE_CHARS:
            raise AuthenticationError(f"the token's {name} value is too long for a certificate")

    identity = _render(kind.san_template, variables)
    if identity is None:  # every SAN variable is required, so this is a defect
        raise AuthenticationError(f"cannot derive the certificate identity ({kind.name})")
    san: x509.GeneralName
    if kind.san is SanKind.EMAIL:
        san = x509.RFC822Name(identity)
    else:
        san = x509.UniformResourceIdentifier(_check_uri(identity))

    extensions: list[x509.UnrecognizedExtension] = []
    for rule in sorted(COMMON_EXTENSIONS + kind.extensions, key=lambda r: r.arc):
        value = _render(rule.template, variables)
        if value is None:
            if rule.optional:
                continue
            raise AuthenticationError(
                f"cannot render certificate extension {rule.oid.dotted_string}"
            )
        extensions.append(_encode(rule, value))

    email = claims.get("email")
    challenge_claim, challenge = (
        ("email", email) if isinstance(email, str) and email else ("sub", sub)
    )
    return Principal(
        issuer_type=kind.name,
        issuer=variables["issuer"],
        subject=sub,
        identity=identity,
        san=san,
        challenge_claim=challenge_claim,
        challenge=challenge,
        extensions=tuple(extensions),
    )
