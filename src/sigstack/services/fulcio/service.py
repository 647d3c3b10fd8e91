"""Fulcio's domain logic: turn a verified OIDC identity and a public key into a certificate.

Issuance (both request shapes end in :meth:`FulcioService._issue`):

1. the token is verified (:mod:`.oidc`) and mapped to a principal (:mod:`.identity`);
2. the caller proves possession of the key: a CSR's self-signature, or a signature over
   the token's ``email`` claim when present, else ``sub``;
3. a PRECERTIFICATE is signed with every final field plus the CRITICAL CT poison
   extension as the last extension, and ``[precert, intermediate, ..., root]`` is sent
   to the CT log;
4. the final certificate is signed with the same serial, names, validity and
   extensions, the SCT list taking the poison's position; before it is returned, its
   ``tbs_precertificate_bytes`` is checked to equal the precertificate's TBS without the
   poison (what the SCT covers), so clients' SCT verification cannot fail on it.

Certificate profile (what clients enforce, interop.md section 3): v3; empty subject;
SAN CRITICAL (email or URI); KeyUsage digitalSignature CRITICAL; EKU codeSigning
non-critical; BasicConstraints ca=False (critical, as Go encodes it); SKI; AKI; serial
positive and at most 20 bytes; notBefore = now in whole seconds, notAfter = notBefore +
lifetime; Sigstore extensions 57264.1.* NON-critical; signed by the intermediate with its
curve's hash (P-384 -> SHA-384). No certificate is issued if the CA chain does not cover
the whole validity period, or if the CT log does not return a valid SCT.

Nothing here knows about HTTP; errors are ``SigstackError`` subclasses. The service owns
its CT submitter: :meth:`FulcioService.aclose` closes it (the Fulcio app calls it on
shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstack.core.clock import Clock, utcnow, whole_seconds
from sigstack.core.encoding import b64decode
from sigstack.core.errors import (
    ConfigError,
    InvalidRequest,
    SigstackError,
    Unavailable,
    UpstreamError,
    VerificationError,
)
from sigstack.core.keys import (
    PrivateKey,
    PublicKey,
    load_pem_public_key,
    load_spki,
    require_supported,
    spki_der,
    verify_signature,
)
from sigstack.core.pki import (
    authority_key_identifier,
    cert_der,
    cert_pem,
    check_issued_by,
    digital_signature_usage,
    pem_chain,
    random_serial,
    signing_hash,
    subject_key_identifier,
)
from sigstack.core.sct import (
    PRECERT_POISON_OID,
    SignedCertificateTimestamp,
    sct_list_extension,
    tbs_without_extension,
)
from sigstack.services.fulcio.config import FulcioConfig
from sigstack.services.fulcio.ctclient import CTSubmitter
from sigstack.services.fulcio.identity import Principal, principal_from_claims
from sigstack.services.fulcio.oidc import TokenVerifier

log = logging.getLogger("sigstack.fulcio")

MIN_RSA_EXPONENT = 65537


@dataclass(frozen=True)
class IssuedCertificate:
    """A final certificate with its embedded SCT and the chain up to the root."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    sct: SignedCertificateTimestamp

    def pem_chain(self) -> list[str]:
        """PEM strings, leaf first, root last (the ``chain.certificates`` of the API)."""
        return [cert_pem(self.certificate), *(cert_pem(c) for c in self.chain)]


def _check_leaf_key(key: object) -> PublicKey:
    """The key, if Fulcio certifies keys of its type and strength; else ``InvalidRequest``."""
    try:
        supported = require_supported(key)
    except VerificationError as exc:
        raise InvalidRequest(
            f"the public key is not supported: {exc.message} "
            "(use ECDSA P-256/P-384/P-521, Ed25519 or RSA 2048-4096)"
        ) from exc
    if isinstance(supported, rsa.RSAPublicKey):
        e = supported.public_numbers().e
        if e < MIN_RSA_EXPONENT or e % 2 == 0:
            raise InvalidRequest("the RSA public exponent is weak (use 65537)")
    return supported


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM (or DER) CSR, check its key and its self-signature (proof of possession)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise InvalidRequest("the certificate signing request could not be parsed") from exc
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidRequest("the CSR's public key is of an unsupported type") from exc
    _check_leaf_key(key)
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise VerificationError("the CSR's signature algorithm is not supported") from exc
    if algorithm is not None and not isinstance(
        algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512
    ):
        raise VerificationError(
            f"the CSR is signed with {algorithm.name}; sign it with SHA-256 or stronger"
        )
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError("the CSR's signature algorithm is not supported") from exc
    if not valid:
        raise VerificationError(
            "the CSR's self-signature does not verify: it must be signed by the key it carries"
        )
    return csr


def load_public_key(content: bytes | str) -> PublicKey:
    """Parse a PEM SPKI (or base64 of a DER SPKI) and check its type and strength."""
    raw = content.encode("utf-8") if isinstance(content, str) else content
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = load_pem_public_key(raw)
        else:
            key = load_spki(b64decode(raw, what="the public key", error=VerificationError))
    except VerificationError as exc:
        raise InvalidRequest(
            f"the public key could not be parsed or is not supported ({exc.message}); "
            "send a PEM SubjectPublicKeyInfo of an ECDSA P-256/P-384/P-521, Ed25519 or "
            "RSA 2048-4096 key"
        ) from exc
    return _check_leaf_key(key)


class FulcioService:
    """The certificate authority: verifies identities, logs precertificates, issues certificates.

    ``intermediate_key`` signs; ``chain`` is ``[intermediate, ..., root]`` with the
    intermediate's public key matching ``intermediate_key``. ``ct`` logs precertificates,
    ``verifier`` checks tokens, ``clock`` gives the current time (UTC).
    """

    def __init__(
        self,
        config: FulcioConfig,
        intermediate_key: PrivateKey,
        chain: Sequence[x509.Certificate],
        ct: CTSubmitter,
        verifier: TokenVerifier,
        clock: Clock = utcnow,
    ) -> None:
        self._config = config
        self._key = intermediate_key
        self._chain = tuple(chain)
        self._ct = ct
        self._verifier = verifier
        self._clock = clock
        self._check_chain()
        algorithm = signing_hash(intermediate_key)
        if not isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
            raise ConfigError(f"fulcio CA chain: unexpected signing hash {algorithm.name}")
        self._hash: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 = algorithm
        self._chain_der = [cert_der(c) for c in self._chain]
        self._aki = authority_key_identifier(self._chain[0])

    @property
    def config(self) -> FulcioConfig:
        return self._config

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self._chain

    def _check_chain(self) -> None:
        where = "fulcio CA chain"
        if not self._chain:
            raise ConfigError(f"{where}: empty; pass [intermediate, ..., root]")
        issuing = self._chain[0]
        if not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{where}: the issuing key must be ECDSA (clients reject others)")
        if spki_der(self._key.public_key()) != spki_der(require_supported(issuing.public_key())):
            raise ConfigError(f"{where}: the issuing key does not match the first certificate")
        try:
            bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
            ku = issuing.extensions.get_extension_for_class(x509.KeyUsage).value
            issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound as exc:
            raise ConfigError(
                f"{where}: the issuing certificate lacks {exc.oid.dotted_string}"
            ) from exc
        if not bc.ca or not ku.key_cert_sign:
            raise ConfigError(f"{where}: the issuing certificate is not a CA (keyCertSign)")
        try:
            for child, parent in zip(self._chain, self._chain[1:], strict=False):
                check_issued_by(child, parent)
            check_issued_by(self._chain[-1], self._chain[-1])
        except VerificationError as exc:
            raise ConfigError(f"{where}: {exc.message}") from exc

    # --- issuance -------------------------------------------------------------------------

    async def issue_from_csr(self, token: str, csr_pem: bytes) -> IssuedCertificate:
        """Issue for the key in ``csr_pem``; the CSR's self-signature proves possession."""
        principal = await self._authenticate(token)
        csr = load_csr(csr_pem)
        return await self._issue(principal, require_supported(csr.public_key()))

    async def issue_from_public_key(
        self, token: str, public_key_pem: bytes | str, proof_of_possession: bytes
    ) -> IssuedCertificate:
        """Issue for ``public_key_pem``; ``proof_of_possession`` signs the email (else sub)."""
        principal = await self._authenticate(token)
        key = load_public_key(public_key_pem)
        try:
            verify_signature(key, proof_of_possession, principal.challenge.encode("utf-8"))
        except VerificationError as exc:
            raise VerificationError(
                f"the proof of possession is not a signature by the given key over the "
                f"token's {principal.challenge_claim} claim"
            ) from exc
        return await self._issue(principal, key)

    async def _authenticate(self, token: str) -> Principal:
        verified = await self._verifier.verify(token)
        return principal_from_claims(verified.issuer, verified.claims)

    def _validity(self) -> tuple[datetime, datetime]:
        not_before = whole_seconds(self._clock())
        not_after = not_before + self._config.cert_lifetime
        for cert in self._chain:
            if not_before < cert.not_valid_before_utc:
                raise Unavailable(
                    f"the CA certificate {cert.subject.rfc4514_string()!r} is not valid until "
                    f"{cert.not_valid_before_utc.isoformat()}"
                )
            if not_after > cert.not_valid_after_utc:
                raise Unavailable(
                    f"the CA certificate {cert.subject.rfc4514_string()!r} expires at "
                    f"{cert.not_valid_after_utc.isoformat()}, before a certificate issued now "
                    "would; rotate the Fulcio CA"
                )
        return not_before, not_after

    def _sign(
        self,
        public_key: PublicKey,
        serial: int,
        validity: tuple[datetime, datetime],
        principal: Principal,
        last: x509.ExtensionType,
        last_critical: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._chain[0].subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(digital_signature_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(subject_key_identifier(public_key), critical=False)
            .add_extension(self._aki, critical=False)
            .add_extension(x509.SubjectAlternativeName([principal.san]), critical=True)
        )
        for ext in principal.extensions:
            builder = builder.add_extension(ext, critical=False)
        builder = builder.add_extension(last, critical=last_critical)
        return builder.sign(self._key, self._hash)

    async def _issue(self, principal: Principal, public_key: PublicKey) -> IssuedCertificate:
        validity = self._validity()
        serial = random_serial()
        precert = self._sign(
            public_key, serial, validity, principal, x509.PrecertPoison(), last_critical=True
        )
        chain_der = [cert_der(precert), *self._chain_der]
        try:
            sct = await self._ct.add_pre_chain(chain_der)
        except SigstackError:
            raise
        except Exception as exc:
            log.exception("CT submission failed")
            raise UpstreamError("the CT log submission failed; no certificate was issued") from exc
        final = self._sign(
            public_key, serial, validity, principal, sct_list_extension([sct]), last_critical=False
        )
        if final.tbs_precertificate_bytes != tbs_without_extension(
            chain_der[0], PRECERT_POISON_OID
        ):
            # Would make every client reject the SCT: refuse rather than hand it out.
            raise SigstackError(
                "internal error: the final certificate does not match the logged precertificate"
            )
        log.info(
            "issued certificate serial=%x issuer=%s type=%s",
            serial,
            principal.issuer,
            principal.issuer_type,
        )
        return IssuedCertificate(certificate=final, chain=self._chain, sct=sct)

    # --- read endpoints -------------------------------------------------------------------

    def trust_bundle(self) -> dict[str, Any]:
        """``GET /api/v2/trustBundle``: the CA chains, PEM, issuing CA first."""
        return {"chains": [{"certificates": [cert_pem(c) for c in self._chain]}]}

    def configuration(self) -> dict[str, Any]:
        """``GET /api/v2/configuration``: the allowed issuers, in upstream's JSON shape."""
        issuers: list[dict[str, Any]] = []
        allow = self._config.issuers
        entries: list[tuple[str, str, Any]] = [
            ("issuerUrl", url, iss) for url, iss in sorted(allow.issuers.items())
        ] + [("wildcardIssuerUrl", p, m) for p, m in sorted(allow.meta_issuers.items())]
        for field, url, entry in entries:
            item: dict[str, Any] = {
                field: url,
                "audience": entry.client_id,
                "challengeClaim": "email" if entry.type == "email" else "sub",
                "issuerType": entry.type,
            }
            if entry.subject_domain:
                item["subjectDomain"] = entry.subject_domain
            if entry.skip_email_verification:
                item["skipEmailVerification"] = True
            issuers.append(item)
        return {"issuers": issuers}

    def root_cert_chain_pem(self) -> str:
        """``GET /api/v1/rootCert``: the CA chain as concatenated PEM, issuing CA first."""
        return pem_chain(self._chain)

    async def health(self) -> None:
        """Raise ``Unavailable`` unless a certificate could be issued right now."""
        self._validity()

    async def aclose(self) -> None:
        """Release the CT submitter's connections (if it holds any: ``aclose()``)."""
        close = getattr(self._ct, "aclose", None)
        if close is not None:
            await close()
