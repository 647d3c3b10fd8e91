"""`sigstack up`, `init` and `token`: the scaffolding end to end.

``up`` does, in order, and stops at the first problem with a message naming it:

1. lock the state directory (two stacks never share one);
2. bind every service's port (a busy port fails before anything starts);
3. create the state on first run, or load and verify it (``bootstrap.ensure``);
4. open the logs and the TUF repository, publish new TUF targets only if the
   trusted root or signing config changed (e.g. ports moved), renew near-expiry
   metadata;
5. start the services in dependency order, each gated on its health check:
   oidc, ctlog, fulcio (needs both), rekor, tsa, tuf;
6. write the client files and say where everything is;
7. serve until SIGINT/SIGTERM, renewing TUF metadata on schedule; then stop the
   services in reverse order and close the logs (pending entries are flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fcntl
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from starlette.types import ASGIApp

from sigstack import __version__
from sigstack.core.errors import InvalidRequest, StateError
from sigstack.fsutil import atomic_write, make_dirs
from sigstack.log.engine import TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.services.ctlog.api import create_app as ctlog_app
from sigstack.services.ctlog.service import CTLogService, open_ctlog
from sigstack.services.fulcio import (
    FulcioConfig,
    FulcioService,
    HttpCTSubmitter,
    IssuerAllowList,
    TokenVerifier,
    builtin_issuer,
)
from sigstack.services.fulcio import create_app as fulcio_app
from sigstack.services.oidc import OIDCConfig, OIDCIssuer
from sigstack.services.oidc import create_app as oidc_app
from sigstack.services.rekor.api import create_rekor_app
from sigstack.services.rekor.service import RekorService
from sigstack.services.tsa import TimestampAuthority, TSAConfig
from sigstack.services.tsa.api import create_app as tsa_app
from sigstack.services.tuf import TufRepository
from sigstack.services.tuf import create_app as tuf_app
from sigstack.stack import bootstrap, trust
from sigstack.stack.config import SERVICES, Endpoints
from sigstack.stack.state import StateDir, resolve_passphrase
from sigstack.stack.supervisor import Supervisor, bind_socket

log = logging.getLogger("sigstack.up")

ENV_TOKEN_LIFETIME = dt.timedelta(hours=1)
CI_IDENTITY = "ci@sigstack.local"  # the identity of the token in sigstack.env
ISSUERS_FILE = "fulcio-issuers.json"


@contextlib.contextmanager
def locked(state: StateDir) -> Iterator[None]:
    """Hold an exclusive lock on ``DIR/run/lock`` (released on exit, even on crash)."""
    make_dirs(state.run_dir, 0o755)
    path = state.run_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StateError(
                state.root, f"is in use by another sigstack process (pid {holder}); stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def resolve_endpoints(state: StateDir, args: argparse.Namespace) -> Endpoints:
    """Saved network settings (or defaults) with the flags given on this run applied."""
    saved = (
        Endpoints.load(state.stack_config_path)
        if state.stack_config_path.exists()
        else Endpoints.default()
    )
    ports = {s: getattr(args, f"{s}_port", None) for s in SERVICES}
    return saved.with_overrides(
        getattr(args, "host", None), getattr(args, "base_port", None), ports
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def oidc_issuer(material: bootstrap.Material, endpoints: Endpoints) -> OIDCIssuer:
    """The built-in issuer. Its token endpoint is only served on loopback stacks."""
    return OIDCIssuer(
        OIDCConfig(
            issuer_url=endpoints.url("oidc"),
            signing_key=material.ecdsa("oidc"),
            allow_token_endpoint=_is_loopback(endpoints.host),
        )
    )


def write_client_files(
    state: StateDir,
    endpoints: Endpoints,
    material: bootstrap.Material,
    repo: TufRepository,
    issuer: OIDCIssuer,
) -> None:
    """``client/root.json``, ``client/trust_config.json`` and ``client/sigstack.env``."""
    make_dirs(state.client_dir, 0o755)
    inputs = material.trust_inputs(endpoints)
    config = trust.client_trust_config(trust.trusted_root(inputs), trust.signing_config(inputs))
    _write_if_changed(state.client_dir / "root.json", repo.latest_root_bytes(), 0o644)
    _write_if_changed(state.client_dir / "trust_config.json", trust.dumps(config), 0o644)
    token = issuer.mint(email=CI_IDENTITY, lifetime=ENV_TOKEN_LIFETIME)
    atomic_write(
        state.client_dir / "sigstack.env", trust.env_file(endpoints, state.client_dir, token), 0o600
    )


def _write_if_changed(path: Path, data: bytes, mode: int) -> None:
    if not path.exists() or path.read_bytes() != data:
        atomic_write(path, data, mode)


def open_tuf(material: bootstrap.Material, endpoints: Endpoints) -> tuple[TufRepository, bool]:
    """Open the TUF repository, publish changed targets and renew what is near expiry."""
    repo = TufRepository.open(material.state.tuf_dir, material.tuf_keys())
    published = repo.publish(bootstrap.trust_targets(material, endpoints))
    repo.refresh()
    return repo, published


@dataclass
class Services:
    """The opened services of one stack, and their ASGI apps in start order."""

    oidc: OIDCIssuer
    ctlog: CTLogService
    rekor_log: TransparencyLog
    fulcio: FulcioService
    tsa: TimestampAuthority
    tuf: TufRepository
    apps: dict[str, ASGIApp]

    async def close(self) -> None:
        await self.ctlog.close()
        await asyncio.to_thread(self.rekor_log.close)


async def open_services(
    material: bootstrap.Material, endpoints: Endpoints, repo: TufRepository
) -> Services:
    """Wire every service from the verified material (logs are opened and checked here)."""
    state = material.state
    issuer = oidc_issuer(material, endpoints)

    ctlog = await open_ctlog(material.ctlog_config(), FilesystemStorage(state.log_dir("ctlog")))
    try:
        rekor_origin = material.log_origin("rekor")
        signer = material.rekor_signer()
        rekor_log = TransparencyLog(
            FilesystemStorage(state.log_dir("rekor")),
            signer,
            rekor_origin,
            verifier=signer.verifier(),
        )
        await asyncio.to_thread(rekor_log.open)
    except BaseException:
        await ctlog.close()
        raise
    rekor = RekorService(rekor_log, signer.verifier().key_id)

    issuers = IssuerAllowList.of([builtin_issuer(endpoints.url("oidc"))])
    extra = state.config_dir / ISSUERS_FILE
    if extra.exists():
        issuers = issuers.merged(IssuerAllowList.load(extra))
    fulcio_config = FulcioConfig(issuers=issuers)
    fulcio = FulcioService(
        fulcio_config,
        material.ecdsa("fulcio-intermediate"),
        material.fulcio_chain,
        HttpCTSubmitter(
            endpoints.url("ctlog"),
            material.ecdsa("ctlog").public_key(),
            timeout=fulcio_config.fetch_timeout,
        ),
        TokenVerifier.from_config(fulcio_config),
    )
    tsa = TimestampAuthority(
        TSAConfig(signer_key=material.ecdsa("tsa-signer"), cert_chain=material.tsa_chain)
    )
    apps: dict[str, ASGIApp] = {
        "oidc": oidc_app(issuer),
        "ctlog": ctlog_app(ctlog),
        "fulcio": fulcio_app(fulcio),
        "rekor": create_rekor_app(rekor),
        "tsa": tsa_app(tsa),
        "tuf": tuf_app(repo),
    }
    return Services(issuer, ctlog, rekor_log, fulcio, tsa, repo, apps)


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


async def run_up(args: argparse.Namespace) -> int:
    """``sigstack up`` (see the module docstring). Returns the exit status."""
    started = time.perf_counter()
    console = _console()
    state = StateDir(Path(args.data_dir).resolve())
    console.print(f"sigstack {__version__} · state in {state.root}")
    with locked(state):
        endpoints = resolve_endpoints(state, args)
        sockets = {}
        try:
            for service in SERVICES:
                sockets[service] = bind_socket(service, endpoints.host, endpoints.ports[service])
        except BaseException:
            for sock in sockets.values():
                sock.close()
            raise

        def report(step: str) -> None:
            console.print(f"  · {step}")

        passphrase = resolve_passphrase(getattr(args, "passphrase_file", None))
        material, created = await asyncio.to_thread(
            bootstrap.ensure, state, endpoints, passphrase, report=report
        )
        what = "created new" if created else "verified existing"
        counts = f"{len(material.keys)} keys, {len(material.certs)} certificates"
        console.print(f"✓ {what} trust material ({counts})")
        endpoints.save(state.stack_config_path)
        repo, published = await asyncio.to_thread(open_tuf, material, endpoints)
        if published and not created:
            console.print("✓ service URLs changed: published new TUF targets (keys unchanged)")
        services = await open_services(material, endpoints, repo)
        supervisor = Supervisor(access_log=getattr(args, "verbose", False))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        crashed: str | None = None
        try:
            for service in SERVICES:
                took = await supervisor.start(
                    service, services.apps[service], sockets.pop(service), endpoints.url(service)
                )
                console.print(f"✓ {service:<7} {endpoints.url(service)}  ({took * 1000:.0f} ms)")
            write_client_files(state, endpoints, material, repo, services.oidc)
            _print_ready(console, state, endpoints, time.perf_counter() - started)
            crashed = await _serve(stop, supervisor, repo, state)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for sock in sockets.values():
                sock.close()
            console.print("stopping…")
            await supervisor.stop()
            await services.close()
        if crashed:
            console.print(f"✗ {crashed} stopped unexpectedly; the stack was shut down")
            return 1
        console.print("stopped cleanly")
        return 0


async def _serve(
    stop: asyncio.Event, supervisor: Supervisor, repo: TufRepository, state: StateDir
) -> str | None:
    """Serve until asked to stop or a server dies; keep TUF metadata fresh meanwhile."""
    interval = repo.policy.refresh_interval.total_seconds()
    stop_task = asyncio.create_task(stop.wait())
    exit_task = asyncio.create_task(supervisor.wait_any_exit())
    try:
        while True:
            done, _ = await asyncio.wait(
                {stop_task, exit_task}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            if stop_task in done:
                return None
            if exit_task in done:
                return exit_task.result() or "a service"
            renewed = await asyncio.to_thread(repo.refresh)
            if renewed:
                log.info("renewed TUF metadata: %s", ", ".join(renewed))
            if "root" in renewed:
                _write_if_changed(state.client_dir / "root.json", repo.latest_root_bytes(), 0o644)
    finally:
        stop_task.cancel()
        exit_task.cancel()


def _print_ready(console: Console, state: StateDir, endpoints: Endpoints, seconds: float) -> None:
    table = Table(title="sigstack services", show_lines=False)
    table.add_column("service")
    table.add_column("URL")
    names = {
        "oidc": "OIDC issuer",
        "ctlog": "CT log",
        "fulcio": "Fulcio",
        "rekor": "Rekor v2",
        "tsa": "Timestamp authority",
        "tuf": "TUF repository",
    }
    for service in SERVICES:
        url = endpoints.tsa_url if service == "tsa" else endpoints.url(service)
        table.add_row(names[service], url)
    console.print(table)
    client = state.client_dir
    console.print(
        f"Client files in {client}: root.json (TUF root), trust_config.json, sigstack.env\n"
        f"Try:\n"
        f"  . {client / 'sigstack.env'}\n"
        f"  sigstore --instance $TUF_MIRROR trust-instance $SIGSTACK_TUF_ROOT\n"
        f"  sigstore --instance $TUF_MIRROR sign --identity-token $OIDC_TOKEN FILE\n"
        f"  sigstore --instance $TUF_MIRROR verify identity --cert-identity {CI_IDENTITY} "
        f"--cert-oidc-issuer $ISSUER_URL FILE"
    )
    console.print(f"sigstack is ready in {seconds:.2f}s. Press Ctrl-C to stop.")


def run_init(args: argparse.Namespace) -> int:
    """``sigstack init``: create the state if absent (else verify it), write client files."""
    console = _console()
    state = StateDir(Path(args.data_dir).resolve())
    with locked(state):
        endpoints = resolve_endpoints(state, args)
        material, created = bootstrap.ensure(
            state,
            endpoints,
            resolve_passphrase(args.passphrase_file),
            report=lambda step: console.print(f"  · {step}"),
        )
        endpoints.save(state.stack_config_path)
        repo, _ = open_tuf(material, endpoints)
        write_client_files(state, endpoints, material, repo, oidc_issuer(material, endpoints))
    console.print(("created" if created else "verified") + f" sigstack state in {state.root}")
    return 0


def run_token(args: argparse.Namespace) -> int:
    """``sigstack token``: print an ID token signed by the stack's built-in issuer."""
    state = StateDir(Path(args.data_dir).resolve())
    if not state.is_initialized():
        state.check_not_partial()
        raise StateError(state.manifest_path, "no sigstack state here yet; run `sigstack up` first")
    if not args.email and not args.subject:
        raise InvalidRequest("give --email (or --subject) for the token's identity")
    endpoints = resolve_endpoints(state, argparse.Namespace())
    material = bootstrap.load(state, resolve_passphrase(args.passphrase_file))
    kwargs: dict[str, Any] = {
        "email": args.email,
        "subject": args.subject,
        "audience": args.audience,
    }
    if args.lifetime is not None:
        kwargs["lifetime"] = dt.timedelta(seconds=args.lifetime)
    print(oidc_issuer(material, endpoints).mint(**kwargs))
    return 0
