"""Rekor v2 pushback over HTTP, with the real log engine: a full queue is a 503 with
``Retry-After``, and the entries already accepted are still logged."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from concurrent.futures import Future

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from sigstack.core import note
from sigstack.core.keys import spki_der
from sigstack.log.engine import BatchPolicy, Entry, Integrated, TransparencyLog
from sigstack.log.memory import Fault, MemoryStorage
from sigstack.services.rekor.api import create_rekor_app
from sigstack.services.rekor.service import RekorService

from .rekor_kit import http

ORIGIN = "rekor.example.test"
WAIT = 10


def _request(key: ec.EllipticCurvePrivateKey, artifact: bytes) -> bytes:
    digest = hashlib.sha256(artifact).digest()
    signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    public = base64.b64encode(spki_der(key.public_key())).decode()
    return json.dumps(
        {
            "hashedRekordRequestV002": {
                "digest": base64.b64encode(digest).decode(),
                "signature": {
                    "content": base64.b64encode(signature).decode(),
                    "verifier": {
                        "publicKey": {"rawBytes": public},
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    },
                },
            }
        }
    ).encode()


def test_a_full_queue_answers_503_with_retry_after_and_accepted_entries_are_logged() -> None:
    storage = MemoryStorage()
    signer = note.Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    TransparencyLog.create(storage, signer, ORIGIN)
    policy = BatchPolicy(max_size=1, max_age=0, max_pending=2)
    tlog = TransparencyLog(storage, signer, ORIGIN, verifier=signer.verifier(), policy=policy)
    tlog.open()
    entered, release = threading.Event(), threading.Event()

    def hold_writes(operation: str, key: str) -> Fault | None:
        entered.set()  # the sequencer is stuck writing the first batch until released
        return None if release.wait(WAIT) else Fault.FAIL

    storage.fault = lambda op, key: hold_writes(op, key) if op == "put" else None
    app = create_rekor_app(RekorService(tlog, signer.verifier().key_id))
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        # The sequencer is stuck writing the first entry; two more fill the queue.
        held: list[Future[Integrated]] = [tlog.submit(Entry(b"held"))]
        assert entered.wait(WAIT)
        held += [tlog.submit(Entry(b"queued %d" % i)) for i in range(2)]

        refused = http(app, "POST", "/api/v2/log/entries", content=_request(key, b"one more"))
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "retry" in refused.json()["message"].lower()

        release.set()
        assert [f.result(WAIT).index for f in held] == [0, 1, 2]
        # Once the queue drains, the same request is accepted and logged after them.
        accepted = http(app, "POST", "/api/v2/log/entries", content=_request(key, b"one more"))
        assert accepted.status_code == 201, accepted.text
        assert int(accepted.json()["logIndex"]) == 3
    finally:
        release.set()
        tlog.close()
