"""Fixtures for the CT log tests: a Fulcio-shaped PKI built in memory, a fixed clock.

Tests reach the helpers through the ``kit`` fixture, never by importing this module.

The PKI mirrors what sigstack's Fulcio issues (docs/architecture.md): a P-384 root
(path length 1), a P-384 intermediate with a non-critical codeSigning EKU, and
P-256 leaves with an empty subject, a critical email SAN, digitalSignature,
codeSigning, SKI/AKI, and the CT poison (precertificates) or the SCT list (final
certificates) as the LAST extension, so both TBS encodings line up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from sigstack.core import pki
from sigstack.core.sct import SignedCertificateTimestamp, sct_list_extension
from sigstack.services.ctlog.config import CTLogConfig

NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
ORIGIN = "ctlog.sigstack.test"


class SteppingClock:
    """A settable clock: tests move it forwards or backwards explicitly."""

    def __init__(self, start: dt.datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, when: dt.datetime) -> None:
        self.now = when

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@dataclass
class FulcioPKI:
    """Root, intermediate and a leaf factory; everything valid around ``NOW``."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def leaf(
        self,
        *,
        last_extension: tuple[x509.ExtensionType, bool] | None = None,
        issuer: x509.Certificate | None = None,
        issuer_key: ec.EllipticCurvePrivateKey | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        serial: int = 0x5157AC,
        email: str = "alice@example.com",
    ) -> x509.Certificate:
        """A Fulcio-like leaf; ``last_extension`` is (value, critical) added last."""
        issuer = issuer or self.intermediate
        issuer_key = issuer_key or self.inter_key
        public = self.leaf_key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(issuer.subject)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(not_before or NOW - dt.timedelta(minutes=1))
            .not_valid_after(not_after or NOW + dt.timedelta(minutes=10))
            .add_extension(pki.digital_signature_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(pki.subject_key_identifier(public), critical=False)
            .add_extension(pki.authority_key_identifier(issuer), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1"),
                    b"https://oidc.sigstack.test",
                ),
                critical=False,
            )
        )
        if last_extension is not None:
            value, critical = last_extension
            builder = builder.add_extension(value, critical=critical)
        return builder.sign(issuer_key, hashes.SHA384())  # every test CA is P-384

    def precert(self, **kwargs: Any) -> x509.Certificate:
        """A precertificate: the leaf with a CRITICAL poison as its last extension."""
        return self.leaf(last_extension=(x509.PrecertPoison(), True), **kwargs)

    def final_certificate(
        self, scts: Sequence[SignedCertificateTimestamp], **kwargs: Any
    ) -> x509.Certificate:
        """The final certificate: same fields, the SCT list where the poison was."""
        return self.leaf(last_extension=(sct_list_extension(list(scts)), False), **kwargs)

    @property
    def chain_ders(self) -> list[bytes]:
        """[intermediate, root] as DER."""
        return [pki.cert_der(self.intermediate), pki.cert_der(self.root)]


def make_ca_pair(
    org: str = "sigstack-test",
) -> tuple[
    ec.EllipticCurvePrivateKey, x509.Certificate, ec.EllipticCurvePrivateKey, x509.Certificate
]:
    """A P-384 root and intermediate, as sigstack init creates them."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = pki.build_root_ca(
        root_key,
        pki.name(org, f"{org} root"),
        NOW - dt.timedelta(days=1),
        NOW + dt.timedelta(days=3650),
    )
    inter_key = ec.generate_private_key(ec.SECP384R1())
    intermediate = pki.build_intermediate_ca(
        inter_key.public_key(),
        pki.name(org, f"{org} intermediate"),
        root,
        root_key,
        NOW - dt.timedelta(days=1),
        NOW + dt.timedelta(days=3650),
    )
    return root_key, root, inter_key, intermediate


def build_cert(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A certificate with exactly ``extensions`` (for malformed-issuer tests)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(pki.random_serial())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer_key, hashes.SHA384())


@pytest.fixture(scope="session")
def fulcio_pki() -> FulcioPKI:
    root_key, root, inter_key, intermediate = make_ca_pair()
    return FulcioPKI(root_key, root, inter_key, intermediate)


@pytest.fixture(scope="session")
def log_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def config(fulcio_pki: FulcioPKI, log_key: ec.EllipticCurvePrivateKey) -> CTLogConfig:
    return CTLogConfig(origin=ORIGIN, private_key=log_key, roots=[fulcio_pki.root])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def storage() -> Any:
    """A fresh in-memory log storage (the engine's test backend)."""
    from sigstack.log.memory import MemoryStorage

    return MemoryStorage()


@pytest.fixture
async def service(config: CTLogConfig, storage: Any, clock: SteppingClock) -> AsyncIterator[Any]:
    """A CT log service over a new log in ``storage``, closed after the test."""
    from sigstack.services.ctlog.service import create_ctlog, open_ctlog

    create_ctlog(config, storage, clock=clock)
    svc = await open_ctlog(config, storage, clock=clock)
    yield svc
    await svc.close()


class Kit:
    """Helpers for the tests (fixtures cannot be imported across test directories)."""

    NOW = NOW
    ORIGIN = ORIGIN
    SteppingClock = SteppingClock
    FulcioPKI = FulcioPKI
    make_ca_pair = staticmethod(make_ca_pair)
    build_cert = staticmethod(build_cert)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
