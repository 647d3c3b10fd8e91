"""`sigstack up --rekor-frontends 1`: a second process answers Rekor's port.

Real processes on loopback: connections are traced to the process that accepted
them (through /proc), and every route answers the same whichever process holds
the connection; a frontend killed with SIGKILL is replaced; a clean stop ends both.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from sigstack.ops.bench.entries import CONTENT_TYPE, EntryPool
from sigstack.ops.bench.rekor import parse_ack
from sigstack.ops.bench.tlog import (
    LogKey,
    bundle_name,
    check_inclusion_proof,
    parse_signed_checkpoint,
)

from .conftest import StackProcess

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="traces sockets through /proc")

CONNECTIONS = 24


def _frontends(main: int) -> list[int]:
    """Child processes of ``main`` that are Rekor frontends."""
    children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    found = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"sigstack.stack.frontend" in cmdline:
            found.append(pid)
    return found


def _owner(conn: socket.socket, pids: list[int]) -> int:
    """The process holding the server side of the loopback connection ``conn``."""
    server_port = conn.getpeername()[1]
    client_port = conn.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            inode = fields[9]
    assert inode is not None, "the server side of the connection is not in /proc/net/tcp"
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no process of {pids} holds {target}")


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{conn.port}"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _wait_for_frontends(main: int, count: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _frontends(main)
        if len(found) == count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"expected {count} Rekor frontend processes, found {_frontends(main)}")


def _connections_to_each(port: int, pids: list[int]) -> dict[int, list[http.client.HTTPConnection]]:
    by_owner: dict[int, list[http.client.HTTPConnection]] = {pid: [] for pid in pids}
    for _ in range(CONNECTIONS):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert _get(conn, "/healthz")[0] == 200  # answered: accepted by its process
        assert conn.sock is not None
        by_owner[_owner(conn.sock, pids)].append(conn)
    return by_owner


def _post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request(
        "POST",
        "/api/v2/log/entries",
        body=body,
        headers={"Host": f"127.0.0.1:{conn.port}", "Content-Type": CONTENT_TYPE},
    )
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_a_frontend_process_serves_every_rekor_route_beside_the_main_one(
    stack_factory: StackProcess,
) -> None:
    stack = stack_factory
    stack.start(extra_args=("--rekor-frontends", "1"))
    assert stack.proc is not None
    main = stack.proc.pid
    frontends = _wait_for_frontends(main, 1)
    assert any("and 1 frontend processes" in line for line in stack.output)
    port = stack.ports["rekor"]
    key = LogKey.from_trust_config(
        stack.data_dir / "client" / "trust_config.json", stack.url("rekor")
    )
    pool = EntryPool(CONNECTIONS + 1)

    # SO_REUSEPORT spreads 24 connections over both processes (all on one: 2 in 2^24).
    processes = [main, *frontends]
    by_owner = _connections_to_each(port, processes)
    assert all(by_owner[p] for p in processes), {p: len(c) for p, c in by_owner.items()}

    for owner, conns in by_owner.items():
        for conn in conns:
            body = pool.next()
            assert body is not None
            status, answer = _post(conn, body)
            assert status == 201, (owner, answer[:300])
            ack = parse_ack(answer)
            check_inclusion_proof(
                ack.body, ack.index, ack.proof, parse_signed_checkpoint(ack.checkpoint, key)
            )
            # The read path, Rekor v1 and errors answer as the main process answers them.
            status, note = _get(conn, "/api/v2/checkpoint")
            assert status == 200 and parse_signed_checkpoint(note, key).size > ack.index
            status, v1 = _get(conn, "/api/v1/log")
            assert status == 200 and "treeSize" in json.loads(v1)
            status, missing = _get(conn, "/api/v2/" + bundle_name(999_999, 256))
            assert status == 404 and json.loads(missing)["code"] == 404
            status, refused = _post(conn, b'{"hashedRekordRequestV002": {}}')
            assert status == 400 and json.loads(refused)["code"] == 400
            conn.request("POST", "/api/v2/log/entries", body=b"{}", headers={"Host": "evil:1"})
            resp = conn.getresponse()
            assert resp.status == 400 and b"Host" in resp.read()

    # An identical entry answers the index it already has, whichever process gets it.
    indexes = [parse_ack(_post(by_owner[p][0], body)[1]).index for p in processes]
    assert indexes == [ack.index, ack.index]
    for conns in by_owner.values():
        for conn in conns:
            conn.close()

    # A frontend that dies is replaced, and the new one serves.
    os.kill(frontends[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        current = _frontends(main)
        if len(current) == 1 and frontends[0] not in current:
            break
        time.sleep(0.1)
    replacement = next(p for p in current if p not in frontends)
    by_owner = {}
    while time.monotonic() < deadline:
        try:
            by_owner = _connections_to_each(port, [main, *current])
        except AssertionError:  # a connection reached the replacement before it listened
            by_owner = {}
        if by_owner.get(replacement):
            break
        time.sleep(0.2)
    assert by_owner.get(replacement), "the replacement frontend never served"
    assert any("restarting in" in line for line in stack.output)
    for conns in by_owner.values():
        for conn in conns:
            conn.close()

    assert stack.stop() == 0
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in current) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in current), "a frontend outlived its stack"


def test_rekor_frontends_must_be_a_sane_count(stack_factory: StackProcess) -> None:
    stack = stack_factory
    with pytest.raises(AssertionError, match=r"--rekor-frontends must be 0\.\.64"):
        stack.start(extra_args=("--rekor-frontends", "65"))
