"""`sigstack up`, `init` and `token`: the scaffolding end to end.

``up`` does, in order, and stops at the first problem with a message naming it:

1. take over SIGINT/SIGTERM (from here until everything is closed, a signal asks
   for a clean stop; a second one changes nothing) and lock the state directory
   (two stacks never share one);
2. check the host is loopback, bind every service's port (a busy port fails before
   anything starts);
3. create the state on first run, or load and verify it (``bootstrap.ensure``);
4. open the TUF repository, publish new targets only if the trusted root or signing
   config changed (ports moved), renew near-expiry metadata; build every service's
   configuration, then open the logs;
5. start the services in dependency order, each gated on its health check:
   oidc, ctlog, fulcio (calls the CT log), rekor, tsa, tuf; with
   ``--rekor-frontends N``, N more processes then serve Rekor's port beside this
   one (:mod:`sigstack.stack.frontend`);
6. write the client files and say where everything is;
7. serve until SIGINT/SIGTERM, renewing TUF metadata on schedule; then stop the
   services (dependents first) and close the logs (pending entries are flushed).

Every resource opened along the way (sockets, logs, HTTP clients, servers) has one
owner and is released on every path, including a failure halfway through.

The stack serves plain HTTP on loopback: the built-in OIDC issuer's http URL is only
trusted on loopback, and every service refuses requests whose Host header names
another host (a DNS-rebinding defence for the token endpoint and the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from starlette.types import ASGIApp

from sigstack import __version__
from sigstack.core.encoding import json_document
from sigstack.core.errors import ConfigError, Conflict, InvalidRequest, StateError
from sigstack.core.net import is_loopback_host
from sigstack.fsutil import atomic_write, make_dirs, open_lock
from sigstack.log.engine import TransparencyLog
from sigstack.log.fs import FilesystemStorage
from sigstack.runtime import tune_gc
from sigstack.services.ctlog import create_app as ctlog_app
from sigstack.services.ctlog import open_ctlog
from sigstack.services.fulcio import (
    FulcioConfig,
    FulcioService,
    HttpCTSubmitter,
    IssuerAllowList,
    TokenVerifier,
    builtin_issuer,
)
from sigstack.services.fulcio import create_app as fulcio_app
from sigstack.services.http import HostGuard
from sigstack.services.oidc import OIDCConfig, OIDCIssuer
from sigstack.services.oidc import create_app as oidc_app
from sigstack.services.rekor.api import create_rekor_app
from sigstack.services.rekor.service import RekorService
from sigstack.services.rekor.v1 import RekorV1Service
from sigstack.services.rekor.v1 import index_keys as rekor_v1_index_keys
from sigstack.services.tsa import TimestampAuthority, TSAConfig
from sigstack.services.tsa.api import create_app as tsa_app
from sigstack.services.tuf import TufRepository
from sigstack.services.tuf import create_app as tuf_app
from sigstack.stack import bootstrap, trust
from sigstack.stack.config import SERVICES, Endpoints
from sigstack.stack.frontend import FrontendPool, FrontendSpec
from sigstack.stack.state import StateDir, resolve_passphrase
from sigstack.stack.supervisor import Supervisor, bind_socket

log = logging.getLogger("sigstack.up")

ENV_TOKEN_LIFETIME = dt.timedelta(hours=1)
CI_IDENTITY = "ci@sigstack.local"  # the identity of the token in sigstack.env
ISSUERS_FILE = "fulcio-issuers.json"
# Which services call which over HTTP: they stop after their callers.
DEPENDS_ON: Mapping[str, tuple[str, ...]] = {"fulcio": ("ctlog",)}
NOFILE_TARGET = 65536
MAX_REKOR_FRONTENDS = 64


@contextlib.contextmanager
def locked(state: StateDir) -> Iterator[None]:
    """Hold an exclusive lock on ``DIR/run/lock`` (released on exit, even on crash)."""
    make_dirs(state.run_dir, 0o755)
    path = state.run_dir / "lock"
    try:
        fd = open_lock(path, blocking=False)
    except Conflict as exc:
        try:
            holder = path.read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise StateError(
            state.root, f"is in use by another sigstack process (pid {holder}); stop it first"
        ) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While active, SIGINT and SIGTERM set ``stop`` (repeats are harmless)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def raise_descriptor_limit() -> None:
    """Raise the soft open-files limit so a burst of connections cannot starve the stack."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_TARGET if hard == resource.RLIM_INFINITY else min(hard, NOFILE_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def resolve_endpoints(state: StateDir, args: argparse.Namespace) -> Endpoints:
    """Saved network settings (or defaults) with the flags given on this run applied.

    The host must be loopback: the stack serves plain HTTP and its built-in issuer
    is only trusted over http on loopback.
    """
    saved = (
        Endpoints.load(state.stack_config_path)
        if state.stack_config_path.exists()
        else Endpoints.default()
    )
    ports = {s: getattr(args, f"{s}_port", None) for s in SERVICES}
    endpoints = saved.with_overrides(
        getattr(args, "host", None), getattr(args, "base_port", None), ports
    )
    if not is_loopback_host(endpoints.host):
        raise ConfigError(
            f"host {endpoints.host!r} is not a loopback address: `sigstack up` serves plain "
            "HTTP for one machine (127.0.0.1, ::1 or localhost); serving a network needs "
            "TLS in front of each service"
        )
    return endpoints


def check_log_origins(material: bootstrap.Material, endpoints: Endpoints) -> None:
    """The host cannot change once the logs exist: their checkpoints name it."""
    origin = material.log_origin("rekor")
    if origin != endpoints.host:
        raise ConfigError(
            f"this stack's Rekor log was created for host {origin!r}; its checkpoints name "
            "that host, and clients compare it with the URL they use, so the host cannot "
            f"change to {endpoints.host!r} (ports can). Use --host {origin}"
        )


def oidc_issuer(material: bootstrap.Material, endpoints: Endpoints) -> OIDCIssuer:
    """The built-in issuer (its token endpoint is on: stacks only serve loopback)."""
    return OIDCIssuer(
        OIDCConfig(
            issuer_url=endpoints.url("oidc"),
            signing_key=material.ecdsa("oidc"),
            allow_token_endpoint=True,
        )
    )


def write_client_files(
    state: StateDir,
    endpoints: Endpoints,
    root: bytes,
    targets: Mapping[str, bytes],
    issuer: OIDCIssuer,
) -> None:
    """``client/root.json``, ``client/trust_config.json`` and ``client/sigstack.env``."""
    make_dirs(state.client_dir, 0o755)
    config = trust.client_trust_config(
        json.loads(targets[trust.TRUSTED_ROOT_TARGET]),
        json.loads(targets[trust.SIGNING_CONFIG_TARGET]),
    )
    _write_if_changed(state.client_dir / "root.json", root, 0o644)
    _write_if_changed(state.client_dir / "trust_config.json", json_document(config), 0o644)
    token = issuer.mint(email=CI_IDENTITY, lifetime=ENV_TOKEN_LIFETIME)
    env = trust.env_file(endpoints, state.client_dir, token)
    atomic_write(state.client_dir / "sigstack.env", env, 0o600)


def _write_if_changed(path: Path, data: bytes, mode: int) -> None:
    if not path.exists() or path.read_bytes() != data:
        atomic_write(path, data, mode)


@dataclass(frozen=True)
class TrustState:
    """The opened TUF repository and the targets it now publishes."""

    repo: TufRepository
    targets: dict[str, bytes]
    published: bool  # a new targets version was written on this run


def open_tuf(material: bootstrap.Material, endpoints: Endpoints) -> TrustState:
    """Open the TUF repository, publish changed targets and renew what is near expiry."""
    repo = TufRepository.open(material.state.tuf_dir, material.tuf_keys())
    targets = bootstrap.trust_targets(material, endpoints)
    published = repo.publish(targets)
    repo.refresh()
    return TrustState(repo, targets, published)


def allowed_hosts(endpoints: Endpoints, service: str) -> list[str]:
    """Host header values a service answers to: its loopback names with its port."""
    port = endpoints.ports[service]
    names = {endpoints.url_host, "127.0.0.1", "localhost", "[::1]"}
    return sorted(f"{name}:{port}" for name in names)


class Services:
    """The opened services of one stack, their ASGI apps in start order, and their closing."""

    def __init__(
        self,
        oidc: OIDCIssuer,
        apps: dict[str, ASGIApp],
        closers: contextlib.AsyncExitStack,
        rekor: RekorService,
        rekor_app: ASGIApp,
    ) -> None:
        self.oidc = oidc
        self.apps = apps
        self._closers = closers
        self.rekor = rekor
        self.rekor_app = rekor_app  # without its Host guard (a private listener adds its own)

    async def close(self) -> None:
        """Close the logs (flushing pending entries) and HTTP clients. Idempotent."""
        await self._closers.aclose()


async def open_services(
    material: bootstrap.Material, endpoints: Endpoints, repo: TufRepository
) -> Services:
    """Wire every service from the verified material.

    Configuration that can fail (the issuers file, the TSA chain...) is built before
    any log is opened; if opening fails halfway, whatever was opened is closed again.
    """
    state = material.state
    issuer = oidc_issuer(material, endpoints)
    issuers = IssuerAllowList.of([builtin_issuer(endpoints.url("oidc"), jwks=issuer.jwks())])
    extra = state.config_dir / ISSUERS_FILE
    if extra.exists():
        issuers = issuers.merged(IssuerAllowList.load(extra))
    fulcio_config = FulcioConfig(issuers=issuers)
    tsa = TimestampAuthority(
        TSAConfig(signer_key=material.ecdsa("tsa-signer"), cert_chain=material.tsa_chain)
    )
    ctlog_config = material.ctlog_config()
    rekor_signer = material.rekor_signer()
    for name in ("rekor", "rekor-v1"):
        moved = state.moved_marker(name)
        if moved.exists():
            raise StateError(
                moved,
                f"this stack's {name} log was moved to PostgreSQL and is served by `sigstack "
                "serve rekor --log-storage ...`; serving the old copy here would fork the log",
            )

    async with contextlib.AsyncExitStack() as opened:
        ctlog = await open_ctlog(ctlog_config, FilesystemStorage(state.log_dir("ctlog")))
        opened.push_async_callback(ctlog.close)
        rekor_log = TransparencyLog(
            FilesystemStorage(state.log_dir("rekor")),
            rekor_signer,
            material.log_origin("rekor"),
            verifier=rekor_signer.verifier(),
        )
        await asyncio.to_thread(rekor_log.open)
        opened.push_async_callback(asyncio.to_thread, rekor_log.close)
        rekor_v1_signer = material.rekor_v1_signer()
        rekor_v1_log = TransparencyLog(
            FilesystemStorage(state.log_dir("rekor-v1")),
            rekor_v1_signer,
            material.log_origin("rekor-v1"),
            verifier=rekor_v1_signer.verifier(),
            index_keys=rekor_v1_index_keys,
        )
        await asyncio.to_thread(rekor_v1_log.open)
        opened.push_async_callback(asyncio.to_thread, rekor_v1_log.close)
        rekor_v1 = RekorV1Service(
            rekor_v1_log, material.ecdsa("rekor-v1"), material.rekor_v1_tree_id()
        )
        # Fulcio's app closes its CT client when it shuts down (the client opens lazily).
        ct_submitter = HttpCTSubmitter(
            endpoints.url("ctlog"), ctlog_config.public_key, timeout=fulcio_config.fetch_timeout
        )
        fulcio = FulcioService(
            fulcio_config,
            material.ecdsa("fulcio-intermediate"),
            material.fulcio_chain,
            ct_submitter,
            TokenVerifier.from_config(fulcio_config),
        )
        rekor = RekorService(rekor_log, rekor_signer.verifier().key_id)
        apps: dict[str, ASGIApp] = {
            "oidc": oidc_app(issuer),
            "ctlog": ctlog_app(ctlog),
            "fulcio": fulcio_app(fulcio),
            "rekor": create_rekor_app(rekor, rekor_v1),
            "tsa": tsa_app(tsa),
            "tuf": tuf_app(repo),
        }
        guarded: dict[str, ASGIApp] = {
            name: HostGuard(app, allowed_hosts(endpoints, name)) for name, app in apps.items()
        }
        return Services(issuer, guarded, opened.pop_all(), rekor, apps["rekor"])


def rekor_frontends(args: argparse.Namespace) -> int:
    """How many frontend processes serve Rekor's port (``--rekor-frontends``, default 0)."""
    count = getattr(args, "rekor_frontends", None)
    if count is None:
        return 0
    if not 0 <= count <= MAX_REKOR_FRONTENDS:
        raise ConfigError(
            f"--rekor-frontends must be 0..{MAX_REKOR_FRONTENDS} processes, not {count}"
        )
    return int(count)


async def start_rekor_frontends(
    supervisor: Supervisor,
    services: Services,
    endpoints: Endpoints,
    frontends: int,
    verbose: bool,
) -> tuple[float, FrontendPool]:
    """Serve Rekor from ``frontends`` more processes (:mod:`sigstack.stack.frontend`).

    They share the public port with this process, and forward what they do not
    answer themselves to this process's Rekor app on a private listener on a free
    loopback port (forwarding to the public port could land on a frontend again).
    Returns the seconds it took and the started pool.
    """
    started = time.perf_counter()
    sock = bind_socket("rekor", endpoints.host, 0)
    port = sock.getsockname()[1]
    upstream = f"http://{endpoints.url_host}:{port}"
    allowed = allowed_hosts(endpoints, "rekor")
    private = HostGuard(services.rekor_app, [*allowed, f"{endpoints.url_host}:{port}"])
    await supervisor.start("rekor-private", private, sock, upstream)
    spec = FrontendSpec(
        host=endpoints.host,
        port=endpoints.ports["rekor"],
        upstream=upstream,
        log_id=services.rekor.log_id,
        allowed_hosts=tuple(allowed),
        verbose=verbose,
    )
    pool = FrontendPool(services.rekor.transparency_log, spec, frontends)
    try:
        await pool.start()
    except BaseException:
        await pool.stop()
        raise
    return time.perf_counter() - started, pool


def _close_all(sockets: Mapping[str, socket.socket]) -> None:
    for sock in sockets.values():
        sock.close()


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


async def run_up(args: argparse.Namespace) -> int:
    """``sigstack up`` (see the module docstring). Returns the exit status."""
    started = time.perf_counter()
    console = _console()
    state = StateDir(Path(args.data_dir).resolve())
    console.print(f"sigstack {__version__} · state in {state.root}")
    raise_descriptor_limit()
    stop = asyncio.Event()
    crashed: str | None = None
    with stop_on_signals(stop), locked(state):
        async with contextlib.AsyncExitStack() as resources:
            endpoints = resolve_endpoints(state, args)
            sockets: dict[str, socket.socket] = {}  # each is handed to its server when started
            resources.callback(_close_all, sockets)
            frontends = rekor_frontends(args)
            for service in SERVICES:
                # With frontends, Rekor's port is shared with them (SO_REUSEPORT).
                sockets[service] = bind_socket(
                    service,
                    endpoints.host,
                    endpoints.ports[service],
                    reuse_port=service == "rekor" and frontends > 0,
                )

            passphrase = resolve_passphrase(getattr(args, "passphrase_file", None))
            material, created = await asyncio.to_thread(
                bootstrap.ensure,
                state,
                endpoints,
                passphrase,
                report=lambda s: console.print(f"  · {s}"),
            )
            check_log_origins(material, endpoints)
            what = "created new" if created else "verified existing"
            counts = f"{len(material.keys)} keys, {len(material.certs)} certificates"
            console.print(f"✓ {what} trust material ({counts})")
            endpoints.save(state.stack_config_path)
            trusted = await asyncio.to_thread(open_tuf, material, endpoints)
            if trusted.published and not created:
                console.print("✓ service URLs changed: published new TUF targets (keys unchanged)")

            services = await open_services(material, endpoints, trusted.repo)
            resources.push_async_callback(services.close)
            supervisor = Supervisor(access_log=getattr(args, "verbose", False))
            resources.push_async_callback(supervisor.stop)
            for service in SERVICES:
                if stop.is_set():
                    break
                took = await supervisor.start(
                    service,
                    services.apps[service],
                    sockets.pop(service),
                    endpoints.url(service),
                    DEPENDS_ON.get(service, ()),
                )
                console.print(f"✓ {service:<7} {endpoints.url(service)}  ({took * 1000:.0f} ms)")
                if service == "rekor" and frontends:
                    verbose = getattr(args, "verbose", False)
                    took, pool = await start_rekor_frontends(
                        supervisor, services, endpoints, frontends, verbose
                    )
                    resources.push_async_callback(pool.stop)  # stopped before the servers
                    pids = ", ".join(str(pid) for pid in pool.pids)
                    console.print(
                        f"✓ {service:<7} and {frontends} frontend processes (pid {pids}, "
                        f"{took * 1000:.0f} ms)"
                    )
            else:
                root = trusted.repo.latest_root_bytes()
                write_client_files(state, endpoints, root, trusted.targets, services.oidc)
                _print_ready(console, state, endpoints, time.perf_counter() - started)
                tune_gc()
                crashed = await _serve(stop, supervisor, trusted.repo, state)
            console.print("stopping…")
    if crashed:
        console.print(f"✗ {crashed} stopped unexpectedly; the stack was shut down")
        return 1
    console.print("stopped cleanly")
    return 0


async def _serve(
    stop: asyncio.Event, supervisor: Supervisor, repo: TufRepository, state: StateDir
) -> str | None:
    """Serve until asked to stop or a server dies; keep TUF metadata fresh meanwhile.

    A failed renewal is logged and retried at the next interval: metadata lifetimes
    leave many intervals of margin, and stopping every service would help no one.
    """
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
            try:
                renewed = await asyncio.to_thread(repo.refresh)
            except Exception as exc:
                log.warning("renewing TUF metadata failed, will retry: %s", exc)
                continue
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
        check_log_origins(material, endpoints)
        endpoints.save(state.stack_config_path)
        trusted = open_tuf(material, endpoints)
        write_client_files(
            state,
            endpoints,
            trusted.repo.latest_root_bytes(),
            trusted.targets,
            oidc_issuer(material, endpoints),
        )
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
