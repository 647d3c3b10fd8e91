"""Three real `sigstack serve rekor` processes share one Rekor log in a real PostgreSQL.

Real hashedrekord entries go to all three at once; the test checks that exactly one
process is the sequencer at any time, that every acknowledged entry is in the log at
its index with its body, that every checkpoint anyone saw is consistent with the final
tree, then SIGKILLs the sequencer under load and checks that another process takes
over, that no acknowledged entry is lost, that nothing forked, and that fsck over the
database is clean. The killed process comes back as a follower and the new sequencer
is killed in turn, several times. The same processes serve the Rekor v1 API from its own
log in the database: every frontend finds, by hash, key and email, what was logged
through any other, and goes on doing so after the v1 sequencer is killed. Skipped
without PostgreSQL (see tests/conftest.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

pytest.importorskip(
    "psycopg",
    reason="PostgreSQL tests skipped: install the driver (pip install -e '.[test]'); see "
    "tests/conftest.py",
)

from sigstack.core import pki
from sigstack.core.encoding import canonical_json
from sigstack.core.keys import spki_der
from sigstack.core.merkle import CompactRange, leaf_hash, verify_consistency, verify_inclusion
from sigstack.core.note import NoteVerifier, open_note, parse_checkpoint
from sigstack.core.tiles import TILE_WIDTH, bundle_for, decode_bundle
from sigstack.log.fsck import fsck, storage_reader
from sigstack.log.postgres import PostgresStorage
from sigstack.ops.bench.entries import EntryPool
from sigstack.ops.bench.procs import free_ports
from sigstack.ops.serve import READY_LINE, ROLE_LINE, V1_LOG_SUFFIX, V1_ROLE_LINE
from sigstack.stack import bootstrap
from sigstack.stack.state import StateDir

pytestmark = pytest.mark.e2e

WAIT = 120.0  # hang guards, never performance assertions
KILL_ROUNDS = 3


@dataclass
class Frontend:
    """One `sigstack serve rekor` process and what it printed."""

    name: str
    port: int
    args: list[str]
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self.args, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if READY_LINE in line:
                    self.ready.set()

        threading.Thread(target=pump, daemon=True).start()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while not self.ready.wait(0.05):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n" + "\n".join(self.lines))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terms(self, role_line: str = ROLE_LINE) -> list[int]:
        """Lease terms this process announced becoming the sequencer in (of the v2 log,
        or of the log whose role lines start with ``role_line``)."""
        prefix = f"{role_line} sequencer (lease term "
        return [
            int(line[len(prefix) :].rstrip(")")) for line in self.lines if line.startswith(prefix)
        ]

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


class Observer:
    """Samples every live frontend's /healthz and checkpoint, and checks the role rule."""

    def __init__(self, frontends: list[Frontend]) -> None:
        self.frontends = frontends
        self.checkpoints: set[bytes] = set()
        self.rounds = 0
        self.violations: list[str] = []
        self.sequencers: list[str] = []  # the sequencer seen in each round that had one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as client:
            while not self._stop.wait(0.02):
                roles = {}
                for f in self.frontends:
                    if not f.alive:
                        continue
                    try:
                        roles[f.name] = client.get(f"{f.url}/healthz").json().get("role")
                        resp = client.get(f"{f.url}/api/v2/checkpoint")
                        if resp.status_code == 200:
                            self.checkpoints.add(resp.content)
                    except httpx.HTTPError:
                        continue  # a process being killed
                sequencers = [name for name, role in roles.items() if role == "sequencer"]
                if len(sequencers) > 1:
                    self.violations.append(f"round {self.rounds}: {roles}")
                if sequencers:
                    self.sequencers.append(sequencers[0])
                self.rounds += 1

    def __enter__(self) -> Observer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


class Load:
    """Writer threads posting distinct, real hashedrekord entries to live frontends."""

    def __init__(self, frontends: list[Frontend], pool: EntryPool, writers_per_frontend: int):
        self.frontends = frontends
        self.pool = pool
        self.pool_lock = threading.Lock()
        self.acked: list[tuple[bytes, dict[str, Any]]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(f,), daemon=True)
            for f in frontends
            for _ in range(writers_per_frontend)
        ]

    def _write(self, frontend: Frontend) -> None:
        with httpx.Client(timeout=60, trust_env=False) as client:
            while not self._stop.is_set() and frontend.alive:
                with self.pool_lock:
                    body = self.pool.next()
                if body is None:
                    return
                try:
                    resp = client.post(
                        f"{frontend.url}/api/v2/log/entries",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError:
                    self.failures += 1
                    continue
                if resp.status_code == 201:
                    self.acked.append((body, resp.json()))
                else:
                    self.failures += 1

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def restart(self, frontend: Frontend, writers: int = 4) -> None:
        """New writers for a frontend that came back (its old ones ended with it)."""
        for _ in range(writers):
            thread = threading.Thread(target=self._write, args=(frontend,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def wait_acked(self, count: int) -> None:
        deadline = time.monotonic() + WAIT
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {count} acknowledged"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(WAIT)


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "stack"
    res = subprocess.run(
        [sys.executable, "-m", "sigstack", "init", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return data_dir


@pytest.fixture
def frontends(
    stack_dir: Path, postgres_dsn: str, postgres_log_name: str
) -> Iterator[list[Frontend]]:
    args = [
        sys.executable,
        "-m",
        "sigstack",
        "serve",
        "rekor",
        "--data-dir",
        str(stack_dir),
        "--log-storage",
        postgres_dsn,
        "--log-name",
        postgres_log_name,
    ]
    started = [Frontend(f"frontend-{i}", port, args) for i, port in enumerate(free_ports(3))]
    try:
        for f in started:  # all at once: they race to create the logs, one does each
            f.start()
        for f in started:
            f.wait_ready()
        yield started
    finally:
        for f in started:
            f.stop()
        v1_log = PostgresStorage(postgres_dsn, postgres_log_name + V1_LOG_SUFFIX)
        try:
            v1_log.destroy()  # the v1 log the frontends made beside the test's log
        finally:
            v1_log.close()


def _check_ack(body: bytes, answer: dict[str, Any], verifier: NoteVerifier) -> tuple[int, bytes]:
    """The acknowledged index and canonical body, after checking the proof and checkpoint."""
    canonical = base64.b64decode(answer["canonicalizedBody"])
    request = json.loads(body)["hashedRekordRequestV002"]
    logged = json.loads(canonical)["spec"]["hashedRekordV002"]
    assert logged["data"]["digest"] == request["digest"]
    proof = answer["inclusionProof"]
    text, _ = open_note(proof["checkpoint"]["envelope"].encode(), [verifier])
    cp = parse_checkpoint(text)
    index = int(answer["logIndex"])
    assert int(proof["treeSize"]) == cp.size and base64.b64decode(proof["rootHash"]) == cp.root_hash
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    verify_inclusion(leaf_hash(canonical), index, cp.size, hashes, cp.root_hash)
    return index, canonical


def _stored_entries(storage: PostgresStorage, size: int) -> list[bytes]:
    entries: list[bytes] = []
    for n in range(-(-size // TILE_WIDTH)):
        ref = bundle_for(n, size)
        data = storage.get(ref.path)
        assert data is not None, ref.path
        entries += decode_bundle(data, ref.width)
    return entries


def test_three_frontends_share_one_log_and_survive_the_sequencer_dying(
    frontends: list[Frontend], stack_dir: Path, postgres_dsn: str, postgres_log_name: str
) -> None:
    material = bootstrap.load(StateDir(stack_dir), None)
    verifier = material.rekor_signer().verifier()
    origin = material.log_origin("rekor")
    pool = EntryPool(6000)

    with Observer(frontends) as observer:
        # Exactly one of the three sequences.
        with httpx.Client(timeout=10, trust_env=False) as client:
            roles = [client.get(f"{f.url}/healthz").json()["role"] for f in frontends]
        assert sorted(roles) == ["follower", "follower", "sequencer"], roles
        sequencer = frontends[roles.index("sequencer")]

        # All three at once.
        load = Load(frontends, pool, writers_per_frontend=4).start()
        load.wait_acked(600)
        started = time.monotonic()
        before = len(load.acked)
        load.wait_acked(before + 300)
        rate = (len(load.acked) - before) / (time.monotonic() - started)

        # Kill the sequencer under load, several times; the killed one comes back.
        takeovers = []
        for _ in range(KILL_ROUNDS):
            assert sequencer.proc is not None
            last_term = max(sequencer.terms())
            sequencer.proc.kill()
            sequencer.proc.wait()
            killed_at = len(load.acked)
            others = [f for f in frontends if f is not sequencer]
            deadline = time.monotonic() + WAIT
            while not (takers := [f for f in others if f.terms() and max(f.terms()) > last_term]):
                assert time.monotonic() < deadline, "no survivor took over"
                time.sleep(0.02)
            assert len(takers) == 1, [f.lines for f in others]
            takeovers.append((sequencer.name, takers[0].name))
            load.wait_acked(killed_at + 200)  # the log goes on under the new sequencer
            sequencer.lines.clear()
            sequencer.ready.clear()
            sequencer.start()  # back, as a follower
            sequencer.wait_ready()
            load.restart(sequencer)
            sequencer = takers[0]
        load.wait_acked(len(load.acked) + 100)
        load.stop()
        print(f"\n3 frontends: {rate:.0f} acknowledged entries/s (informational)")

    # Exactly one sequencer at any time; the lease moved to one survivor each time.
    assert observer.violations == [], observer.violations
    assert observer.rounds > 10
    assert len(takeovers) == KILL_ROUNDS
    assert observer.sequencers[-1] == sequencer.name
    terms = sorted(t for f in frontends for t in f.terms())
    assert len(terms) == len(set(terms)), "two processes announced the same lease term"

    storage = PostgresStorage(postgres_dsn, postgres_log_name)
    try:
        note = storage.read_checkpoint()
        assert note is not None
        text, _ = open_note(note, [verifier])
        final = parse_checkpoint(text)
        entries = _stored_entries(storage, final.size)

        # Every acknowledged entry is at its index, with its body; none twice.
        indexes = []
        for body, answer in load.acked:
            index, canonical = _check_ack(body, answer, verifier)
            assert entries[index] == canonical
            indexes.append(index)
        assert len(set(indexes)) == len(indexes) >= 900 + KILL_ROUNDS * 200
        assert len(set(entries)) == len(entries)  # distinct requests are logged once each

        # No fork: every checkpoint anyone saw is a prefix of the final tree.
        seen = {a["inclusionProof"]["checkpoint"]["envelope"].encode() for _, a in load.acked}
        seen |= observer.checkpoints
        by_size: dict[int, bytes] = {}
        for raw in seen:
            t, _ = open_note(raw, [verifier])
            cp = parse_checkpoint(t)
            assert cp.origin == origin
            assert by_size.setdefault(cp.size, cp.root_hash) == cp.root_hash, "two roots, one size"
        rng = CompactRange()
        for size in range(final.size + 1):
            if size in by_size:
                assert rng.root() == by_size[size], f"checkpoint of size {size} is not a prefix"
            if size < final.size:
                rng.extend([leaf_hash(entries[size])])
        assert rng.root() == final.root_hash

        # fsck over the database: every tile and the root re-derived, the index checked.
        report = fsck(storage_reader(storage), [verifier], origin=origin, storage=storage)
        assert report.ok, report.problems
        assert report.size == final.size and report.index_checked
    finally:
        storage.close()
    for f in frontends:
        assert f.stop() == 0, "\n".join(f.lines)


# --- Rekor v1 ----------------------------------------------------------------------------------


def _v1_entry(email: str, artifact: bytes) -> tuple[bytes, str, str]:
    """A hashedrekord 0.0.1 entry signed with a certificate for ``email``:
    ``(request, artifact sha256 hex, base64 PEM certificate)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(pki.name("sigstack e2e", "throw-away issuer"))
        .public_key(key.public_key())
        .serial_number(pki.random_serial())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
    signature = base64.b64encode(key.sign(artifact, ec.ECDSA(hashes.SHA256()))).decode()
    digest = hashlib.sha256(artifact).hexdigest()
    spec = {
        "data": {"hash": {"algorithm": "sha256", "value": digest}},
        "signature": {"content": signature, "publicKey": {"content": cert_b64}},
    }
    body = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": spec}
    return json.dumps(body).encode(), digest, cert_b64


def _check_v1_answer(
    answer: dict[str, Any], material: bootstrap.Material
) -> tuple[str, int, int, bytes]:
    """Check an entry's SET and inclusion proof; ``(entryUUID, index, tree size, root)``."""
    ((entry_id, entry),) = answer.items()
    key = material.ecdsa("rekor-v1").public_key()
    assert entry["logID"] == hashlib.sha256(spki_der(key)).hexdigest()
    signed = {k: entry[k] for k in ("body", "integratedTime", "logID", "logIndex")}
    key.verify(
        base64.b64decode(entry["verification"]["signedEntryTimestamp"]),
        canonical_json(signed),
        ec.ECDSA(hashes.SHA256()),
    )
    proof = entry["verification"]["inclusionProof"]
    text, _ = open_note(proof["checkpoint"].encode(), [material.rekor_v1_signer().verifier()])
    cp = parse_checkpoint(text)
    assert cp.origin == material.log_origin("rekor-v1")
    assert (proof["treeSize"], proof["rootHash"]) == (cp.size, cp.root_hash.hex())
    leaf = leaf_hash(base64.b64decode(entry["body"]))
    assert entry_id.endswith(leaf.hex())
    hashes_ = [bytes.fromhex(h) for h in proof["hashes"]]
    verify_inclusion(leaf, entry["logIndex"], cp.size, hashes_, cp.root_hash)
    return entry_id, entry["logIndex"], cp.size, cp.root_hash


def test_every_frontend_serves_rekor_v1_and_its_search_from_the_database(
    frontends: list[Frontend], stack_dir: Path
) -> None:
    material = bootstrap.load(StateDir(stack_dir), None)
    with httpx.Client(timeout=30, trust_env=False) as client:

        def health() -> dict[str, dict[str, Any]]:
            return {f.name: client.get(f"{f.url}/healthz").json() for f in frontends if f.alive}

        roles = sorted(h["v1"]["role"] for h in health().values())
        assert roles == ["follower", "follower", "sequencer"], health()

        # Entries logged through different frontends, each answer verified.
        logged = []  # (entryUUID, email, digest, certificate)
        first: tuple[int, bytes] | None = None
        for i, f in enumerate(frontends):
            email = f"user{i}@example.com"
            body, digest, cert = _v1_entry(email, b"artifact %d" % i)
            resp = client.post(f"{f.url}/api/v1/log/entries", content=body)
            assert resp.status_code == 201, resp.text
            entry_id, _, size, root = _check_v1_answer(resp.json(), material)
            assert resp.headers["Location"] == f"/api/v1/log/entries/{entry_id}"
            first = first or (size, root)
            logged.append((entry_id, email, digest, cert, body))
        # A duplicate sent to another frontend is 409, naming the entry.
        resp = client.post(f"{frontends[1].url}/api/v1/log/entries", content=logged[0][4])
        assert resp.status_code == 409, resp.text
        assert resp.headers["Location"] == f"/api/v1/log/entries/{logged[0][0]}"

        def found_everywhere(entries: list[tuple[str, str, str, str, bytes]]) -> None:
            for f in (f for f in frontends if f.alive):
                for entry_id, email, digest, cert, _ in entries:
                    queries = [
                        {"email": email},
                        {"hash": f"sha256:{digest}"},
                        {"publicKey": {"format": "x509", "content": cert}},
                    ]
                    for query in queries:
                        resp = client.post(f"{f.url}/api/v1/index/retrieve", json=query)
                        assert resp.json() == [entry_id], (f.name, query, resp.text)
                    resp = client.get(f"{f.url}/api/v1/log/entries/{entry_id}")
                    assert resp.status_code == 200 and list(resp.json()) == [entry_id]
                    _, index, _, _ = _check_v1_answer(resp.json(), material)
                    resp = client.get(f"{f.url}/api/v1/log/entries", params={"logIndex": index})
                    assert list(resp.json()) == [entry_id]
                    resp = client.post(
                        f"{f.url}/api/v1/log/entries/retrieve/", json={"entryUUIDs": [entry_id]}
                    )
                    assert [list(e) for e in resp.json()] == [[entry_id]]

        found_everywhere(logged)

        # The tree: log info, the log key, a consistency proof from the first answer.
        pem = client.get(f"{frontends[2].url}/api/v1/log/publicKey").content
        assert serialization.load_pem_public_key(pem) == material.ecdsa("rekor-v1").public_key()
        info = client.get(f"{frontends[2].url}/api/v1/log").json()
        assert info["treeID"] == str(material.rekor_v1_tree_id())
        text, _ = open_note(
            info["signedTreeHead"].encode(), [material.rekor_v1_signer().verifier()]
        )
        assert parse_checkpoint(text).size == info["treeSize"] >= len(logged) + 1
        assert first is not None
        proof = client.get(
            f"{frontends[0].url}/api/v1/log/proof",
            params={"firstSize": first[0], "lastSize": info["treeSize"]},
        ).json()
        assert proof["rootHash"] == info["rootHash"]
        verify_consistency(
            first[0],
            info["treeSize"],
            first[1],
            bytes.fromhex(info["rootHash"]),
            [bytes.fromhex(h) for h in proof["hashes"]],
        )

        # Kill the v1 sequencer: another frontend takes the v1 log over, and everything
        # logged before and after is still found through every survivor.
        (sequencer,) = [f for f in frontends if health()[f.name]["v1"]["role"] == "sequencer"]
        last_term = max(sequencer.terms(V1_ROLE_LINE))
        assert sequencer.proc is not None
        sequencer.proc.kill()
        sequencer.proc.wait()
        survivors = [f for f in frontends if f.alive]
        deadline = time.monotonic() + WAIT
        while not [f for f in survivors if max(f.terms(V1_ROLE_LINE), default=0) > last_term]:
            assert time.monotonic() < deadline, "no survivor took the Rekor v1 log over"
            time.sleep(0.02)
        body, digest, cert = _v1_entry("late@example.com", b"after the takeover")
        resp = client.post(f"{survivors[0].url}/api/v1/log/entries", content=body)
        assert resp.status_code == 201, resp.text
        entry_id, _, _, _ = _check_v1_answer(resp.json(), material)
        found_everywhere([*logged, (entry_id, "late@example.com", digest, cert, body)])
