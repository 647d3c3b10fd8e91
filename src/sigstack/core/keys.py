"""Public-key algorithms as Sigstore names them, and signature checks over them.

Sigstore's wire formats name a key with a ``PublicKeyDetails`` string
(``PKIX_ECDSA_P256_SHA_256``, ``PKIX_ED25519``...). This module maps keys to those
names, picks the matching hash, and verifies signatures. Every check raises
``VerificationError``; nothing returns a bool.

Supported: ECDSA P-256/P-384/P-521 (each with its curve's hash), Ed25519, and RSA
PKCS#1 v1.5 with SHA-256 for 2048/3072/4096-bit keys. RSA-PSS and smaller RSA keys
are refused.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from sigstack.core.errors import VerificationError

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

_EC_DETAILS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "secp256r1": ("PKIX_ECDSA_P256_SHA_256", hashes.SHA256),
    "secp384r1": ("PKIX_ECDSA_P384_SHA_384", hashes.SHA384),
    "secp521r1": ("PKIX_ECDSA_P521_SHA_512", hashes.SHA512),
}
_RSA_SIZES = (2048, 3072, 4096)

HASH_NAMES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA2_256": hashes.SHA256,
    "SHA2_384": hashes.SHA384,
    "SHA2_512": hashes.SHA512,
}


def spki_der(public_key: PublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of ``public_key``."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(public_key: PublicKey) -> bytes:
    """SHA-256 of the DER SPKI: the RFC 6962 log ID and the Rekor v1 log ID."""
    return hashlib.sha256(spki_der(public_key)).digest()


def load_spki(der: bytes) -> PublicKey:
    """Load a DER SPKI, refusing key types sigstack does not support."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"not a valid DER public key: {exc}") from exc
    return require_supported(key)


def load_pem_public_key(pem: bytes) -> PublicKey:
    """Load a PEM SPKI, refusing key types sigstack does not support."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"not a valid PEM public key: {exc}") from exc
    return require_supported(key)


def require_supported(key: object) -> PublicKey:
    """Return ``key`` if it is a supported public key type, else raise."""
    key_details(key)  # raises on unsupported types
    return key  # type: ignore[return-value]


def key_details(public_key: object) -> str:
    """The Sigstore ``PublicKeyDetails`` name of ``public_key``."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        entry = _EC_DETAILS.get(public_key.curve.name)
        if entry is None:
            raise VerificationError(f"unsupported elliptic curve {public_key.curve.name}")
        return entry[0]
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "PKIX_ED25519"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size not in _RSA_SIZES:
            raise VerificationError(
                f"unsupported RSA key size {public_key.key_size} (use 2048, 3072 or 4096)"
            )
        return f"PKIX_RSA_PKCS1V15_{public_key.key_size}_SHA256"
    raise VerificationError(f"unsupported public key type {type(public_key).__name__}")


def hash_for_key(public_key: object) -> hashes.HashAlgorithm | None:
    """The hash a signature by this key uses, or None for Ed25519 (pure EdDSA)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key_details(public_key)
        return _EC_DETAILS[public_key.curve.name][1]()
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return None
    if isinstance(public_key, rsa.RSAPublicKey):
        key_details(public_key)
        return hashes.SHA256()
    raise VerificationError(f"unsupported public key type {type(public_key).__name__}")


def check_key_details(public_key: PublicKey, claimed: str) -> None:
    """Raise unless ``claimed`` is the ``PublicKeyDetails`` name of ``public_key``."""
    actual = key_details(public_key)
    if claimed != actual:
        raise VerificationError(f"keyDetails {claimed!r} does not match the key ({actual})")


def verify_signature(public_key: PublicKey, signature: bytes, message: bytes) -> None:
    """Verify ``signature`` over ``message`` (hashed with the key's own hash)."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            algo = hash_for_key(public_key)
            assert algo is not None
            public_key.verify(signature, message, ec.ECDSA(algo))
        elif isinstance(public_key, rsa.RSAPublicKey):
            key_details(public_key)
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise VerificationError(f"unsupported public key type {type(public_key).__name__}")
    except InvalidSignature as exc:
        raise VerificationError("signature does not verify with the given key") from exc


def verify_prehashed(
    public_key: PublicKey, signature: bytes, digest: bytes, algorithm: hashes.HashAlgorithm
) -> None:
    """Verify ``signature`` over a message whose ``algorithm`` digest is ``digest``.

    Ed25519 cannot sign a digest on behalf of a message, so it is refused here.
    """
    if len(digest) != algorithm.digest_size:
        raise VerificationError(
            f"digest is {len(digest)} bytes; {algorithm.name} digests are {algorithm.digest_size}"
        )
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            key_details(public_key)
            public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(algorithm)))
        elif isinstance(public_key, rsa.RSAPublicKey):
            key_details(public_key)
            public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
        else:
            raise VerificationError(
                "Ed25519 keys cannot verify a prehashed digest; sign the artifact itself"
            )
    except InvalidSignature as exc:
        raise VerificationError("signature does not verify over the digest") from exc


def sign(private_key: PrivateKey, message: bytes) -> bytes:
    """Sign ``message`` with the key's natural scheme (ECDSA+curve hash, Ed25519, RSA PKCS#1)."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        algo = hash_for_key(private_key.public_key())
        assert algo is not None
        return private_key.sign(message, ec.ECDSA(algo))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    raise VerificationError(f"unsupported private key type {type(private_key).__name__}")
