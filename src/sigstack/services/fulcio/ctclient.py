"""Submitting precertificates to the CT log, and checking what the log answers.

:class:`CTSubmitter` is what :class:`~sigstack.services.fulcio.service.FulcioService`
needs from a CT log: ``add_pre_chain([precert, intermediate, ..., root])`` returning the
SCT. :class:`HttpCTSubmitter` speaks RFC 6962 ``POST {base_url}/ct/v1/add-pre-chain``.

Guarantee: an SCT returned by :class:`HttpCTSubmitter` has been verified, with the CT
log key Fulcio was configured with, over the exact ``precert_entry`` Fulcio expects
(issuer key hash of ``chain[1]`` and the precertificate's TBS without the poison
extension, at the SCT's own timestamp and extensions), so a misbehaving or impostor log
cannot make Fulcio embed an SCT that clients would reject. Every failure is an
:class:`~sigstack.core.errors.UpstreamError` (502) naming what went wrong.

Connections: an :class:`HttpCTSubmitter` keeps ONE ``httpx.AsyncClient`` (and so one
connection pool, with keep-alive) for its lifetime instead of one per submission. The
client is opened on first use; :meth:`HttpCTSubmitter.aclose` closes it (a later
submission opens a new one). Connections belong to the event loop that opened them: a
submission from another loop (a harness running each call under ``asyncio.run``)
replaces the client instead of reusing sockets of a dead loop.
:class:`~sigstack.services.fulcio.service.FulcioService` owns its submitter and closes it
in ``aclose()``, which the Fulcio app runs on shutdown.
The CT log is a sibling service: environment proxy settings (``HTTP_PROXY``,
``ALL_PROXY``...) are never used for it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import httpx

from sigstack.core.encoding import b64
from sigstack.core.errors import UpstreamError, VerificationError
from sigstack.core.keys import PublicKey, require_supported
from sigstack.core.pki import load_der_certificate
from sigstack.core.sct import (
    PRECERT_POISON_OID,
    SignedCertificateTimestamp,
    issuer_key_hash,
    precert_timestamped_entry,
    tbs_without_extension,
)

MAX_RESPONSE_BYTES = 64 * 1024


class CTSubmitter(Protocol):
    """Anything that can log a precertificate chain and return its SCT.

    A submitter that holds resources may also define ``async def aclose()``;
    ``FulcioService.aclose`` calls it when present.
    """

    async def add_pre_chain(self, chain_der: list[bytes]) -> SignedCertificateTimestamp:
        """Log ``chain_der`` (precertificate first, root last) and return the SCT."""
        ...


def precert_entry_for(chain_der: list[bytes], timestamp_ms: int, extensions: bytes) -> bytes:
    """The RFC 6962 ``TimestampedEntry`` a log signs for precert ``chain_der[0]``.

    ``chain_der[1]`` is the precertificate's issuer, whose key hash the entry binds.
    """
    if len(chain_der) < 2:
        raise VerificationError("a precertificate chain needs the precertificate and its issuer")
    issuer = load_der_certificate(chain_der[1], what="precertificate issuer")
    issuer_key = require_supported(issuer.public_key())
    tbs = tbs_without_extension(chain_der[0], PRECERT_POISON_OID)
    return precert_timestamped_entry(timestamp_ms, issuer_key_hash(issuer_key), tbs, extensions)


def verify_precert_sct(
    sct: SignedCertificateTimestamp, chain_der: list[bytes], ct_public_key: PublicKey
) -> None:
    """Raise ``VerificationError`` unless ``sct`` is the log's signature over ``chain_der[0]``."""
    entry = precert_entry_for(chain_der, sct.timestamp_ms, sct.extensions)
    sct.verify(ct_public_key, entry)


class HttpCTSubmitter:
    """RFC 6962 ``add-pre-chain`` over HTTP, verifying every SCT it returns.

    One ``httpx.AsyncClient`` serves every submission (opened on first use, closed by
    :meth:`aclose`); redirects are not followed and environment proxies are not used.
    ``transport`` replaces the network (``httpx.MockTransport`` in tests; it is closed
    with the client); without it a plain ``httpx.AsyncHTTPTransport`` is used.
    """

    def __init__(
        self,
        base_url: str,
        ct_public_key: PublicKey,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/ct/v1/add-pre-chain"
        self._key = ct_public_key
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return self._url

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            # An explicit transport and trust_env=False: HTTP(S)_PROXY / ALL_PROXY never
            # apply to the sibling CT log (with a proxy set, no precert would reach it).
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                transport=self._transport or httpx.AsyncHTTPTransport(),
                follow_redirects=False,
                trust_env=False,
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool; a later submission opens a new one."""
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    async def add_pre_chain(self, chain_der: list[bytes]) -> SignedCertificateTimestamp:
        body = {"chain": [b64(c) for c in chain_der]}
        try:
            async with self._http().stream("POST", self._url, json=body) as resp:
                content = bytearray()
                async for chunk in resp.aiter_bytes():
                    content.extend(chunk)
                    if len(content) > MAX_RESPONSE_BYTES:
                        raise UpstreamError("the CT log's answer is too large to be an SCT")
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"the CT log at {self._url} could not be reached ({type(exc).__name__}); "
                "no certificate was issued"
            ) from exc
        if resp.status_code != 200:
            raise UpstreamError(
                f"the CT log refused the precertificate: HTTP {resp.status_code}"
                f"{_detail(bytes(content))}; no certificate was issued"
            )
        try:
            sct = SignedCertificateTimestamp.from_json(json.loads(bytes(content)))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UpstreamError("the CT log did not answer JSON") from exc
        except VerificationError as exc:
            raise UpstreamError(f"the CT log answered a malformed SCT: {exc.message}") from exc
        try:
            verify_precert_sct(sct, chain_der, self._key)
        except VerificationError as exc:
            raise UpstreamError(
                f"the CT log's SCT does not verify ({exc.message}); is Fulcio configured "
                "with the right CT log URL and key?"
            ) from exc
        return sct


def _detail(content: bytes) -> str:
    """A short, safe excerpt of an error answer (its ``message`` if it is JSON)."""
    message: Any = None
    try:
        data: Any = json.loads(content)
        message = data.get("message") if isinstance(data, dict) else None
    except (ValueError, UnicodeDecodeError):
        pass
    if not isinstance(message, str):
        message = content[:200].decode("utf-8", "replace")
    message = " ".join(message.split())[:200]
    return f" ({message})" if message else ""
