"""Fulcio configuration: which OIDC issuers may obtain certificates, and issuance limits.

The issuer allow-list follows upstream Fulcio's configuration file (``pkg/config``) so an
operator can bring the file they already have::

    {
      "OIDCIssuers": {
        "https://accounts.example.com": {
          "IssuerURL": "https://accounts.example.com",
          "ClientID": "sigstore",
          "Type": "email"
        }
      },
      "MetaIssuers": {
        "https://oidc.eks.*.amazonaws.com/id/*": {"ClientID": "sigstore", "Type": "kubernetes"}
      }
    }

Guarantees (configuration fails closed):

* Every issuer URL is ``https``; plain ``http`` is accepted only for loopback hosts
  (:func:`sigstack.core.net.is_loopback_host`: ``127.0.0.0/8``, ``::1``, ``localhost``),
  which is what the built-in test issuer uses. URLs carry no userinfo, query or fragment.
* ``Type`` must be one of :data:`sigstack.services.fulcio.identity.ISSUER_TYPES`; the
  per-type fields (``SubjectDomain`` for ``uri``, ``IssuerClaim`` only for ``email``) are
  checked the way upstream checks them.
* Fields upstream defines but sigstack does not implement (``CIProvider``,
  ``SPIFFETrustDomain``, ``ChallengeClaim``, ``Environment``, ``CIIssuerMetadata``) are
  refused when set, rather than silently ignored; any other unknown field is refused too.
  ``Description`` and ``Contact`` are informational and kept.
* A meta-issuer pattern's ``*`` matches exactly one run of ``[-_a-zA-Z0-9]`` (never a
  ``.`` or ``/``), the pattern is anchored at both ends, and the last two DNS labels of
  its host must be literal, so a pattern cannot cover a whole top-level domain. A
  meta-issuer cannot be of ``Type`` ``email`` (nor ``uri``): a wildcard issuer must not
  vouch for email identities. Whether a pattern's literal labels form a public suffix
  (``https://*.github.io/...``, ``https://*.co.uk/...``: anyone may host an issuer
  there) is NOT checked; choosing patterns under domains one party controls is the
  operator's responsibility.
* An exact issuer may carry a static JWK set (``jwks``): its tokens are then verified
  against those keys only, with no discovery or JWKS fetch (the stack does this for its
  built-in issuer, whose keys it holds).
* Every error is a :class:`~sigstack.core.errors.ConfigError` naming the file (or
  ``<programmatic>``) and the key at fault.

Nothing here does I/O except :meth:`IssuerAllowList.load`, which reads one file.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sigstack.core.errors import ConfigError, VerificationError
from sigstack.core.net import is_loopback_host
from sigstack.core.pki import load_pem_chain
from sigstack.services.fulcio.identity import ISSUER_TYPES

PROGRAMMATIC = "<programmatic>"

# Upstream's field names, as they appear in its JSON configuration.
_SUPPORTED_FIELDS = frozenset(
    {
        "IssuerURL",
        "ClientID",
        "Type",
        "IssuerClaim",
        "SubjectDomain",
        "SkipEmailVerification",
        "CACert",
        "Description",
        "Contact",
    }
)
_UNSUPPORTED_FIELDS = frozenset(
    {"CIProvider", "SPIFFETrustDomain", "ChallengeClaim", "Environment"}
)
_TOP_LEVEL = frozenset({"OIDCIssuers", "MetaIssuers", "CIIssuerMetadata"})

# What "*" may stand for in a meta-issuer pattern (upstream's MetaRegex alphabet).
_WILDCARD_ALPHABET = "[-_a-zA-Z0-9]+"
# "$.a.b" paths for IssuerClaim: dotted claim names only.
_ISSUER_CLAIM_RE = re.compile(r"^\$(\.[A-Za-z0-9_:\-]+)+$")


def _where(source: str, key: str) -> str:
    return f"{source}: {key}"


def check_issuer_url(url: str, *, source: str = PROGRAMMATIC, key: str = "IssuerURL") -> str:
    """Return ``url`` if it is an acceptable issuer URL, else raise ``ConfigError``.

    Acceptable: ``https://host[:port][/path]``, or ``http://`` with a loopback host; no
    userinfo, query or fragment. Issuers are compared byte for byte against the token's
    ``iss``, so the configured form (with or without a trailing slash) must be the one
    the issuer puts in its tokens.
    """
    where = _where(source, key)
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: issuer URL must be a non-empty string")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError(f"{where}: {url!r} is not a valid URL ({exc})") from exc
    if not host:
        raise ConfigError(f"{where}: {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}: {url!r} must not carry user information")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"{where}: {url!r} must not carry a query or fragment")
    if any(c.isspace() for c in url) or not url.isascii():
        raise ConfigError(f"{where}: {url!r} must be ASCII without whitespace")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http":
        if is_loopback_host(host):
            return url
        raise ConfigError(
            f"{where}: {url!r} uses http; only loopback issuers (127.0.0.0/8, ::1, localhost) "
            "may use http, every other issuer must use https"
        )
    raise ConfigError(f"{where}: {url!r} must use https")


@dataclass(frozen=True, kw_only=True)
class IssuerSettings:
    """The per-issuer fields an ``OIDCIssuers`` and a ``MetaIssuers`` entry share.

    ``client_id`` must be in the token's ``aud``; ``type`` selects the claim mapping in
    ``identity``; the other fields are upstream's, checked by :func:`_check_common`.
    """

    client_id: str
    type: str
    issuer_claim: str | None = None
    subject_domain: str | None = None
    skip_email_verification: bool = False
    ca_cert_pem: str | None = None
    description: str = ""
    contact: str = ""
    source: str = field(default=PROGRAMMATIC, compare=False)

    def settings(self) -> dict[str, Any]:
        """The shared fields as keyword arguments (to build an issuer with the same settings)."""
        return {f.name: getattr(self, f.name) for f in fields(IssuerSettings)}


@dataclass(frozen=True, kw_only=True)
class OIDCIssuer(IssuerSettings):
    """One allowed issuer (an ``OIDCIssuers`` entry, or a meta-issuer resolved to a URL).

    ``issuer_url`` is compared exactly against the token's ``iss``. ``jwks``, when set, is
    the issuer's static JSON Web Key Set (``{"keys": [...]}``): tokens are verified against
    it alone and nothing is fetched for this issuer. It takes part in equality, so merging
    the same URL with and without static keys is a conflict.
    """

    issuer_url: str
    jwks: Mapping[str, Any] | None = field(default=None, hash=False, repr=False)

    def __post_init__(self) -> None:
        check_issuer_url(self.issuer_url, source=self.source, key=f"{self.issuer_url}.IssuerURL")
        _check_common(self, self.issuer_url)
        if self.type == "uri":
            _check_uri_subject_domain(self)
        if self.jwks is not None:
            object.__setattr__(self, "jwks", _static_jwks(self))


@dataclass(frozen=True, kw_only=True)
class MetaIssuer(IssuerSettings):
    """A templated issuer (``MetaIssuers`` entry) such as ``https://oidc.eks.*.amazonaws.com/id/*``.

    ``*`` matches one DNS label or path segment made of ``[-_a-zA-Z0-9]``. ``email`` and
    ``uri`` issuers cannot be meta-issuers. The last two labels of the host must be
    literal, but whether they form a public suffix (where anyone may host an issuer) is
    not checked: that is the operator's responsibility.
    """

    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = _where(self.source, self.pattern)
        if "*" not in self.pattern:
            raise ConfigError(f"{where}: a meta-issuer pattern needs at least one '*'")
        scheme, sep, rest = self.pattern.partition("://")
        if not sep or "*" in scheme:
            raise ConfigError(f"{where}: must start with https:// (no '*' in the scheme)")
        check_issuer_url(self.pattern.replace("*", "x"), source=self.source, key=self.pattern)
        netloc = rest.split("/", 1)[0]
        if "*" in netloc:
            if netloc.startswith("[") or ":" in netloc:
                raise ConfigError(f"{where}: '*' may not appear in an IP address or port")
            labels = netloc.split(".")
            if len(labels) < 3 or any("*" in label for label in labels[-2:]):
                raise ConfigError(
                    f"{where}: the last two DNS labels of a meta-issuer host must be literal "
                    "(for example https://oidc.eks.*.amazonaws.com/id/*)"
                )
        if self.type == "uri":
            raise ConfigError(
                f"{where}: 'uri' issuers cannot be meta-issuers (SubjectDomain "
                "must be checked against one concrete issuer)"
            )
        if self.type == "email":
            raise ConfigError(
                f"{where}.Type: 'email' issuers cannot be meta-issuers: a wildcard issuer "
                "must not vouch for email identities; list each email issuer under OIDCIssuers"
            )
        _check_common(self, self.pattern)
        regex = "^" + re.escape(self.pattern).replace(re.escape("*"), _WILDCARD_ALPHABET) + "$"
        object.__setattr__(self, "_regex", re.compile(regex))

    def resolve(self, issuer_url: str) -> OIDCIssuer | None:
        """The concrete issuer this pattern admits for ``issuer_url``, or None."""
        if not self._regex.fullmatch(issuer_url):
            return None
        return OIDCIssuer(issuer_url=issuer_url, **self.settings())


def _static_jwks(entry: OIDCIssuer) -> dict[str, Any]:
    """A private copy of ``entry.jwks`` if it is a JWK set with at least one key."""
    where = _where(entry.source, f"{entry.issuer_url}.jwks")
    jwks = entry.jwks
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list | tuple):
        raise ConfigError(f"{where}: a static key set must be a JWK set ({{'keys': [...]}})")
    if not jwks["keys"]:
        raise ConfigError(f"{where}: the static key set holds no key")
    try:
        copy: dict[str, Any] = json.loads(json.dumps(dict(jwks)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: the static key set is not JSON ({exc})") from exc
    return copy


def _check_common(entry: IssuerSettings, key: str) -> None:
    where = _where(entry.source, key)
    if not isinstance(entry.client_id, str) or not entry.client_id:
        raise ConfigError(f"{where}.ClientID: must be a non-empty string")
    if entry.type not in ISSUER_TYPES:
        raise ConfigError(
            f"{where}.Type: unknown issuer type {entry.type!r}; "
            f"supported: {', '.join(sorted(ISSUER_TYPES))}"
        )
    if entry.issuer_claim is not None:
        if entry.type != "email":
            raise ConfigError(f"{where}.IssuerClaim: only 'email' issuers can map the issuer claim")
        if not _ISSUER_CLAIM_RE.fullmatch(entry.issuer_claim):
            raise ConfigError(
                f"{where}.IssuerClaim: {entry.issuer_claim!r} must be a dotted path like "
                "'$.federated_claims.connector_id'"
            )
    if entry.skip_email_verification and entry.type != "email":
        raise ConfigError(f"{where}.SkipEmailVerification: only meaningful for 'email' issuers")
    if entry.ca_cert_pem is not None:
        if not isinstance(entry.ca_cert_pem, str) or not entry.ca_cert_pem.isascii():
            raise ConfigError(f"{where}.CACert: must be ASCII PEM text")
        try:
            load_pem_chain(entry.ca_cert_pem, what="the CA certificate")
        except VerificationError as exc:
            raise ConfigError(f"{where}.CACert: {exc.message}") from exc
    if entry.subject_domain is not None and entry.type != "uri":
        raise ConfigError(f"{where}.SubjectDomain: only 'uri' issuers use SubjectDomain")


def _check_uri_subject_domain(entry: OIDCIssuer) -> None:
    where = _where(entry.source, f"{entry.issuer_url}.SubjectDomain")
    if not entry.subject_domain:
        raise ConfigError(
            f"{where}: 'uri' issuers must set SubjectDomain (e.g. https://example.com)"
        )
    domain = urlsplit(entry.subject_domain)
    issuer = urlsplit(entry.issuer_url)
    if not domain.scheme or not domain.hostname:
        raise ConfigError(f"{where}: {entry.subject_domain!r} must be a URL with scheme and host")
    if domain.scheme != issuer.scheme:
        raise ConfigError(f"{where}: scheme {domain.scheme!r} differs from the issuer's")
    d_host, i_host = domain.hostname, issuer.hostname or ""
    if d_host == i_host:
        return
    d_labels, i_labels = d_host.split("."), i_host.split(".")
    if len(d_labels) < 2 or len(i_labels) < 2 or d_labels[-2:] != i_labels[-2:]:
        raise ConfigError(
            f"{where}: {d_host!r} and the issuer host {i_host!r} must share their last two "
            "DNS labels (proof that one party controls both)"
        )


def ssl_context_for(issuer: OIDCIssuer) -> ssl.SSLContext | None:
    """An SSL context trusting the system roots plus the issuer's ``CACert``, if it has one."""
    if issuer.ca_cert_pem is None:
        return None
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=issuer.ca_cert_pem)
    return ctx


# --- the allow-list ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuerAllowList:
    """The issuers Fulcio accepts: exact URLs first, then meta-issuer patterns."""

    issuers: Mapping[str, OIDCIssuer] = field(default_factory=dict)
    meta_issuers: Mapping[str, MetaIssuer] = field(default_factory=dict)

    @classmethod
    def of(
        cls, issuers: Iterable[OIDCIssuer] = (), meta_issuers: Iterable[MetaIssuer] = ()
    ) -> IssuerAllowList:
        """Build an allow-list from entries, refusing duplicates."""
        exact: dict[str, OIDCIssuer] = {}
        for iss in issuers:
            if iss.issuer_url in exact:
                raise ConfigError(f"{iss.source}: {iss.issuer_url}: issuer is listed twice")
            exact[iss.issuer_url] = iss
        meta: dict[str, MetaIssuer] = {}
        for m in meta_issuers:
            if m.pattern in meta:
                raise ConfigError(f"{m.source}: {m.pattern}: meta-issuer is listed twice")
            meta[m.pattern] = m
        return cls(exact, meta)

    def merged(self, other: IssuerAllowList) -> IssuerAllowList:
        """Both lists together; the same issuer configured differently is an error."""
        exact = dict(self.issuers)
        for url, iss in other.issuers.items():
            if url in exact and exact[url] != iss:
                raise ConfigError(
                    f"{iss.source}: {url}: issuer conflicts with the one from {exact[url].source}"
                )
            exact[url] = iss
        meta = dict(self.meta_issuers)
        for pattern, m in other.meta_issuers.items():
            if pattern in meta and meta[pattern] != m:
                raise ConfigError(
                    f"{m.source}: {pattern}: meta-issuer conflicts with the one from "
                    f"{meta[pattern].source}"
                )
            meta[pattern] = m
        return IssuerAllowList(exact, meta)

    def get(self, issuer_url: str) -> OIDCIssuer | None:
        """The configuration for a token's ``iss``, or None if it is not allowed."""
        found = self.issuers.get(issuer_url)
        if found is not None:
            return found
        for pattern in sorted(self.meta_issuers):
            resolved = self.meta_issuers[pattern].resolve(issuer_url)
            if resolved is not None:
                return resolved
        return None

    def __len__(self) -> int:
        return len(self.issuers) + len(self.meta_issuers)

    # --- the upstream file format ----------------------------------------------------------

    @classmethod
    def from_json(cls, data: Any, *, source: str = PROGRAMMATIC) -> IssuerAllowList:
        """Parse upstream Fulcio's JSON configuration (already decoded)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the configuration must be a JSON object")
        unknown = set(data) - _TOP_LEVEL
        if unknown:
            raise ConfigError(
                f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
                "expected OIDCIssuers and/or MetaIssuers"
            )
        if data.get("CIIssuerMetadata"):
            raise ConfigError(f"{source}: CIIssuerMetadata: ci-provider issuers are not supported")
        issuers = []
        for url, entry in _section(data, "OIDCIssuers", source).items():
            iss = OIDCIssuer(**_entry_kwargs(entry, source, url, meta=False), issuer_url=url)
            _check_issuer_url_field(iss, entry)
            issuers.append(iss)
        metas = [
            MetaIssuer(**_entry_kwargs(entry, source, pattern, meta=True), pattern=pattern)
            for pattern, entry in _section(data, "MetaIssuers", source).items()
        ]
        return cls.of(issuers, metas)

    @classmethod
    def load(cls, path: Path | str) -> IssuerAllowList:
        """Read and validate an upstream-format JSON configuration file."""
        p = Path(path)
        try:
            raw = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the Fulcio issuer configuration: {exc}") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON: {exc}") from exc
        return cls.from_json(data, source=str(p))


def _section(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: {name}: must be an object keyed by issuer URL")
    return section


def _check_issuer_url_field(iss: OIDCIssuer, entry: dict[str, Any]) -> None:
    declared = entry.get("IssuerURL")
    if declared is not None and declared != iss.issuer_url:
        raise ConfigError(
            f"{iss.source}: {iss.issuer_url}.IssuerURL: {declared!r} differs from its key"
        )


def _entry_kwargs(entry: Any, source: str, key: str, *, meta: bool) -> dict[str, Any]:
    where = _where(source, key)
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{source}: issuer keys must be non-empty URL strings")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = set(entry) - _SUPPORTED_FIELDS - _UNSUPPORTED_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for name in sorted(_UNSUPPORTED_FIELDS & set(entry)):
        if entry[name] not in (None, "", False):
            raise ConfigError(f"{where}.{name}: not supported by sigstack")
    if meta and entry.get("IssuerURL") not in (None, "", key):
        raise ConfigError(f"{where}.IssuerURL: meta-issuers are keyed by their pattern alone")

    def text(name: str, required: bool = False) -> str | None:
        value = entry.get(name)
        if value is None or value == "":
            if required:
                raise ConfigError(f"{where}.{name}: required")
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{name}: must be a string")
        return value

    skip = entry.get("SkipEmailVerification", False)
    if not isinstance(skip, bool):
        raise ConfigError(f"{where}.SkipEmailVerification: must be true or false")
    return {
        "client_id": text("ClientID", required=True),
        "type": text("Type", required=True),
        "issuer_claim": text("IssuerClaim"),
        "subject_domain": text("SubjectDomain"),
        "skip_email_verification": skip,
        "ca_cert_pem": text("CACert"),
        "description": text("Description") or "",
        "contact": text("Contact") or "",
        "source": source,
    }


# --- the service configuration --------------------------------------------------------------


@dataclass(frozen=True)
class FulcioConfig:
    """Everything Fulcio needs besides keys: issuers, lifetimes and limits.

    * ``cert_lifetime``: validity of issued certificates (default 10 minutes, at most 24 h).
    * ``max_body_bytes``: request body limit for ``signingCert`` (default 64 KiB; a CSR
      with an RSA-4096 key and a large token fit comfortably).
    * ``jwks_ttl``: how long an issuer's discovery document and JWKS are cached.
    * ``jwks_min_refresh``: an unknown ``kid`` refetches the JWKS at most this often.
    * ``clock_leeway``: tolerance for ``nbf``/``iat`` in the future (``exp`` has none).
    * ``fetch_timeout``: seconds for each discovery/JWKS and CT request.
    """

    issuers: IssuerAllowList
    cert_lifetime: timedelta = timedelta(minutes=10)
    max_body_bytes: int = 64 * 1024
    jwks_ttl: timedelta = timedelta(minutes=10)
    jwks_min_refresh: timedelta = timedelta(seconds=30)
    clock_leeway: timedelta = timedelta(seconds=60)
    fetch_timeout: float = 10.0

    def __post_init__(self) -> None:
        if len(self.issuers) == 0:
            raise ConfigError(f"{PROGRAMMATIC}: issuers: at least one OIDC issuer must be allowed")
        if not timedelta(seconds=1) <= self.cert_lifetime <= timedelta(hours=24):
            raise ConfigError(f"{PROGRAMMATIC}: cert_lifetime must be between 1 s and 24 h")
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise ConfigError(f"{PROGRAMMATIC}: max_body_bytes must be between 1 KiB and 16 MiB")
        if self.jwks_ttl <= timedelta(0) or self.jwks_min_refresh < timedelta(0):
            raise ConfigError(f"{PROGRAMMATIC}: jwks_ttl must be positive")
        if not timedelta(0) <= self.clock_leeway <= timedelta(minutes=5):
            raise ConfigError(f"{PROGRAMMATIC}: clock_leeway must be between 0 and 5 minutes")
        if not 0 < self.fetch_timeout <= 120:
            raise ConfigError(f"{PROGRAMMATIC}: fetch_timeout must be between 0 and 120 seconds")


def builtin_issuer(
    issuer_url: str, client_id: str = "sigstore", *, jwks: Mapping[str, Any] | None = None
) -> OIDCIssuer:
    """The stack's built-in test issuer: an ``email`` issuer on a loopback URL.

    Pass its JWK set as ``jwks`` (``sigstack.services.oidc.OIDCIssuer.jwks()``) so Fulcio
    verifies its tokens against those keys with no network round trip.
    """
    return OIDCIssuer(issuer_url=issuer_url, client_id=client_id, type="email", jwks=jwks)
