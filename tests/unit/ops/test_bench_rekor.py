"""The Rekor load generator: answers it parses, pushback it honours."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from sigstack.core.errors import InvalidRequest, UpstreamError
from sigstack.ops.bench.entries import EntryPool
from sigstack.ops.bench.rekor import LoadConfig, LoadGenerator, parse_ack


def _answer(index: int) -> bytes:
    return json.dumps(
        {
            "logIndex": str(index),
            "canonicalizedBody": base64.b64encode(b"body").decode(),
            "inclusionProof": {
                "logIndex": str(index),
                "treeSize": "9",
                "hashes": [base64.b64encode(bytes(32)).decode()],
                "checkpoint": {"envelope": "origin\n9\nroot\n\n- sig\n"},
            },
        }
    ).encode()


def test_parse_ack() -> None:
    ack = parse_ack(_answer(7))
    assert (ack.index, ack.body, ack.proof) == (7, b"body", (bytes(32),))
    assert ack.checkpoint.startswith(b"origin\n9\n")
    for broken in (b"{}", b"not json", b'{"logIndex": "x"}', _answer(1).replace(b"=", b"!")):
        with pytest.raises(UpstreamError):
            parse_ack(broken)


def test_config_is_checked() -> None:
    with pytest.raises(InvalidRequest):
        LoadConfig("http://127.0.0.1:1", rate=-1)
    with pytest.raises(InvalidRequest):
        LoadConfig("http://127.0.0.1:1", duration=0)
    with pytest.raises(InvalidRequest):
        LoadConfig("http://127.0.0.1:1", writers=0)


def test_writers_count_rejections_and_honour_retry_after() -> None:
    """A 503 with Retry-After is a rejection, and the writer pauses as told."""
    posts = 0

    async def shedding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET "):  # the final checkpoint probe
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                posts += 1
                body = b'{"code":503,"message":"busy"}'
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> dict[str, object]:
        server = await asyncio.start_server(shedding, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            config = LoadConfig(
                f"http://127.0.0.1:{port}", rate=0, duration=0.5, writers=2, readers=0
            )
            return await LoadGenerator(config, EntryPool(100, keys=1)).run()

    report = asyncio.run(run())
    # Without the pause two writers would send hundreds of requests in half a second.
    assert report["rejections"] == posts == 2
    assert report["errors"] == 0 and report["writes_acknowledged"] == 0
    assert report["tti_p50_ms"] is None and report["proof_failures"] == 0
