"""HttpCTSubmitter: RFC 6962 add-pre-chain, and it never trusts what the log answers."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fulcio_kit import (
    CA,
    FakeClock,
    LocalCTLog,
    Responder,
    local_server,
    refusing_proxy,
    run,
    set_proxy_environment,
)

from sigstack.core.errors import UpstreamError
from sigstack.core.keys import spki_sha256
from sigstack.core.pki import cert_der, random_serial
from sigstack.core.sct import SignedCertificateTimestamp, sign_sct, x509_timestamped_entry
from sigstack.services.fulcio.ctclient import HttpCTSubmitter, verify_precert_sct

BASE = "https://ct.example.com/prefix"


def precert_chain(ca: CA, clock: FakeClock) -> list[bytes]:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = clock().replace(microsecond=0)
    precert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.intermediate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(minutes=10))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("a@example.com")]), critical=True
        )
        .add_extension(x509.PrecertPoison(), critical=True)
        .sign(ca.key, hashes.SHA384())
    )
    return [cert_der(precert), cert_der(ca.intermediate), cert_der(ca.root)]


def serve(log: LocalCTLog, seen: list[Any] | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url.path == "/prefix/ct/v1/add-pre-chain"
        body = json.loads(request.content)
        if seen is not None:
            seen.append(body)
        chain = [base64.b64decode(c) for c in body["chain"]]
        return httpx.Response(200, json=log.sct_for(chain).to_json())

    return httpx.MockTransport(handler)


def test_add_pre_chain_returns_a_verified_sct(clock: FakeClock, ca_material: CA) -> None:
    log = LocalCTLog(clock)
    seen: list[Any] = []
    chain = precert_chain(ca_material, clock)
    submitter = HttpCTSubmitter(BASE + "/", log.key.public_key(), transport=serve(log, seen))
    sct = run(submitter.add_pre_chain(chain))
    assert sct.log_id == log.log_id
    assert sct.timestamp_ms == int(clock().timestamp() * 1000)
    assert seen == [{"chain": [base64.b64encode(c).decode() for c in chain]}]
    verify_precert_sct(sct, chain, log.key.public_key())


def test_sct_from_another_log_key_is_refused(clock: FakeClock, ca_material: CA) -> None:
    impostor = LocalCTLog(clock)
    expected = ec.generate_private_key(ec.SECP256R1()).public_key()
    submitter = HttpCTSubmitter(BASE, expected, transport=serve(impostor))
    with pytest.raises(UpstreamError, match="does not verify") as err:
        run(submitter.add_pre_chain(precert_chain(ca_material, clock)))
    assert err.value.http_status == 502


def test_sct_over_another_entry_is_refused(clock: FakeClock, ca_material: CA) -> None:
    log = LocalCTLog(clock)

    def handler(request: httpx.Request) -> httpx.Response:
        # a real signature by the right key, but over an x509_entry of something else
        ts = int(clock().timestamp() * 1000)
        entry = x509_timestamped_entry(ts, cert_der(ca_material.root))
        return httpx.Response(200, json=sign_sct(log.key, log.log_id, entry).to_json())

    submitter = HttpCTSubmitter(
        BASE,
        log.key.public_key(),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(UpstreamError, match="does not verify"):
        run(submitter.add_pre_chain(precert_chain(ca_material, clock)))


def test_sct_with_shifted_timestamp_is_refused(clock: FakeClock, ca_material: CA) -> None:
    log = LocalCTLog(clock)

    def handler(request: httpx.Request) -> httpx.Response:
        chain = [base64.b64decode(c) for c in json.loads(request.content)["chain"]]
        good = log.sct_for(chain).to_json()
        good["timestamp"] += 1
        return httpx.Response(200, json=good)

    submitter = HttpCTSubmitter(
        BASE,
        log.key.public_key(),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(UpstreamError, match="does not verify"):
        run(submitter.add_pre_chain(precert_chain(ca_material, clock)))


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(400, json={"code": 400, "message": "chain rejected"}), "chain rejected"),
        (httpx.Response(503, text="overloaded"), "HTTP 503"),
        (httpx.Response(200, text="not json"), "did not answer JSON"),
        (httpx.Response(200, json={"sct_version": 1}), "malformed SCT"),
        (httpx.Response(200, json={"sct_version": 0, "id": "!!"}), "malformed SCT"),
        (httpx.Response(200, content=b"x" * 100_000), "too large"),
    ],
)
def test_log_failures_are_upstream_errors(
    clock: FakeClock, ca_material: CA, response: httpx.Response, match: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    submitter = HttpCTSubmitter(BASE, key, transport=httpx.MockTransport(lambda r: response))
    with pytest.raises(UpstreamError, match=match):
        run(submitter.add_pre_chain(precert_chain(ca_material, clock)))


def test_unreachable_log_is_an_upstream_error(clock: FakeClock, ca_material: CA) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    submitter = HttpCTSubmitter(BASE, key, transport=httpx.MockTransport(boom))
    with pytest.raises(UpstreamError, match="could not be reached"):
        run(submitter.add_pre_chain(precert_chain(ca_material, clock)))


def test_sct_json_roundtrip_matches_log_id(clock: FakeClock, ca_material: CA) -> None:
    log = LocalCTLog(clock)
    sct = log.sct_for(precert_chain(ca_material, clock))
    again = SignedCertificateTimestamp.from_json(sct.to_json())
    assert again == sct and again.log_id == spki_sha256(log.key.public_key())


# --- one client per submitter, no environment proxies ----------------------------------------


def ct_log_responder(log: LocalCTLog) -> Responder:
    def respond(method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        assert (method, path) == ("POST", "/ct/v1/add-pre-chain")
        chain = [base64.b64decode(c) for c in json.loads(body)["chain"]]
        return 200, "application/json", json.dumps(log.sct_for(chain).to_json()).encode()

    return respond


def test_one_connection_serves_every_submission(clock: FakeClock, ca_material: CA) -> None:
    log = LocalCTLog(clock)
    with local_server(ct_log_responder(log)) as ct:
        submitter = HttpCTSubmitter(ct.url, log.key.public_key())

        async def three() -> None:
            for _ in range(3):
                await submitter.add_pre_chain(precert_chain(ca_material, clock))
            await submitter.aclose()

        run(three())
    assert len(ct.requests) == 3
    # one pooled, kept-alive connection: not a new client (and handshake) per certificate
    assert len({seen.client_port for seen in ct.requests}) == 1


def test_environment_proxies_are_not_used_for_the_ct_log(
    clock: FakeClock, ca_material: CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = LocalCTLog(clock)
    with local_server(refusing_proxy()) as proxy, local_server(ct_log_responder(log)) as ct:
        set_proxy_environment(monkeypatch, proxy.url)

        async def control() -> None:
            # not vacuous: an ordinary client in this environment goes through the proxy
            async with httpx.AsyncClient() as client:
                assert (await client.get(ct.url + "/")).status_code == 502

        run(control())
        assert len(proxy.requests) == 1
        submitter = HttpCTSubmitter(ct.url, log.key.public_key())

        async def submit() -> SignedCertificateTimestamp:
            try:
                return await submitter.add_pre_chain(precert_chain(ca_material, clock))
            finally:
                await submitter.aclose()

        sct = run(submit())
    assert sct.log_id == log.log_id
    assert len(proxy.requests) == 1  # only the control request
    assert len(ct.requests) == 1


def test_aclose_releases_the_client_and_a_later_submission_reopens(
    clock: FakeClock, ca_material: CA
) -> None:
    log = LocalCTLog(clock)
    submitter = HttpCTSubmitter(BASE, log.key.public_key(), transport=serve(log))

    async def scenario() -> None:
        await submitter.aclose()  # closing an unused submitter is a no-op
        await submitter.add_pre_chain(precert_chain(ca_material, clock))
        await submitter.aclose()
        await submitter.aclose()  # idempotent
        await submitter.add_pre_chain(precert_chain(ca_material, clock))
        await submitter.aclose()

    run(scenario())


def test_a_submission_from_another_event_loop_gets_a_fresh_client(
    clock: FakeClock, ca_material: CA
) -> None:
    log = LocalCTLog(clock)
    with local_server(ct_log_responder(log)) as ct:
        submitter = HttpCTSubmitter(ct.url, log.key.public_key())
        # each asyncio.run is a new loop: the first loop's sockets must not be reused
        run(submitter.add_pre_chain(precert_chain(ca_material, clock)))
        run(submitter.add_pre_chain(precert_chain(ca_material, clock)))
        run(submitter.aclose())
    assert len(ct.requests) == 2
