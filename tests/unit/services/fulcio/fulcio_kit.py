"""Test kit for Fulcio tests: a real CA, a real (in-process) CT log, a real OIDC issuer key.

Nothing here is a stub that returns constants: the CT log signs SCTs with core.sct over
the entry it recomputes from the precertificate, tokens are signed JWTs, and the JWKS is
served through the verifier's injectable fetcher (no network).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.keys import PrivateKey, require_supported, spki_sha256
from sigstack.core.pki import build_intermediate_ca, build_root_ca, name
from sigstack.core.sct import (
    PRECERT_POISON_OID,
    SignedCertificateTimestamp,
    issuer_key_hash,
    precert_timestamped_entry,
    sign_sct,
    tbs_without_extension,
)
from sigstack.services.fulcio.config import (
    FulcioConfig,
    IssuerAllowList,
    MetaIssuer,
    OIDCIssuer,
)
from sigstack.services.fulcio.oidc import TokenVerifier
from sigstack.services.fulcio.service import FulcioService

T = TypeVar("T")

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ISSUER_URL = "https://issuer.example.com"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.example.com"
K8S_META = "https://oidc.eks.*.amazonaws.com/id/*"
K8S_ISSUER = "https://oidc.eks.us-west-2.amazonaws.com/id/B02C93B6A2D30341AD01E1B6D48164CB"
URI_ISSUER = "https://accounts.example.org"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion (no pytest-asyncio here)."""
    return asyncio.run(coro)


# (status, content type, body) for (method, path, request body)
Responder = Callable[[str, str, bytes], tuple[int, str, bytes]]


@dataclass
class Seen:
    """One request a LocalHTTPServer answered."""

    client_port: int  # the TCP connection it came on
    method: str
    path: str


class LocalHTTPServer:
    """A real HTTP/1.1 server (keep-alive) on 127.0.0.1 in a thread, recording requests.

    Also answers ``CONNECT`` (what a client sends to an HTTPS proxy), so it can stand in
    for a proxy that must, or must not, be used.
    """

    def __init__(self, respond: Responder) -> None:
        self.requests: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(Seen(self.client_address[1], self.command, self.path))
                status, media_type, payload = respond(self.command, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_CONNECT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextmanager
def local_server(respond: Responder) -> Iterator[LocalHTTPServer]:
    server = LocalHTTPServer(respond)
    try:
        yield server
    finally:
        server.close()


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def set_proxy_environment(monkeypatch: pytest.MonkeyPatch, proxy_url: str) -> None:
    """Point every proxy variable httpx reads at ``proxy_url``, with no exemptions."""
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)
    for variable in PROXY_VARIABLES[:3]:
        monkeypatch.setenv(variable, proxy_url)
        monkeypatch.setenv(variable.upper(), proxy_url)


def refusing_proxy() -> Responder:
    """A proxy that answers every request (and CONNECT) with 502."""
    return lambda method, path, body: (502, "text/plain", b"proxy says no")


class FakeClock:
    """A settable UTC clock."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class CA:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.intermediate, self.root]


def make_ca(now: datetime = NOW) -> CA:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = build_root_ca(
        root_key, name("sigstack test", "root"), now - timedelta(days=1), now + timedelta(days=3650)
    )
    key = ec.generate_private_key(ec.SECP384R1())
    intermediate = build_intermediate_ca(
        key.public_key(),
        name("sigstack test", "intermediate"),
        root,
        root_key,
        now - timedelta(days=1),
        now + timedelta(days=3650),
    )
    return CA(root_key, root, key, intermediate)


class LocalCTLog:
    """An in-process RFC 6962 log front end: checks the precert chain and signs a real SCT."""

    def __init__(self, clock: Callable[[], datetime], key: PrivateKey | None = None) -> None:
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.log_id = spki_sha256(self.key.public_key())
        self.clock = clock
        self.submissions: list[list[bytes]] = []
        self.fail_with: Exception | None = None

    def sct_for(self, chain_der: list[bytes]) -> SignedCertificateTimestamp:
        precert = x509.load_der_x509_certificate(chain_der[0])
        poison = precert.extensions.get_extension_for_oid(PRECERT_POISON_OID)
        assert poison.critical, "a precertificate's poison must be critical"
        issuer = x509.load_der_x509_certificate(chain_der[1])
        precert.verify_directly_issued_by(issuer)
        ts = int(self.clock().timestamp() * 1000)
        entry = precert_timestamped_entry(
            ts,
            issuer_key_hash(require_supported(issuer.public_key())),
            tbs_without_extension(chain_der[0], PRECERT_POISON_OID),
        )
        return sign_sct(self.key, self.log_id, entry)

    async def add_pre_chain(self, chain_der: list[bytes]) -> SignedCertificateTimestamp:
        self.submissions.append(list(chain_der))
        if self.fail_with is not None:
            raise self.fail_with
        return self.sct_for(chain_der)


@dataclass
class Issuer:
    """An OIDC issuer: a signing key, its JWKS, and a token minter."""

    url: str
    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    alg: str = "ES256"
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    extra_keys: list[dict[str, Any]] = field(default_factory=list)

    def jwk(self) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(self.alg)
        data: dict[str, Any] = json.loads(algo.to_jwk(self.key.public_key()))
        data.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        return data

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk(), *self.extra_keys]}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.url, "jwks_uri": self.url.rstrip("/") + "/keys"}

    def token(
        self,
        clock: Callable[[], datetime],
        *,
        headers: dict[str, Any] | None = None,
        key: Any = None,
        alg: str | None = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(clock().timestamp())
        payload: dict[str, Any] = {
            "iss": self.url,
            "aud": "sigstore",
            "sub": "user-123",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        payload.update(claims)
        for name_ in drop:
            payload.pop(name_, None)
        hdr = {"kid": self.kid}
        hdr.update(headers or {})
        return jwt.encode(payload, key or self.key, algorithm=alg or self.alg, headers=hdr)


class FakeWeb:
    """The injectable fetcher: serves issuers' discovery documents and JWKS from memory."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.requests: list[str] = []

    def add(self, issuer: Issuer) -> None:
        self.docs[issuer.url.rstrip("/") + "/.well-known/openid-configuration"] = issuer.discovery
        self.docs[issuer.url.rstrip("/") + "/keys"] = issuer.jwks

    async def __call__(self, url: str, issuer: OIDCIssuer) -> Any:
        from sigstack.core.errors import UpstreamError

        self.requests.append(url)
        if url not in self.docs:
            raise UpstreamError(f"{url} answered HTTP 404")
        return self.docs[url]()


@dataclass
class Kit:
    clock: FakeClock
    ca: CA
    ct: LocalCTLog
    web: FakeWeb
    issuers: dict[str, Issuer]
    allow: IssuerAllowList

    def config(self, **kwargs: Any) -> FulcioConfig:
        return FulcioConfig(issuers=self.allow, **kwargs)

    def verifier(self, **kwargs: Any) -> TokenVerifier:
        return TokenVerifier.from_config(self.config(**kwargs), fetch=self.web, clock=self.clock)

    def service(self, **kwargs: Any) -> FulcioService:
        config = self.config(**kwargs)
        verifier = TokenVerifier.from_config(config, fetch=self.web, clock=self.clock)
        return FulcioService(config, self.ca.key, self.ca.chain, self.ct, verifier, self.clock)

    def email_token(self, **claims: Any) -> str:
        base: dict[str, Any] = {"email": "alice@example.com", "email_verified": True}
        base.update(claims)
        return self.issuers["email"].token(self.clock, **base)


def github_claims() -> dict[str, Any]:
    return {
        "sub": "repo:octo/hello:ref:refs/heads/main",
        "job_workflow_ref": "octo/hello/.github/workflows/release.yml@refs/heads/main",
        "job_workflow_sha": "a" * 40,
        "sha": "b" * 40,
        "event_name": "push",
        "repository": "octo/hello",
        "workflow": "Release",
        "ref": "refs/heads/main",
        "runner_environment": "github-hosted",
        "repository_id": "12345",
        "repository_owner": "octo",
        "repository_owner_id": "678",
        "repository_visibility": "public",
        "workflow_ref": "octo/hello/.github/workflows/release.yml@refs/heads/main",
        "workflow_sha": "c" * 40,
        "run_id": "999",
        "run_attempt": "1",
    }


def gitlab_claims() -> dict[str, Any]:
    return {
        "sub": "project_path:grp/proj:ref_type:branch:ref:main",
        "project_path": "grp/proj",
        "project_id": "42",
        "pipeline_source": "push",
        "pipeline_id": "7",
        "ci_config_ref_uri": "gitlab.example.com/grp/proj//.gitlab-ci.yml@refs/heads/main",
        "ci_config_sha": "d" * 40,
        "namespace_path": "grp",
        "namespace_id": "4",
        "job_id": "1001",
        "ref": "main",
        "ref_type": "branch",
        "sha": "e" * 40,
        "runner_environment": "gitlab-hosted",
        "runner_id": 55,
        "project_visibility": "private",
    }


def k8s_claims() -> dict[str, Any]:
    return {
        "sub": "system:serviceaccount:default:builder",
        "kubernetes.io": {
            "namespace": "default",
            "pod": {"name": "p", "uid": "u"},
            "serviceaccount": {"name": "builder", "uid": "v"},
        },
    }


_RSA_CACHE: list[Any] = []


def _rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not _RSA_CACHE:
        _RSA_CACHE.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _RSA_CACHE[0]


def _ed_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate()


def make_kit(clock: FakeClock, ca: CA) -> Kit:
    """Five issuers (one per type), a CA, a local CT log and the fake web serving the JWKS."""
    web = FakeWeb()
    issuers = {
        "email": Issuer(ISSUER_URL),
        "github": Issuer(GITHUB_ISSUER, alg="RS256", key=_rsa_key()),
        "gitlab": Issuer(GITLAB_ISSUER, alg="ES384", key=ec.generate_private_key(ec.SECP384R1())),
        "k8s": Issuer(K8S_ISSUER, alg="EdDSA", key=_ed_key()),
        "uri": Issuer(URI_ISSUER),
    }
    for iss in issuers.values():
        web.add(iss)
    allow = IssuerAllowList.of(
        [
            OIDCIssuer(issuer_url=ISSUER_URL, client_id="sigstore", type="email"),
            OIDCIssuer(issuer_url=GITHUB_ISSUER, client_id="sigstore", type="github-workflow"),
            OIDCIssuer(issuer_url=GITLAB_ISSUER, client_id="sigstore", type="gitlab-pipeline"),
            OIDCIssuer(
                issuer_url=URI_ISSUER,
                client_id="sigstore",
                type="uri",
                subject_domain="https://example.org",
            ),
        ],
        [MetaIssuer(pattern=K8S_META, client_id="sigstore", type="kubernetes")],
    )
    return Kit(clock, ca, LocalCTLog(clock), web, issuers, allow)
