"""Fixtures for the TSA tests: an in-memory TSA PKI, a fixed clock, independent oracles.

Tests reach the helpers through the ``tsa_kit`` fixture, never by importing this module.

The PKI mirrors what ``sigstack.stack.init`` creates (docs/architecture.md): a P-384 root
CA and a P-256 signer with a critical timeStamping EKU, built with ``core.pki``. The
certificates are valid around the REAL current time, because ``openssl ts -verify`` checks
the chain at the time it runs; the service's clock is fixed (with sub-second precision,
so truncation to whole seconds is visible) a moment after that.

Oracles: rfc3161-client (the library sigstore-python verifies with, used as it uses it),
``openssl ts -verify`` (a separate implementation), and asn1crypto for structure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import core, tsp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from rfc3161_client import VerifierBuilder, decode_timestamp_response
from starlette.types import ASGIApp

from sigstack.core import pki
from sigstack.services.tsa.api import create_app
from sigstack.services.tsa.config import TSAConfig
from sigstack.services.tsa.service import TimestampAuthority

REAL_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
# Fixed service time: inside the validity below, with a fractional second to truncate.
CLOCK_NOW = REAL_NOW + dt.timedelta(seconds=7, microseconds=654321)
NOT_BEFORE = REAL_NOW - dt.timedelta(days=1)
NOT_AFTER = REAL_NOW + dt.timedelta(days=30)


class SteppingClock:
    """A settable clock: tests move it explicitly, nothing sleeps."""

    def __init__(self, start: dt.datetime = CLOCK_NOW) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


class ASGIClient:
    """A synchronous client over ``httpx.ASGITransport``: the app in-process, no sockets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://tsa.test") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@dataclass
class TSAKit:
    """The PKI, a service over it, and oracle helpers."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    tmp: Path
    clock: SteppingClock = field(default_factory=SteppingClock)

    # --- building -------------------------------------------------------------------

    def config(self, **overrides: Any) -> TSAConfig:
        kwargs: dict[str, Any] = {"signer_key": self.leaf_key, "cert_chain": (self.leaf, self.root)}
        kwargs.update(overrides)
        return TSAConfig(**kwargs)

    def service(self, **overrides: Any) -> TimestampAuthority:
        return TimestampAuthority(self.config(**overrides), clock=self.clock)

    def leaf_for(
        self,
        public_key: Any,
        *,
        issuer: x509.Certificate | None = None,
        issuer_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> x509.Certificate:
        return pki.build_tsa_certificate(
            public_key,
            pki.name("sigstack", "sigstack tsa signer"),
            issuer or self.root,
            issuer_key or self.root_key,
            NOT_BEFORE,
            NOT_AFTER,
        )

    def new_root(
        self, cn: str = "other root"
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP384R1())
        return key, pki.build_root_ca(key, pki.name("sigstack", cn), NOT_BEFORE, NOT_AFTER)

    def client(self, **overrides: Any) -> ASGIClient:
        return ASGIClient(create_app(self.service(**overrides)))

    # --- oracles --------------------------------------------------------------------

    def rfc3161_verify(
        self,
        response_der: bytes,
        message: bytes,
        *,
        leaf: x509.Certificate | None = None,
        root: x509.Certificate | None = None,
        intermediates: tuple[x509.Certificate, ...] = (),
    ) -> None:
        """Verify exactly as sigstore-python's ``_verify_signed_timestamp`` does."""
        builder = (
            VerifierBuilder()
            .tsa_certificate(leaf or self.leaf)
            .add_root_certificate(root or self.root)
        )
        for cert in intermediates:
            builder = builder.add_intermediate_certificate(cert)
        builder.build().verify_message(decode_timestamp_response(response_der), message)

    def openssl_verify(
        self,
        response_der: bytes,
        message: bytes,
        *,
        untrusted: tuple[x509.Certificate, ...] | None = None,
        root: x509.Certificate | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``openssl ts -verify -data`` (no check on the result: callers assert)."""
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is not on PATH: the OpenSSL oracle cannot run")
        data = self.tmp / "data.bin"
        resp = self.tmp / "resp.tsr"
        ca = self.tmp / "root.pem"
        chain = self.tmp / "untrusted.pem"
        data.write_bytes(message)
        resp.write_bytes(response_der)
        ca.write_text(pki.cert_pem(root or self.root))
        chain.write_text(pki.pem_chain(untrusted if untrusted is not None else (self.leaf,)))
        return subprocess.run(
            [
                openssl,
                "ts",
                "-verify",
                "-data",
                str(data),
                "-in",
                str(resp),
                "-CAfile",
                str(ca),
                "-untrusted",
                str(chain),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def openssl_text(self, response_der: bytes) -> str:
        """``openssl ts -reply -text`` of a response."""
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is not on PATH: the OpenSSL oracle cannot run")
        resp = self.tmp / "reply.tsr"
        resp.write_bytes(response_der)
        out = subprocess.run(
            [openssl, "ts", "-reply", "-in", str(resp), "-text"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    # --- decoding -------------------------------------------------------------------

    @staticmethod
    def status_info(response_der: bytes) -> dict[str, Any]:
        """The PKIStatusInfo of any TimeStampResp (granted or rejected), as a dict."""
        outer = core.load(response_der)
        info: dict[str, Any] = tsp.PKIStatusInfo.load(outer[0].dump()).native
        return info

    @staticmethod
    def token(response_der: bytes) -> tsp.TimeStampResp:
        """A granted response parsed by asn1crypto."""
        return tsp.TimeStampResp.load(response_der)


@pytest.fixture
def tsa_kit(tmp_path: Path) -> Iterator[TSAKit]:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = pki.build_root_ca(
        root_key, pki.name("sigstack", "sigstack tsa root"), NOT_BEFORE, NOT_AFTER
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = pki.build_tsa_certificate(
        leaf_key.public_key(),
        pki.name("sigstack", "sigstack tsa signer"),
        root,
        root_key,
        NOT_BEFORE,
        NOT_AFTER,
    )
    yield TSAKit(root_key=root_key, root=root, leaf_key=leaf_key, leaf=leaf, tmp=tmp_path)


@pytest.fixture
def der_request() -> Callable[..., bytes]:
    """Build a DER TimeStampReq with asn1crypto, including shapes real clients never send."""

    def build(
        digest: bytes,
        *,
        algorithm: str = "sha256",
        nonce: int | None = None,
        cert_req: bool = True,
        policy: str | None = None,
        version: int = 1,
        parameters: Any = None,
        extensions: list[dict[str, Any]] | None = None,
    ) -> bytes:
        hash_algorithm: dict[str, Any] = {"algorithm": algorithm}
        if parameters is not None:
            hash_algorithm["parameters"] = parameters
        fields: dict[str, Any] = {
            "version": version,
            "message_imprint": {"hash_algorithm": hash_algorithm, "hashed_message": digest},
            "cert_req": cert_req,
        }
        if nonce is not None:
            fields["nonce"] = nonce
        if policy is not None:
            fields["req_policy"] = policy
        if extensions is not None:
            fields["extensions"] = extensions
        der: bytes = tsp.TimeStampReq(fields).dump()
        return der

    return build
