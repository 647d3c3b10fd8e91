"""`sigstack fsck`: check a stack's logs at rest, or a Rekor v2 or CT log over HTTP.

    sigstack fsck [--data-dir DIR] [--log rekor|ctlog|all] [--json]
    sigstack fsck --url URL --trusted-root FILE [--log rekor|ctlog] [--json]

At rest, the keys come from ``DIR/client/trust_config.json`` (public material: no
passphrase needed) and the logs' names from the manifest; the entry index is
checked too. Over HTTP, the log is read through its public read path (Rekor v2:
``URL/api/v2/checkpoint`` and ``/api/v2/tile/...``; CT: the static-ct-api
``URL/checkpoint``, ``/tile/...`` and ``/tile/data/...``) and its key is the one the
trusted root lists for that ``baseUrl``; the checkpoint's key ID must be the
trusted root's log ID. Either way every tile and the root are re-derived from the
entries (see :mod:`sigstack.log.fsck`). Exit status 0 when every log checked is
clean, 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from sigstack.core.encoding import b64decode
from sigstack.core.errors import ConfigError, StateError, VerificationError
from sigstack.core.keys import load_spki, spki_sha256
from sigstack.core.note import EcdsaNoteVerifier, Ed25519NoteVerifier, NoteVerifier, parse_note
from sigstack.core.tiles import encode_bundle
from sigstack.fsutil import read_file
from sigstack.log.fs import FilesystemStorage
from sigstack.log.fsck import FsckReport, Reader, fsck, http_reader, storage_reader
from sigstack.log.storage import CHECKPOINT_KEY, LogStorage
from sigstack.ops.fsck_options import HTTP_LOGS, LOGS
from sigstack.services.ctlog.sthnote import RFC6962NoteVerifier
from sigstack.services.ctlog.submission import merkle_leaf_from_tile_leaf, split_tile_leaves
from sigstack.services.rekor.v1 import leaf_of as rekor_v1_leaf_of
from sigstack.stack.config import Endpoints
from sigstack.stack.state import StateDir


@dataclass(frozen=True)
class Target:
    """One log to check: how to read it and what it must verify against."""

    name: str
    read: Reader
    verifier: NoteVerifier
    origin: str
    leaf_of: Callable[[bytes], bytes] | None
    storage: LogStorage | None
    where: str


def _trusted_root(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(read_file(path, what="trusted root"))
    except json.JSONDecodeError as exc:
        raise StateError(path, f"is not valid JSON: {exc}") from exc
    root = doc.get("trustedRoot", doc) if isinstance(doc, dict) else None
    if not isinstance(root, dict) or not isinstance(root.get("tlogs"), list):
        raise StateError(path, "is not a trusted root (no tlogs)")
    return root


def _log_entry(root: dict[str, Any], kind: str, url: str, source: str) -> tuple[Any, bytes]:
    """(public key, log ID) of the ``kind`` log whose baseUrl is ``url``."""
    section = "ctlogs" if kind == "ctlog" else "tlogs"
    for entry in root.get(section) or []:
        if str(entry.get("baseUrl", "")).rstrip("/") != url.rstrip("/"):
            continue
        details = entry["publicKey"]["keyDetails"]
        if (kind == "rekor") != (details == "PKIX_ED25519") and kind != "ctlog":
            continue  # Rekor v1 (ECDSA) and v2 (Ed25519) share a base URL
        key = load_spki(
            b64decode(entry["publicKey"]["rawBytes"], what="publicKey", error=ConfigError)
        )
        return key, b64decode(entry["logId"]["keyId"], what="logId", error=ConfigError)
    raise ConfigError(f"{source} lists no {kind} log with baseUrl {url}")


def _checkpoint_origin(read: Reader, where: str) -> str:
    note = read(CHECKPOINT_KEY)
    if note is None:
        raise VerificationError(f"{where} serves no checkpoint")
    text, _ = parse_note(note)
    return text.split("\n", 1)[0]


def _ct_http_reader(base: str, client: httpx.Client) -> Reader:
    """The static-ct-api read path, with data tiles turned back into entry bundles."""
    inner = http_reader(base, client)

    def read(path: str) -> bytes | None:
        if path.startswith("tile/entries/"):
            data = inner("tile/data/" + path.removeprefix("tile/entries/"))
            return None if data is None else encode_bundle(split_tile_leaves(data))
        return inner(path)

    return read


def _http_target(args: argparse.Namespace, client: httpx.Client) -> Target:
    if args.trusted_root is None:
        raise ConfigError("--url needs --trusted-root (where the log's key comes from)")
    if args.log not in (None, *HTTP_LOGS):
        raise ConfigError(f"--url checks {' or '.join(HTTP_LOGS)} (the logs with a tile read path)")
    kind = args.log or "rekor"
    root = _trusted_root(args.trusted_root)
    key, log_id = _log_entry(root, kind, args.url, str(args.trusted_root))
    if kind == "rekor":
        read = http_reader(args.url.rstrip("/") + "/api/v2", client)
        origin = _checkpoint_origin(read, args.url)
        verifier: NoteVerifier = Ed25519NoteVerifier(origin, key)
        if verifier.key_id != log_id:  # type: ignore[attr-defined]
            raise VerificationError(
                f"the checkpoint at {args.url} names {origin!r}, whose key ID is not the "
                "trusted root's log ID for this URL"
            )
        return Target("rekor", read, verifier, origin, None, None, args.url)
    read = _ct_http_reader(args.url, client)
    origin = _checkpoint_origin(read, args.url)
    if spki_sha256(key) != log_id:
        raise VerificationError(f"the trusted root's CT log ID for {args.url} is not its key's")
    return Target(
        "ctlog",
        read,
        RFC6962NoteVerifier(origin, key),
        origin,
        merkle_leaf_from_tile_leaf,
        None,
        args.url,
    )


def _rest_targets(args: argparse.Namespace) -> list[Target]:
    from sigstack.cli import default_data_dir

    state = StateDir(Path(args.data_dir or default_data_dir()).resolve())
    manifest = state.read_manifest()
    config_path = state.client_dir / "trust_config.json"
    root = _trusted_root(config_path)
    endpoints = Endpoints.load(state.stack_config_path)
    wanted = LOGS if args.log in (None, "all") else (args.log,)
    targets = []
    for name in wanted:
        if name not in manifest.logs:
            continue  # a log added by an upgrade that has not run yet
        origin = manifest.logs[name]["origin"]
        key, _ = _log_entry(root, name, endpoints.url(name.removesuffix("-v1")), str(config_path))
        storage = FilesystemStorage(state.log_dir(name))
        verifier: NoteVerifier
        leaf_of: Callable[[bytes], bytes] | None = None
        if name == "rekor":
            verifier = Ed25519NoteVerifier(origin, key)
        elif name == "rekor-v1":
            verifier = EcdsaNoteVerifier(origin.rpartition(" - ")[0], key)
            leaf_of = rekor_v1_leaf_of
        else:
            verifier = RFC6962NoteVerifier(origin, key)
            leaf_of = merkle_leaf_from_tile_leaf
        where = str(state.log_dir(name))
        targets.append(
            Target(name, storage_reader(storage), verifier, origin, leaf_of, storage, where)
        )
    return targets


def run_fsck(args: argparse.Namespace) -> int:
    """Check the selected logs; print a summary (or JSON); 0 if all are clean."""
    console = Console(stderr=True, highlight=False)
    reports: dict[str, FsckReport] = {}
    with httpx.Client(timeout=30.0, trust_env=args.url is not None) as client:
        targets = [_http_target(args, client)] if args.url else _rest_targets(args)
        for target in targets:
            with console.status(f"checking {target.name} at {target.where}") as status:

                def progress(
                    done: int, total: int, status: Any = status, name: str = target.name
                ) -> None:
                    if done % 65536 < 256 or done == total:
                        status.update(f"checking {name}: {done}/{total} entries")

                reports[target.name] = fsck(
                    target.read,
                    [target.verifier],
                    origin=target.origin,
                    leaf_of=target.leaf_of or (lambda record: record),
                    storage=target.storage,
                    progress=progress,
                )
    ok = all(r.ok for r in reports.values())
    if args.json:
        print(json.dumps({"ok": ok, "logs": {n: r.to_dict() for n, r in reports.items()}}))
    else:
        for name, report in reports.items():
            mark = "✓" if report.ok else "✗"
            console.print(
                f"{mark} {name} ({report.origin}): {report.size} entries, "
                f"{report.tiles_checked} tiles re-derived, root {report.root_hash.hex()[:16]}…"
                + (", index checked" if report.index_checked else "")
                + (
                    f" ({report.index_pending} newest entries not in it yet)"
                    if report.index_pending
                    else ""
                )
            )
            for problem in report.problems:
                console.print(f"    {problem}")
            if report.truncated:
                console.print("    (more problems not shown)")
    sys.stdout.flush()
    return 0 if ok else 1
