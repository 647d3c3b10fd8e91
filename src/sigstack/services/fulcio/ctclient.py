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
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

import httpx

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
    """Anything that can log a precertificate chain and return its SCT."""

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
    """RFC 6962 ``add-pre-chain`` over HTTP, verifying every SCT it returns."""

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

    @property
    def url(self) -> str:
        return self._url

    async def add_pre_chain(self, chain_der: list[bytes]) -> SignedCertificateTimestamp:
        body = {"chain": [base64.b64encode(c).decode("ascii") for c in chain_der]}
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, follow_redirects=False
            ) as client:
                async with client.stream("POST", self._url, json=body) as resp:
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
