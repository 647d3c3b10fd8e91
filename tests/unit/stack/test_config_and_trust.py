"""Network settings, port binding errors and the trust documents clients parse."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sigstore.models import TrustedRoot as SigstoreTrustedRoot

from sigstack.core import note, pki
from sigstack.core.encoding import json_document
from sigstack.core.errors import ConfigError, StateError
from sigstack.core.keys import spki_der
from sigstack.stack import trust
from sigstack.stack.config import Endpoints
from sigstack.stack.supervisor import bind_socket


def test_default_ports_are_a_block_and_overrides_apply() -> None:
    ep = Endpoints.default(base_port=9000)
    assert sorted(ep.ports.values()) == list(range(9000, 9006))
    moved = ep.with_overrides(None, None, {"rekor": 9100})
    assert moved.ports["rekor"] == 9100 and moved.ports["tuf"] == 9000
    rebased = ep.with_overrides("localhost", 9500, {})
    assert rebased.url("tuf") == "http://localhost:9500"
    assert Endpoints.default("::1").url("tuf") == "http://[::1]:7700"
    assert ep.tsa_url == "http://127.0.0.1:9005/api/v1/timestamp"


@pytest.mark.parametrize("host", ["", "http://x", "a b", "x/y"])
def test_invalid_hosts_are_refused(host: str) -> None:
    with pytest.raises(ConfigError):
        Endpoints.default(host)


def test_two_services_on_one_port_are_refused() -> None:
    with pytest.raises(ConfigError, match="both configured on port"):
        Endpoints.default(base_port=9000).with_overrides(None, None, {"rekor": 9000})


def test_corrupt_network_settings_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    path.write_text('{"host": "127.0.0.1", "ports": {"tuf": "x"}}')
    with pytest.raises(StateError) as info:
        Endpoints.load(path)
    assert info.value.path == path
    Endpoints.default().save(path)
    assert Endpoints.load(path) == Endpoints.default()


def test_busy_port_is_a_clear_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"port {port}.*rekor.*--rekor-port"):
            bind_socket("rekor", "127.0.0.1", port)
    finally:
        holder.close()


def _inputs(endpoints: Endpoints) -> trust.TrustInputs:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    later = now + dt.timedelta(days=365)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    root = pki.build_root_ca(ca_key, pki.name("o", "root"), now, later)
    inter_key = ec.generate_private_key(ec.SECP384R1())
    inter = pki.build_intermediate_ca(
        inter_key.public_key(), pki.name("o", "inter"), root, ca_key, now, later
    )
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = pki.build_tsa_certificate(
        tsa_key.public_key(), pki.name("o", "tsa"), root, ca_key, now, later
    )
    return trust.TrustInputs(
        endpoints=endpoints,
        created=now,
        fulcio_chain=[inter, root],
        ctlog_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        rekor_key=ed25519.Ed25519PrivateKey.generate().public_key(),
        rekor_origin=endpoints.host,
        rekor_v1_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        rekor_v1_created=now,
        tsa_chain=[tsa, root],
    )


def test_trusted_root_is_complete_deterministic_and_client_parsable(tmp_path: Path) -> None:
    inputs = _inputs(Endpoints.default(base_port=9000))
    doc = trust.trusted_root(inputs)
    assert json_document(doc) == json_document(trust.trusted_root(inputs))
    rekor_id = base64.b64decode(doc["tlogs"][0]["logId"]["keyId"])
    assert rekor_id == note.key_id_ed25519("127.0.0.1", inputs.rekor_key)
    assert doc["tlogs"][0]["checkpointKeyId"] == doc["tlogs"][0]["logId"]
    assert (
        base64.b64decode(doc["ctlogs"][0]["logId"]["keyId"])
        == hashlib.sha256(spki_der(inputs.ctlog_key)).digest()
    )
    assert doc["timestampAuthorities"][0]["uri"].endswith("/api/v1/timestamp")
    assert all(
        "validFor" in ca for ca in doc["certificateAuthorities"] + doc["timestampAuthorities"]
    )
    path = tmp_path / "trusted_root.json"
    path.write_bytes(json_document(doc))
    parsed = SigstoreTrustedRoot.from_file(str(path))  # sigstore-python's own loader
    assert len(parsed.get_fulcio_certs()) == 2


def test_env_file_quotes_values_for_the_shell(tmp_path: Path) -> None:
    client = tmp_path / "a dir with spaces"
    text = trust.env_file(Endpoints.default(), client, "tok'en").decode()
    script = text + '\nprintf "%s|%s" "$OIDC_TOKEN" "$SIGSTACK_TUF_ROOT"\n'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == f"tok'en|{client / 'root.json'}"
    assert shlex.quote(str(client / "sigstack.env")) in text
