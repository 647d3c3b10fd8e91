"""Configuration of the certificate-transparency log service.

:class:`CTLogConfig` holds everything the CT log needs, already loaded: its name
(the checkpoint origin), its signing key, the roots it accepts chains to, and its
limits. It never reads files or the state directory (architecture rule 6); the
stack loads the material and hands it over.

Guarantees (configuration fails closed; every problem raises ``ConfigError``):

* ``origin`` is a valid C2SP note key name and checkpoint origin: non-empty, no
  whitespace, no ``+``, no control characters, no URL scheme and no trailing slash
  (static-ct-api: "the submission prefix as a schema-less URL with no trailing
  slashes").
* ``private_key`` is an ECDSA P-256 private key, the only key Sigstore clients
  accept for a CT log (SHA-256 signatures, ``PKIX_ECDSA_P256_SHA_256``).
* ``roots`` is non-empty, holds no duplicates, and every root is an X.509 v3 CA
  certificate (BasicConstraints ``ca=True``) with an ECDSA or RSA key.
* The limits are positive and bounded.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sigstack.core.errors import ConfigError
from sigstack.core.keys import spki_der, spki_sha256
from sigstack.core.pki import cert_der

DEFAULT_MAX_CHAIN_LENGTH = 10
"""Certificates accepted in one ``add-chain``/``add-pre-chain`` request."""

DEFAULT_MAX_BODY_BYTES = 512 * 1024
"""Request body limit of the submission endpoints (512 KiB)."""

_MAX_CHAIN_LENGTH_CEILING = 64
_MIN_BODY_BYTES = 1024
_MAX_BODY_BYTES_CEILING = 16 * 1024 * 1024


def check_origin(origin: str) -> None:
    """Raise ``ConfigError`` unless ``origin`` is a usable log name.

    The name is both the checkpoint origin line and the note signature's key name,
    so it must satisfy both specifications (c2sp.org/signed-note and
    c2sp.org/static-ct-api).
    """
    if not isinstance(origin, str) or not origin:
        raise ConfigError("CT log origin must be a non-empty string such as 'ct.example.com'")
    if "://" in origin:
        raise ConfigError(
            f"CT log origin {origin!r} must be a schema-less URL (drop the 'https://')"
        )
    if origin.endswith("/"):
        raise ConfigError(f"CT log origin {origin!r} must not end with a slash")
    if "+" in origin:
        raise ConfigError(f"CT log origin {origin!r} must not contain '+' (note key names)")
    for ch in origin:
        if ch.isspace() or unicodedata.category(ch) in ("Zs", "Zl", "Zp", "Cc", "Cf"):
            raise ConfigError(
                f"CT log origin {origin!r} must not contain spaces or control characters"
            )


def origin_from_url(url: str) -> str:
    """The static-ct-api origin of a log whose submission prefix is ``url``.

    The URL without its scheme, query, fragment and trailing slashes:
    ``https://ct.example.com/2025/`` -> ``ct.example.com/2025``;
    ``http://127.0.0.1:8083`` -> ``127.0.0.1:8083``. Raises ``ConfigError`` if the
    result is not a valid origin.
    """
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"CT log URL {url!r} must be an absolute http(s) URL")
    if parsed.query or parsed.fragment or "@" in parsed.netloc:
        raise ConfigError(f"CT log URL {url!r} must not carry credentials, a query or a fragment")
    origin = (parsed.netloc + parsed.path).rstrip("/")
    check_origin(origin)
    return origin


def check_log_key(private_key: object) -> ec.EllipticCurvePrivateKey:
    """Return ``private_key`` if it is an ECDSA P-256 private key, else raise ``ConfigError``."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"CT log key must be an ECDSA P-256 private key, not {type(private_key).__name__}"
        )
    if private_key.curve.name != "secp256r1":
        raise ConfigError(
            f"CT log key must use curve P-256 (secp256r1), not {private_key.curve.name}: "
            "Sigstore clients verify SCTs with SHA-256 only"
        )
    return private_key


def check_root(index: int, root: object) -> x509.Certificate:
    """Return ``root`` if it is a CA certificate usable as a trust anchor, else raise."""
    if not isinstance(root, x509.Certificate):
        raise ConfigError(
            f"CT log root #{index} is a {type(root).__name__}, not an x509.Certificate"
        )
    subject = root.subject.rfc4514_string() or "<empty subject>"
    if root.version != x509.Version.v3:
        raise ConfigError(f"CT log root #{index} ({subject}) is not an X.509 v3 certificate")
    try:
        bc = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise ConfigError(
            f"CT log root #{index} ({subject}) has no BasicConstraints: it is not a CA"
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            f"CT log root #{index} ({subject}) has malformed extensions: {exc}"
        ) from exc
    if not bc.ca:
        raise ConfigError(
            f"CT log root #{index} ({subject}) is not a CA (BasicConstraints ca=False)"
        )
    key = root.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ConfigError(
            f"CT log root #{index} ({subject}) has a {type(key).__name__}; "
            "only ECDSA and RSA CAs are accepted"
        )
    return root


@dataclass(frozen=True)
class CTLogConfig:
    """Everything the CT log service needs, validated on construction.

    Attributes:
        origin: the log's name: its checkpoint origin line and note key name, the
            submission prefix of its public URL without scheme or trailing slash
            (``ctlog.example.com`` or ``example.com/ct``).
        private_key: the log's ECDSA P-256 signing key (SCTs and tree heads).
        roots: the trust anchors a submitted chain must end at (or be issued by).
        max_chain_length: most certificates one submission may carry, leaf included.
        max_body_bytes: request body limit of the submission endpoints.
    """

    origin: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    roots: Sequence[x509.Certificate]
    max_chain_length: int = DEFAULT_MAX_CHAIN_LENGTH
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        origin, private_key, roots = self.origin, self.private_key, self.roots
        max_chain_length, max_body_bytes = self.max_chain_length, self.max_body_bytes
        check_origin(origin)
        check_log_key(private_key)
        if isinstance(roots, x509.Certificate | str | bytes) or not isinstance(roots, Sequence):
            raise ConfigError("CT log roots must be a list of x509.Certificate")
        if not roots:
            raise ConfigError("CT log needs at least one accepted root certificate (fail closed)")
        checked = tuple(check_root(i, r) for i, r in enumerate(roots))
        seen: set[bytes] = set()
        for i, root in enumerate(checked):
            digest = hashlib.sha256(cert_der(root)).digest()
            if digest in seen:
                raise ConfigError(f"CT log root #{i} is listed twice")
            seen.add(digest)
        if (
            isinstance(max_chain_length, bool)
            or not isinstance(max_chain_length, int)
            or not 1 <= max_chain_length <= _MAX_CHAIN_LENGTH_CEILING
        ):
            raise ConfigError(
                f"max_chain_length must be an integer from 1 to {_MAX_CHAIN_LENGTH_CEILING}, "
                f"not {max_chain_length!r}"
            )
        if (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or not _MIN_BODY_BYTES <= max_body_bytes <= _MAX_BODY_BYTES_CEILING
        ):
            raise ConfigError(
                f"max_body_bytes must be an integer from {_MIN_BODY_BYTES} to "
                f"{_MAX_BODY_BYTES_CEILING}, not {max_body_bytes!r}"
            )
        object.__setattr__(self, "roots", checked)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The log's public key."""
        return self.private_key.public_key()

    @property
    def public_key_der(self) -> bytes:
        """DER SPKI of the log key (the trusted root's ``ctlogs[].publicKey.rawBytes``)."""
        return spki_der(self.public_key)

    @property
    def log_id(self) -> bytes:
        """RFC 6962 LogID: SHA-256 of the DER SPKI (``ctlogs[].logId.keyId``)."""
        return spki_sha256(self.public_key)
