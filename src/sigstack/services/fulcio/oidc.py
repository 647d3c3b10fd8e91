"""OIDC identity-token verification for Fulcio.

:class:`TokenVerifier` accepts a JWT only if all of these hold, checked in this order:

1. it is a well-formed compact JWS with no ``crit`` header, and its ``alg`` is one of
   ``RS256``, ``ES256``, ``ES384``, ``EdDSA`` (never ``none`` or ``HS*``);
2. its ``iss`` is on the allow-list, exactly (``OIDCIssuers``) or through a meta-issuer
   pattern (``MetaIssuers``);
3. its signature verifies with a key from the issuer's JWKS, found through OIDC discovery
   (``{iss}/.well-known/openid-configuration`` -> ``jwks_uri``; the document's ``issuer``
   must equal ``iss``). Keys are cached for ``jwks_ttl``; a ``kid`` missing from the cache
   triggers one refetch, at most once per ``jwks_min_refresh``. An issuer configured
   with a static key set (``OIDCIssuer.jwks``, e.g. the stack's built-in issuer) is
   never fetched: its keys are parsed once, when the verifier is built (an unusable set
   is a ``ConfigError``), and an unknown ``kid`` is simply refused. A key's type and
   curve must match ``alg`` (RSA keys at least 2048 bits), and a JWK ``alg``/``use``
   that says otherwise excludes the key;
4. ``aud`` contains the issuer's ``ClientID``; ``exp`` is in the future (no leeway);
   ``nbf`` (optional) and ``iat`` (required) are not later than now + ``clock_leeway``;
   ``sub`` is a non-empty string.

Every failure raises :class:`~sigstack.core.errors.AuthenticationError` (401) whose
message names the check that failed and never contains the token; a discovery or JWKS
endpoint that cannot be reached or answers nonsense raises
:class:`~sigstack.core.errors.UpstreamError` (502), since the caller's token is not at fault.
Network access goes through an injectable ``fetch`` callable, so tests run offline. The
default :class:`HttpxFetcher` honours the environment's proxy settings for external
issuers and never uses a proxy for a loopback issuer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from sigstack.core.clock import Clock, utcnow
from sigstack.core.errors import AuthenticationError, ConfigError, SigstackError, UpstreamError
from sigstack.core.net import is_loopback_host
from sigstack.services.fulcio.config import (
    FulcioConfig,
    IssuerAllowList,
    OIDCIssuer,
    ssl_context_for,
)

log = logging.getLogger("sigstack.fulcio.oidc")

ALLOWED_ALGORITHMS = ("RS256", "ES256", "ES384", "EdDSA")
MAX_TOKEN_BYTES = 32 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024
MIN_RSA_BITS = 2048

Fetcher = Callable[[str, OIDCIssuer], Awaitable[Any]]
"""``await fetch(url, issuer)`` returns the decoded JSON document at ``url``.

``issuer`` is passed so a fetcher can apply per-issuer transport settings (``CACert``).
A fetcher raises ``UpstreamError`` (or any ``SigstackError``) when the fetch fails.
"""


def _show(value: Any, limit: int = 120) -> str:
    """A bounded representation of an attacker-controlled value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _check_fetch_url(url: Any, what: str) -> str:
    if not isinstance(url, str):
        raise UpstreamError(f"{what} is not a URL")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise UpstreamError(f"{what} {_show(url)} is not a valid URL") from exc
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and is_loopback_host(host):
        return url
    raise UpstreamError(f"{what} {_show(url)} must be an https URL")


class HttpxFetcher:
    """Fetch JSON documents with httpx: no redirects, bounded size and time.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests). An issuer's
    ``CACert`` is trusted in addition to the system roots when no transport is given.
    Environment proxy settings (``HTTPS_PROXY``...) apply to external hosts; a loopback
    host is always reached directly (a proxy cannot reach this machine's loopback).
    """

    def __init__(
        self,
        timeout: float = 10.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        self._timeout = timeout
        self._transport = transport
        self._max_bytes = max_bytes

    async def __call__(self, url: str, issuer: OIDCIssuer) -> Any:
        verify: Any = ssl_context_for(issuer) or True
        try:
            host = urlsplit(url).hostname or ""
        except ValueError as exc:
            raise UpstreamError(f"{_show(url)} is not a valid URL") from exc
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout,
                transport=self._transport,
                verify=verify,
                follow_redirects=False,
                trust_env=not is_loopback_host(host),
            ) as client:
                async with client.stream(
                    "GET", url, headers={"Accept": "application/json"}
                ) as resp:
                    if resp.status_code != 200:
                        raise UpstreamError(f"{url} answered HTTP {resp.status_code}")
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > self._max_bytes:
                            raise UpstreamError(f"{url} answered more than {self._max_bytes} bytes")
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot fetch {url}: {type(exc).__name__}") from exc
        try:
            return json.loads(bytes(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UpstreamError(f"{url} did not answer JSON") from exc


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check, with the issuer configuration it matched."""

    issuer: OIDCIssuer
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: Any  # the JWK's declared "alg", if any
    use: Any  # the JWK's declared "use", if any
    jwk: jwt.PyJWK


@dataclass(frozen=True)
class _KeySet:
    keys: tuple[_Key, ...]
    fetched_at: datetime
    static: bool = False  # configured, never fetched nor refreshed

    def with_kid(self, kid: str | None) -> list[_Key]:
        if kid is None:
            return list(self.keys)
        return [k for k in self.keys if k.kid == kid]


def _key_fits(candidate: _Key, alg: str) -> bool:
    if candidate.alg not in (None, alg) or candidate.use not in (None, "sig"):
        return False
    key = candidate.jwk.key
    if alg == "RS256":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    if alg == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    if alg == "ES384":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _parse_jwks(doc: Any, url: str) -> list[_Key]:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise UpstreamError(f"{url} is not a JWK set (no 'keys' list)")
    out: list[_Key] = []
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric or unknown key types are never usable here
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            out.append(_Key(kid, entry.get("alg"), entry.get("use"), jwt.PyJWK(entry)))
        except jwt.PyJWTError as exc:
            log.debug("skipping unusable JWK %s from %s: %s", _show(kid), url, exc)
    return out


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthenticationError(f"the token has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthenticationError(f"the token's {name} claim is not a number")
    return float(value)


class TokenVerifier:
    """Verify OIDC identity tokens against an issuer allow-list (see the module docstring)."""

    def __init__(
        self,
        issuers: IssuerAllowList,
        *,
        fetch: Fetcher | None = None,
        clock: Clock = utcnow,
        jwks_ttl: timedelta = timedelta(minutes=10),
        jwks_min_refresh: timedelta = timedelta(seconds=30),
        clock_leeway: timedelta = timedelta(seconds=60),
        fetch_timeout: float = 10.0,
        max_cached_issuers: int = 128,
    ) -> None:
        self._issuers = issuers
        self._fetch: Fetcher = fetch or HttpxFetcher(fetch_timeout)
        self._clock = clock
        self._ttl = jwks_ttl
        self._min_refresh = jwks_min_refresh
        self._leeway = clock_leeway
        self._max_cached = max_cached_issuers
        self._cache: OrderedDict[str, _KeySet] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[_KeySet]] = {}
        self._static = {
            url: self._static_keyset(iss)
            for url, iss in issuers.issuers.items()
            if iss.jwks is not None
        }

    @classmethod
    def from_config(
        cls, config: FulcioConfig, *, fetch: Fetcher | None = None, clock: Clock = utcnow
    ) -> TokenVerifier:
        """A verifier using the issuers, TTLs, leeway and timeout of ``config``."""
        return cls(
            config.issuers,
            fetch=fetch,
            clock=clock,
            jwks_ttl=config.jwks_ttl,
            jwks_min_refresh=config.jwks_min_refresh,
            clock_leeway=config.clock_leeway,
            fetch_timeout=config.fetch_timeout,
        )

    @property
    def issuers(self) -> IssuerAllowList:
        return self._issuers

    async def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` and return its issuer configuration and claims."""
        if not isinstance(token, str) or not token.strip():
            raise AuthenticationError("no OIDC identity token was presented")
        token = token.strip()
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthenticationError(f"the identity token is longer than {MAX_TOKEN_BYTES} bytes")

        # 1. Structure and algorithm, before anything is fetched on the token's behalf.
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthenticationError("the identity token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthenticationError(
                f"token algorithm {_show(alg)} is not accepted "
                f"(accepted: {', '.join(ALLOWED_ALGORITHMS)})"
            )
        if "crit" in header:
            raise AuthenticationError(
                "the token has critical header parameters; none are supported"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("the token's kid header is not a string")

        # 2. The issuer must be allowed.
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthenticationError("the token has no iss claim")
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise AuthenticationError(f"issuer {_show(iss)} is not allowed by this Fulcio")

        # 3. The signature, with a key the issuer publishes.
        claims = await self._verify_signature(token, alg, kid, issuer)

        # 4. The claims.
        self._check_claims(claims, issuer)
        return VerifiedToken(issuer=issuer, claims=claims)

    # --- signature ------------------------------------------------------------------------

    async def _verify_signature(
        self, token: str, alg: str, kid: str | None, issuer: OIDCIssuer
    ) -> dict[str, Any]:
        keyset = await self._keyset(issuer)
        candidates = keyset.with_kid(kid)
        if not candidates and kid is not None and not keyset.static:
            if self._clock() - keyset.fetched_at >= self._min_refresh:
                keyset = await self._refresh(issuer)
                candidates = keyset.with_kid(kid)
        if not candidates:
            raise AuthenticationError(
                f"the token's signing key (kid {_show(kid)}) is not published by its issuer"
            )
        usable = [k for k in candidates if _key_fits(k, alg)]
        if not usable:
            raise AuthenticationError(
                f"the issuer's key {_show(kid)} cannot verify {alg} signatures"
            )
        for candidate in usable:
            try:
                decoded = jwt.PyJWS().decode_complete(
                    token, key=candidate.jwk.key, algorithms=[alg]
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise AuthenticationError("the identity token is not a well-formed JWS") from exc
            try:
                claims = json.loads(decoded["payload"])
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise AuthenticationError("the token's payload is not JSON") from exc
            if not isinstance(claims, dict):
                raise AuthenticationError("the token's payload is not a JSON object")
            return claims
        raise AuthenticationError("the token's signature does not verify with the issuer's keys")

    def _static_keyset(self, issuer: OIDCIssuer) -> _KeySet:
        """The keys of an issuer configured with a static JWK set; ``ConfigError`` if unusable."""
        where = f"{issuer.source}: {issuer.issuer_url}.jwks"
        try:
            keys = _parse_jwks(issuer.jwks, "the static key set")
        except UpstreamError as exc:
            raise ConfigError(f"{where}: {exc.message}") from exc
        if not keys:
            raise ConfigError(f"{where}: the static key set holds no usable signing key")
        return _KeySet(keys=tuple(keys), fetched_at=self._clock(), static=True)

    async def _keyset(self, issuer: OIDCIssuer) -> _KeySet:
        if issuer.jwks is not None:
            static = self._static.get(issuer.issuer_url)
            if static is None:  # an issuer from outside the allow-list this was built with
                static = self._static[issuer.issuer_url] = self._static_keyset(issuer)
            return static
        cached = self._cache.get(issuer.issuer_url)
        if cached is not None and self._clock() - cached.fetched_at < self._ttl:
            self._cache.move_to_end(issuer.issuer_url)
            return cached
        return await self._refresh(issuer)

    async def _refresh(self, issuer: OIDCIssuer) -> _KeySet:
        """Fetch the issuer's keys; concurrent callers share one fetch."""
        url = issuer.issuer_url
        loop = asyncio.get_running_loop()
        pending = self._inflight.get(url)
        if pending is not None and pending.get_loop() is loop and not pending.done():
            return await asyncio.shield(pending)
        future: asyncio.Future[_KeySet] = loop.create_future()
        self._inflight[url] = future
        try:
            keyset = await self._fetch_keyset(issuer)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            if self._inflight.get(url) is future:
                del self._inflight[url]
        future.set_result(keyset)
        self._cache[url] = keyset
        self._cache.move_to_end(url)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return keyset

    async def _fetch_keyset(self, issuer: OIDCIssuer) -> _KeySet:
        url = issuer.issuer_url
        discovery_url = url.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = await self._fetch(discovery_url, issuer)
            if not isinstance(doc, dict):
                raise UpstreamError(f"{discovery_url} is not a JSON object")
            if doc.get("issuer") != url:
                raise UpstreamError(
                    f"{discovery_url} names issuer {_show(doc.get('issuer'))}, not {url}"
                )
            jwks_uri = _check_fetch_url(doc.get("jwks_uri"), f"{discovery_url} jwks_uri")
            keys = _parse_jwks(await self._fetch(jwks_uri, issuer), jwks_uri)
        except SigstackError as exc:
            if isinstance(exc, UpstreamError):
                raise UpstreamError(
                    f"cannot load the signing keys of issuer {url}: {exc.message}"
                ) from exc
            raise
        if not keys:
            raise UpstreamError(f"issuer {url} publishes no usable signing key")
        return _KeySet(keys=tuple(keys), fetched_at=self._clock())

    # --- claims ---------------------------------------------------------------------------

    def _check_claims(self, claims: Mapping[str, Any], issuer: OIDCIssuer) -> None:
        if claims.get("iss") != issuer.issuer_url:
            raise AuthenticationError("the token's iss claim does not match its issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthenticationError("the token has no valid aud claim")
        if issuer.client_id not in audiences:
            raise AuthenticationError(
                f"the token's audience does not include {issuer.client_id!r} "
                "(request the token for this client id)"
            )
        now = self._clock().timestamp()
        leeway = self._leeway.total_seconds()
        exp = _number(claims, "exp", required=True)
        assert exp is not None
        if now >= exp:
            raise AuthenticationError("the identity token has expired; request a new one")
        nbf = _number(claims, "nbf", required=False)
        if nbf is not None and nbf > now + leeway:
            raise AuthenticationError("the identity token is not valid yet (nbf is in the future)")
        iat = _number(claims, "iat", required=True)
        assert iat is not None
        if iat > now + leeway:
            raise AuthenticationError("the identity token was issued in the future (iat)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthenticationError("the token has no sub claim")
