"""What clients are told to trust: trusted_root.json, the signing config, client files.

``trusted_root(...)`` is COMPLETE (the seed deployments' pain was a trusted root with
``certificate_authorities: null``): the Fulcio chain (intermediate then root), the CT
log, Rekor v2 and the TSA chain, each with ``validFor``. ``signing_config(...)`` names
every service URL exactly as clients reach it. Both are validated against the strict
pydantic models sigstore-python parses them with (``extra="forbid"``), so a document
that a client would reject is never published.

Both are deterministic: the same keys, certificates, creation time and endpoints give
byte-identical output, so re-running ``sigstack up`` publishes nothing new.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError
from sigstore_models.trustroot.v1 import ClientTrustConfig, SigningConfig, TrustedRoot

from sigstack.core import note
from sigstack.core.clock import rfc3339
from sigstack.core.encoding import b64
from sigstack.core.errors import ConfigError
from sigstack.core.keys import PublicKey, key_details, spki_der, spki_sha256
from sigstack.core.pki import cert_der, name_parts
from sigstack.stack.config import Endpoints

TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGNING_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
CLIENT_TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
TRUSTED_ROOT_TARGET = "trusted_root.json"
SIGNING_CONFIG_TARGET = "signing_config.v0.2.json"
OPERATOR = "sigstack"


@dataclass(frozen=True)
class TrustInputs:
    """Everything the trust documents are derived from."""

    endpoints: Endpoints
    created: dt.datetime
    fulcio_chain: Sequence[x509.Certificate]  # intermediate(s) first, root last
    ctlog_key: PublicKey
    rekor_key: ed25519.Ed25519PublicKey
    rekor_origin: str
    rekor_v1_key: PublicKey  # ECDSA P-256: Rekor v1 checkpoints and SETs
    rekor_v1_created: dt.datetime
    tsa_chain: Sequence[x509.Certificate]  # signer first, root last


def _authority(chain: Sequence[x509.Certificate], uri: str) -> dict[str, Any]:
    organization, common_name = name_parts(chain[-1].subject)
    return {
        "subject": {"organization": organization, "commonName": common_name},
        "uri": uri,
        "certChain": {"certificates": [{"rawBytes": b64(cert_der(c))} for c in chain]},
        "validFor": {"start": rfc3339(chain[0].not_valid_before_utc)},
    }


def trusted_root(inp: TrustInputs) -> dict[str, Any]:
    """The ``trusted_root.json`` document (media type v0.1, which all clients accept)."""
    rekor_id = {"keyId": b64(note.key_id_ed25519(inp.rekor_origin, inp.rekor_key))}
    start = {"start": rfc3339(inp.created)}
    doc = {
        "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
        "tlogs": [
            {
                "baseUrl": inp.endpoints.url("rekor"),
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(spki_der(inp.rekor_key)),
                    "keyDetails": key_details(inp.rekor_key),
                    "validFor": start,
                },
                "logId": rekor_id,
                "checkpointKeyId": rekor_id,
            },
            {
                # Rekor v1 at the same URL: a separate log with its own key; clients
                # pick the key by the entry's log ID.
                "baseUrl": inp.endpoints.url("rekor"),
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(spki_der(inp.rekor_v1_key)),
                    "keyDetails": key_details(inp.rekor_v1_key),
                    "validFor": {"start": rfc3339(inp.rekor_v1_created)},
                },
                "logId": {"keyId": b64(spki_sha256(inp.rekor_v1_key))},
            },
        ],
        "certificateAuthorities": [_authority(inp.fulcio_chain, inp.endpoints.url("fulcio"))],
        "ctlogs": [
            {
                "baseUrl": inp.endpoints.url("ctlog"),
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(spki_der(inp.ctlog_key)),
                    "keyDetails": key_details(inp.ctlog_key),
                    "validFor": start,
                },
                "logId": {"keyId": b64(spki_sha256(inp.ctlog_key))},
            }
        ],
        "timestampAuthorities": [_authority(inp.tsa_chain, inp.endpoints.tsa_url)],
    }
    _validate(TrustedRoot, doc, "trusted root")
    return doc


def signing_config(inp: TrustInputs) -> dict[str, Any]:
    """The ``signing_config.v0.2.json`` document: every URL as clients reach it."""

    def service(url: str, version: int) -> dict[str, Any]:
        return {
            "url": url,
            "majorApiVersion": version,
            "validFor": {"start": rfc3339(inp.created)},
            "operator": OPERATOR,
        }

    ep = inp.endpoints
    doc = {
        "mediaType": SIGNING_CONFIG_MEDIA_TYPE,
        # Fulcio's API is v2 on the wire but its service version is 1 (interop.md 2).
        "caUrls": [service(ep.url("fulcio"), 1)],
        "oidcUrls": [service(ep.url("oidc"), 1)],
        # Both Rekor APIs at one URL: each client takes the highest version it knows
        # (sigstore-python: v2 unless --rekor-version 1; cosign v2: v1). sigstore-js's
        # signing-config builder takes the most recent start date instead, so both
        # entries share the stack's (a log added by an upgrade must not outrank v2);
        # the trusted root keeps each key's true validFor for verification.
        "rekorTlogUrls": [service(ep.url("rekor"), 2), service(ep.url("rekor"), 1)],
        "tsaUrls": [service(ep.tsa_url, 1)],
        "rekorTlogConfig": {"selector": "ANY"},
        "tsaConfig": {"selector": "ANY"},
    }
    _validate(SigningConfig, doc, "signing config")
    return doc


def client_trust_config(root: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The file ``sigstore --trust-config`` reads."""
    doc = {
        "mediaType": CLIENT_TRUST_CONFIG_MEDIA_TYPE,
        "trustedRoot": root,
        "signingConfig": config,
    }
    _validate(ClientTrustConfig, doc, "client trust config")
    return doc


def _validate(model: Any, doc: dict[str, Any], what: str) -> None:
    try:
        model.model_validate_json(json.dumps(doc))
    except ValidationError as exc:  # a bug in sigstack, never user input
        raise ConfigError(f"generated {what} would be rejected by clients: {exc}") from exc


def env_file(endpoints: Endpoints, client_dir: Path, token: str) -> bytes:
    """``sigstack.env``: the variables the upstream scaffolding's CI action exports."""
    values = {
        "TUF_MIRROR": endpoints.url("tuf"),
        "FULCIO_URL": endpoints.url("fulcio"),
        "REKOR_URL": endpoints.url("rekor"),
        "CTLOG_URL": endpoints.url("ctlog"),
        "TSA_URL": endpoints.tsa_url,
        "ISSUER_URL": endpoints.url("oidc"),
        "OIDC_TOKEN": token,
        "SIGSTACK_TUF_ROOT": str(client_dir / "root.json"),
        "SIGSTACK_TRUST_CONFIG": str(client_dir / "trust_config.json"),
    }
    lines = [
        "# sigstack client environment. Load it with: . "
        + shlex.quote(str(client_dir / "sigstack.env"))
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    return ("\n".join(lines) + "\n").encode()
