"""Configuration of the RFC 3161 timestamp authority; validated at construction.

A :class:`TSAConfig` that exists is one the TSA can serve with: every check below runs
in ``__post_init__`` and raises :class:`~sigstack.core.errors.ConfigError` naming what is
wrong. Nothing here depends on the current time (whether the signer certificate is valid
*now* is checked when a timestamp is issued, and by the health check), and nothing here
reads files: the stack (or an operator's own wiring) loads the key and chain and passes
them in (``docs/architecture.md`` rule 6).

What is enforced, and which client needs it (``interop.md`` section 7):

* The signer key is ECDSA on P-256, P-384 or P-521. sigstore-js maps only the
  ecdsa-with-SHA* signature OIDs, so Ed25519 and RSA signers are refused.
* The chain is ``[signer leaf, intermediates..., root]`` with at least two certificates:
  sigstore-python silently drops a timestamp whose trusted-root chain is shorter.
* The leaf's public key is the signer key's public key.
* The leaf is an end-entity certificate (not a CA; sigstore-go refuses a CA signer) whose
  ExtendedKeyUsage extension is CRITICAL and holds id-kp-timeStamping and nothing else
  (RFC 3161 section 2.3; Python, Go and OpenSSL enforce it). A KeyUsage, if present, must
  allow digitalSignature.
* Every link verifies (``core.pki.check_issued_by``), every issuer is a CA, the last
  certificate is self-signed, and an intermediate's EKU, if present, allows timeStamping
  (sigstore-go's EKU chaining rule).
* The policy OID is a well-formed dotted OID; the accuracy, if set, is positive; the body
  limit is positive.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstack.core.errors import ConfigError, VerificationError
from sigstack.core.keys import PrivateKey, key_details, spki_der
from sigstack.core.pki import check_issued_by, load_pem_chain

#: The policy upstream sigstore/timestamp-authority stamps by default.
DEFAULT_POLICY_OID = "1.3.6.1.4.1.57264.2"

#: Timestamp requests are a few hundred bytes; anything near this is abuse.
DEFAULT_BODY_LIMIT = 16 * 1024

#: genTime is issued in whole seconds (see ``service``), so the truth lies within a second.
DEFAULT_ACCURACY = dt.timedelta(seconds=1)

_SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_MAX_OID_ARCS = 128  # upstream refuses longer OIDs too


def check_policy_oid(oid: str, *, what: str = "policy OID") -> None:
    """Raise ``ConfigError`` unless ``oid`` is a dotted-decimal OBJECT IDENTIFIER."""
    if not isinstance(oid, str) or not _OID_RE.match(oid):
        raise ConfigError(f"{what} {oid!r} is not a dotted OID such as {DEFAULT_POLICY_OID}")
    arcs = oid.split(".")
    if len(arcs) > _MAX_OID_ARCS:
        raise ConfigError(f"{what} has {len(arcs)} arcs; at most {_MAX_OID_ARCS} are allowed")
    if arcs[0] in ("0", "1") and int(arcs[1]) > 39:
        raise ConfigError(f"{what} {oid!r}: the second arc must be below 40 under arc {arcs[0]}")


def _describe(cert: x509.Certificate, index: int) -> str:
    return f"certificate {index} ({cert.subject.rfc4514_string() or 'empty subject'})"


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _check_signer_key(key: object) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"TSA signer key is {type(key).__name__}; it must be ECDSA (P-256, P-384 or "
            "P-521) because sigstore-js only understands ecdsa-with-SHA* timestamp signatures"
        )
    if key.curve.name not in _SUPPORTED_CURVES:
        raise ConfigError(f"TSA signer key uses curve {key.curve.name}; use P-256, P-384 or P-521")
    return key


def _check_leaf(leaf: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    try:
        leaf_key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"TSA signer certificate has an unusable public key: {exc}") from exc
    try:
        key_details(leaf_key)
    except VerificationError as exc:
        raise ConfigError(f"TSA signer certificate: {exc.message}") from exc
    if spki_der(leaf_key) != spki_der(key.public_key()):  # type: ignore[arg-type]
        raise ConfigError(
            "the TSA signer certificate (first in the chain) does not certify the signer "
            "private key: pass the matching key, or the chain issued for it"
        )
    bc = _basic_constraints(leaf)
    if bc is not None and bc.ca:
        raise ConfigError(
            "the TSA signer certificate is a CA certificate; RFC 3161 needs an end-entity "
            "certificate (sigstore-go rejects CA signers)"
        )
    try:
        eku_ext = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as exc:
        raise ConfigError(
            "the TSA signer certificate has no ExtendedKeyUsage; RFC 3161 section 2.3 needs "
            "a critical EKU holding only id-kp-timeStamping"
        ) from exc
    if not eku_ext.critical:
        raise ConfigError(
            "the TSA signer certificate's ExtendedKeyUsage is not critical; RFC 3161 section "
            "2.3 requires it critical (sigstore-python, sigstore-go and OpenSSL refuse it)"
        )
    usages = list(eku_ext.value)
    if usages != [ExtendedKeyUsageOID.TIME_STAMPING]:
        names = ", ".join(u.dotted_string for u in usages) or "none"
        raise ConfigError(
            f"the TSA signer certificate's ExtendedKeyUsage must hold only id-kp-timeStamping "
            f"(1.3.6.1.5.5.7.3.8); it holds {names}"
        )
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        raise ConfigError("the TSA signer certificate's KeyUsage does not allow digitalSignature")


def _check_chain(chain: Sequence[x509.Certificate]) -> None:
    for index in range(len(chain) - 1):
        cert, issuer = chain[index], chain[index + 1]
        try:
            check_issued_by(cert, issuer)
        except VerificationError as exc:
            raise ConfigError(
                f"TSA chain is broken between {_describe(cert, index)} and "
                f"{_describe(issuer, index + 1)}: {exc.message}; order it leaf first, root last"
            ) from exc
        bc = _basic_constraints(issuer)
        if bc is None or not bc.ca:
            raise ConfigError(f"TSA chain {_describe(issuer, index + 1)} is not a CA certificate")
    for index in range(1, len(chain) - 1):
        try:
            eku = chain[index].extensions.get_extension_for_class(x509.ExtendedKeyUsage)
            ekus = list(eku.value)
        except x509.ExtensionNotFound:
            continue
        allowed = {ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
        if not allowed.intersection(ekus):
            raise ConfigError(
                f"TSA chain intermediate {_describe(chain[index], index)} has an "
                "ExtendedKeyUsage without timeStamping; sigstore-go would reject the chain"
            )
    root = chain[-1]
    try:
        check_issued_by(root, root)
    except VerificationError as exc:
        raise ConfigError(
            f"the last TSA chain {_describe(root, len(chain) - 1)} is not a self-signed root: "
            f"{exc.message}; end the chain with the root CA"
        ) from exc


@dataclass(frozen=True)
class TSAConfig:
    """Everything the timestamp authority needs; refuses to exist if unsafe.

    ``signer_key``: the TSA's ECDSA private key (never logged or echoed).
    ``cert_chain``: ``[signer leaf, intermediates..., root]``, at least two certificates;
    the same chain goes into the trusted root's ``timestampAuthorities[].certChain``.
    ``policy_oid``: the TSA policy stamped into every TSTInfo; a request naming another
    policy is rejected (``unacceptedPolicy``).
    ``accuracy``: the TSTInfo ``accuracy`` (default one second, as upstream), or None to omit.
    ``body_limit``: the largest request body accepted, in bytes.
    """

    signer_key: PrivateKey = field(repr=False)
    cert_chain: Sequence[x509.Certificate]
    policy_oid: str = DEFAULT_POLICY_OID
    accuracy: dt.timedelta | None = DEFAULT_ACCURACY
    body_limit: int = DEFAULT_BODY_LIMIT

    def __post_init__(self) -> None:
        chain = tuple(self.cert_chain)
        object.__setattr__(self, "cert_chain", chain)
        for index, cert in enumerate(chain):
            if not isinstance(cert, x509.Certificate):
                raise ConfigError(
                    f"TSA chain entry {index} is a {type(cert).__name__}, not a certificate"
                )
        if len(chain) < 2:
            raise ConfigError(
                f"the TSA chain holds {len(chain)} certificate(s); give the signer leaf, any "
                "intermediates and the root (sigstore-python ignores timestamps from a "
                "single-certificate chain)"
            )
        key = _check_signer_key(self.signer_key)
        _check_leaf(chain[0], key)
        _check_chain(chain)
        check_policy_oid(self.policy_oid)
        if self.accuracy is not None:
            if not isinstance(self.accuracy, dt.timedelta) or self.accuracy <= dt.timedelta(0):
                raise ConfigError("TSA accuracy must be a positive duration, or None to omit it")
            if self.accuracy % dt.timedelta(microseconds=1):
                raise ConfigError("TSA accuracy must be a whole number of microseconds")
        if (
            isinstance(self.body_limit, bool)
            or not isinstance(self.body_limit, int)
            or self.body_limit <= 0
        ):
            raise ConfigError(f"TSA body limit must be a positive integer, got {self.body_limit!r}")

    @property
    def signer_certificate(self) -> x509.Certificate:
        """The signing leaf: ``cert_chain[0]``."""
        return self.cert_chain[0]

    @classmethod
    def from_pem(
        cls,
        private_key_pem: bytes,
        chain_pem: bytes | str,
        *,
        passphrase: bytes | None = None,
        policy_oid: str = DEFAULT_POLICY_OID,
        accuracy: dt.timedelta | None = DEFAULT_ACCURACY,
        body_limit: int = DEFAULT_BODY_LIMIT,
    ) -> TSAConfig:
        """Build a config from a PEM (optionally encrypted PKCS#8) key and a PEM chain.

        For deployments that mount the key and chain as files or secrets. Errors never
        include key material or the passphrase.
        """
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=passphrase)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(
                "cannot load the TSA signer private key: it is not a PEM private key, or the "
                "passphrase is wrong or missing"
            ) from None
        try:
            chain = load_pem_chain(chain_pem, what="TSA certificate chain")
        except VerificationError as exc:
            raise ConfigError(exc.message) from exc
        return cls(
            signer_key=key,  # type: ignore[arg-type]  # checked in __post_init__
            cert_chain=tuple(chain),
            policy_oid=policy_oid,
            accuracy=accuracy,
            body_limit=body_limit,
        )
