"""RFC 3161 timestamp authority: parse requests, issue signed tokens, reject the rest.

No web framework here; ``api`` maps HTTP onto :class:`TimestampAuthority`.

Guarantees of a granted ``TimeStampResp`` (RFC 3161, RFC 5652 CMS, RFC 5816 ESSCertIDv2),
each one something a Sigstore client checks (``interop.md`` section 7):

* ``TSTInfo`` v1 with our policy, the request's messageImprint (SHA-256/384/512 only, digest
  length checked), a random positive serial of at most 20 bytes, ``genTime`` in UTC
  GeneralizedTime with WHOLE seconds (sigstore-js parses only ``YYYYMMDDhhmmss[.fff]Z`` and
  DER forbids trailing zeros in fractions, so sub-second times would break it on one request
  in ten), the configured accuracy, the request nonce echoed exactly, ordering false (omitted,
  as DER requires for a default).
* ``genTime`` lies inside the signer certificate's validity; outside it nothing is issued
  (:class:`~sigstack.core.errors.Unavailable`).
* ``SignedData`` v3 with encapContentInfo id-ct-TSTInfo and one ``SignerInfo`` v1 whose sid is
  the issuerAndSerialNumber of ``cert_chain[0]``. Signed attributes (DER SET OF, sorted):
  contentType id-ct-TSTInfo, signingTime (= genTime), messageDigest of the TSTInfo DER, and
  signingCertificateV2 (ESSCertIDv2: SHA-256 of the signer certificate and its issuerSerial).
  The signature is ECDSA with the curve's hash (ecdsa-with-SHA256 for the P-256 signer the
  stack creates), and the digest algorithm is that same hash.
* The chain ``[leaf, intermediates..., root]`` is embedded only when the request asks
  (``certReq`` true, or ``"certificates": true`` in the JSON form).

A request that is malformed or asks for something we do not do is never granted: it is
refused with :class:`TimestampRejected` carrying the PKIFailureInfo bit, which renders as a
DER ``TimeStampResp`` with status rejection (2). A DER request must be DER exactly: the
parsed request re-encoded must reproduce the input bytes (asn1crypto's strict mode only
refuses trailing bytes after the top-level value; without this check an extra element
inside ``MessageImprint``, BER indefinite lengths, non-minimal lengths or integers, or an
explicitly encoded DEFAULT would be granted, and another parser could read such bytes
differently from us).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import ec

from sigstack.core.clock import Clock, utcnow, whole_seconds
from sigstack.core.encoding import b64decode
from sigstack.core.errors import ConfigError, InvalidRequest, Unavailable
from sigstack.core.keys import hash_for_key, sign
from sigstack.core.pki import cert_der, pem_chain, random_serial
from sigstack.services.tsa.config import TSAConfig

#: Media types of the wire forms (RFC 3161 section 4 and upstream's JSON form).
TIMESTAMP_QUERY = "application/timestamp-query"
TIMESTAMP_REPLY = "application/timestamp-reply"

#: A nonce is "a large random number" (RFC 3161 2.4.1), typically 64 bits; refuse silly sizes.
MAX_NONCE_BYTES = 64
_MAX_JSON_INT_DIGITS = 160  # 64 bytes is at most 155 decimal digits (+ sign)

# Supported message-imprint algorithms: name -> (OID, digest length). SHA-1 and MD5 are weak.
_IMPRINT_ALGORITHMS: dict[str, tuple[str, int]] = {
    "sha256": ("2.16.840.1.101.3.4.2.1", 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
_IMPRINT_BY_OID = {oid: (name, size) for name, (oid, size) in _IMPRINT_ALGORITHMS.items()}
_WEAK_OIDS = {
    "1.3.14.3.2.26": "sha1",
    "1.2.840.113549.2.5": "md5",
    "1.2.840.113549.2.2": "md2",
}


class FailureInfo(enum.StrEnum):
    """PKIFailureInfo bits we answer with (RFC 3161 section 2.4.2), by asn1crypto name."""

    BAD_ALG = "bad_alg"
    BAD_REQUEST = "bad_request"
    BAD_DATA_FORMAT = "bad_data_format"
    UNACCEPTED_POLICY = "unaccepted_policy"
    UNACCEPTED_EXTENSION = "unaccepted_extensions"


class TimestampRejected(InvalidRequest):
    """The request is refused (HTTP 400); ``response_der()`` is the RFC 3161 rejection."""

    def __init__(self, failure: FailureInfo, message: str) -> None:
        super().__init__(message)
        self.failure = failure

    def response_der(self) -> bytes:
        """DER ``TimeStampResp`` with status rejection, this failure bit and the message."""
        der: bytes = _TimeStampResp(
            {
                "status": tsp.PKIStatusInfo(
                    {
                        "status": "rejection",
                        "status_string": [self.message],
                        "fail_info": {self.failure.value},
                    }
                )
            }
        ).dump()
        return der


@dataclass(frozen=True)
class TimestampReply:
    """The answer to a DER ``TimeStampReq``: a DER ``TimeStampResp``, granted or not.

    ``rejection`` is the refusal (``None`` when granted); ``der`` is then its RFC 3161
    rejection response, which the API answers with status 400.
    """

    der: bytes
    rejection: TimestampRejected | None = None

    @property
    def granted(self) -> bool:
        """Whether ``der`` carries a timestamp token."""
        return self.rejection is None


class _TimeStampResp(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """TimeStampResp with the token OPTIONAL, as RFC 3161 2.4.2 declares it.

    (asn1crypto's ``tsp.TimeStampResp`` makes the token mandatory, so it cannot encode a
    rejection.)
    """

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass(frozen=True)
class _Request:
    """A request that passed every check, in either wire form."""

    hash_name: str  # "sha256" | "sha384" | "sha512"
    digest: bytes
    nonce: int | None
    cert_req: bool


def _check_imprint(hash_name: str, digest: bytes) -> None:
    size = _IMPRINT_ALGORITHMS[hash_name][1]
    if len(digest) != size:
        raise TimestampRejected(
            FailureInfo.BAD_DATA_FORMAT,
            f"message digest is {len(digest)} bytes; {hash_name} digests are {size} bytes",
        )


def _check_nonce(nonce: int) -> None:
    if abs(nonce).bit_length() > 8 * MAX_NONCE_BYTES:
        raise TimestampRejected(
            FailureInfo.BAD_REQUEST,
            f"nonce is longer than {MAX_NONCE_BYTES} bytes; send a random 64-bit nonce",
        )


def _check_policy(requested: str, ours: str) -> None:
    if requested != ours:
        raise TimestampRejected(
            FailureInfo.UNACCEPTED_POLICY,
            f"requested TSA policy {requested} is not supported; this TSA issues under {ours}",
        )


def _parse_der_request(der: bytes, policy_oid: str) -> _Request:
    """Parse and check a DER ``TimeStampReq``; raise :class:`TimestampRejected` if unfit."""
    if not der:
        raise TimestampRejected(
            FailureInfo.BAD_DATA_FORMAT, "request body is empty; expected a DER TimeStampReq"
        )
    try:
        req = tsp.TimeStampReq.load(der, strict=True)
        # Re-encoding from the parsed values (force=True) must give back the input: only
        # then is the request DER, with nothing our parse skipped or normalised.
        canonical = req.dump(force=True) == der
        version = req["version"].native
        algorithm = req["message_imprint"]["hash_algorithm"]
        alg_oid = algorithm["algorithm"].dotted
        alg_params = algorithm["parameters"]
        digest = req["message_imprint"]["hashed_message"].native
        policy = req["req_policy"].dotted if req["req_policy"].native is not None else None
        nonce = req["nonce"].native
        cert_req = bool(req["cert_req"].native)
        extensions = req["extensions"].native
    except Exception as exc:  # any parse failure of untrusted bytes means a bad request
        raise TimestampRejected(
            FailureInfo.BAD_DATA_FORMAT, f"request is not a DER TimeStampReq: {exc}"
        ) from None
    if not canonical:
        raise TimestampRejected(
            FailureInfo.BAD_DATA_FORMAT,
            "request is not a DER TimeStampReq: it is not in distinguished encoding (an "
            "unexpected element, an indefinite or non-minimal length, or an explicitly "
            "encoded default)",
        )
    if version != "v1":
        raise TimestampRejected(
            FailureInfo.BAD_REQUEST, f"TimeStampReq version must be 1 (v1), not {version}"
        )
    if alg_oid not in _IMPRINT_BY_OID:
        weak = _WEAK_OIDS.get(alg_oid)
        what = f"weak hash algorithm {weak}" if weak else f"unsupported hash algorithm {alg_oid}"
        raise TimestampRejected(FailureInfo.BAD_ALG, f"{what}; use SHA-256, SHA-384 or SHA-512")
    if alg_params.native is not None:
        raise TimestampRejected(
            FailureInfo.BAD_ALG, "hash algorithm parameters must be absent or NULL"
        )
    hash_name = _IMPRINT_BY_OID[alg_oid][0]
    _check_imprint(hash_name, digest)
    if policy is not None:
        _check_policy(policy, policy_oid)
    if nonce is not None:
        _check_nonce(nonce)
    if extensions:
        raise TimestampRejected(
            FailureInfo.UNACCEPTED_EXTENSION, "request extensions are not supported by this TSA"
        )
    return _Request(hash_name=hash_name, digest=digest, nonce=nonce, cert_req=cert_req)


def _json_int(text: str) -> int:
    # Bounded before conversion: int() of a long digit string costs quadratic time.
    if len(text) > _MAX_JSON_INT_DIGITS:
        raise TimestampRejected(
            FailureInfo.BAD_REQUEST,
            f"JSON integer of {len(text)} digits; a nonce is at most {MAX_NONCE_BYTES} bytes",
        )
    return int(text)


def _json_constant(name: str) -> Any:
    raise TimestampRejected(FailureInfo.BAD_DATA_FORMAT, f"JSON constant {name} is not allowed")


def _parse_json_request(body: bytes, policy_oid: str) -> _Request:
    """Parse and check upstream's JSON request form; raise :class:`TimestampRejected`.

    ``{"artifactHash": base64 digest, "hashAlgorithm": "sha256"|"sha384"|"sha512",
    "nonce"?: integer, "certificates"?: bool (default false), "tsaPolicyOID"?: string}``.
    Field names and defaults follow sigstore/timestamp-authority's ``JSONRequest``; as
    there, unknown fields are ignored and ``hashAlgorithm`` is case-insensitive.
    """
    try:
        doc = json.loads(body, parse_int=_json_int, parse_constant=_json_constant)
    except RecursionError:
        raise TimestampRejected(
            FailureInfo.BAD_DATA_FORMAT, "request body is not valid JSON: nested too deeply"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise TimestampRejected(
            FailureInfo.BAD_DATA_FORMAT, f"request body is not valid JSON: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise TimestampRejected(FailureInfo.BAD_DATA_FORMAT, "JSON request must be an object")

    algorithm = doc.get("hashAlgorithm")
    if not isinstance(algorithm, str):
        raise TimestampRejected(
            FailureInfo.BAD_ALG, 'hashAlgorithm is required: "sha256", "sha384" or "sha512"'
        )
    hash_name = algorithm.lower()
    if hash_name not in _IMPRINT_ALGORITHMS:
        weak = hash_name in _WEAK_OIDS.values()
        what = "weak" if weak else "unsupported"
        raise TimestampRejected(
            FailureInfo.BAD_ALG,
            f"{what} hash algorithm {algorithm!r}; use sha256, sha384 or sha512",
        )

    artifact_hash = doc.get("artifactHash")
    if not isinstance(artifact_hash, str):
        raise TimestampRejected(
            FailureInfo.BAD_DATA_FORMAT, "artifactHash is required: the base64 digest"
        )
    try:
        digest = b64decode(artifact_hash, what="artifactHash (standard base64)")
    except InvalidRequest as exc:
        raise TimestampRejected(FailureInfo.BAD_DATA_FORMAT, exc.message) from None
    _check_imprint(hash_name, digest)

    nonce = doc.get("nonce")
    if nonce is not None:
        if isinstance(nonce, bool) or not isinstance(nonce, int):
            raise TimestampRejected(FailureInfo.BAD_REQUEST, "nonce must be a JSON integer")
        _check_nonce(nonce)

    certificates = doc.get("certificates", False)
    if not isinstance(certificates, bool):
        raise TimestampRejected(FailureInfo.BAD_REQUEST, "certificates must be true or false")

    policy = doc.get("tsaPolicyOID")
    if policy not in (None, ""):
        if not isinstance(policy, str):
            raise TimestampRejected(FailureInfo.BAD_REQUEST, "tsaPolicyOID must be a string")
        _check_policy(policy, policy_oid)

    return _Request(hash_name=hash_name, digest=digest, nonce=nonce, cert_req=certificates)


def _accuracy(value: dt.timedelta) -> tsp.Accuracy:
    micros_total = value // dt.timedelta(microseconds=1)
    seconds, rest = divmod(micros_total, 1_000_000)
    millis, micros = divmod(rest, 1_000)
    fields: dict[str, int] = {}
    if seconds:
        fields["seconds"] = seconds
    if millis:
        fields["millis"] = millis
    if micros:
        fields["micros"] = micros
    return tsp.Accuracy(fields)


def _signing_time(when: dt.datetime) -> cms.Time:
    # RFC 5652 11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    if 1950 <= when.year <= 2049:
        return cms.Time({"utc_time": when})
    return cms.Time({"generalized_time": when})


class TimestampAuthority:
    """Issues RFC 3161 timestamp tokens signed by the configured TSA key.

    Stateless after construction and safe to call from several threads.
    """

    def __init__(self, config: TSAConfig, *, clock: Clock = utcnow) -> None:
        self._config = config
        self._clock = clock
        key = config.signer_key
        algo = hash_for_key(key.public_key())
        if not isinstance(key, ec.EllipticCurvePrivateKey) or algo is None:
            # TSAConfig already refuses these; checked again so no path signs with them.
            raise ConfigError("the TSA signer key must be ECDSA")
        self._key = key
        self._sig_hash = algo.name  # "sha256" for P-256, "sha384" for P-384, "sha512" for P-521
        self._leaf = config.signer_certificate
        leaf_der = cert_der(self._leaf)
        leaf = asn1_x509.Certificate.load(leaf_der)
        # Encoded once; each token decodes fresh copies, so no asn1crypto object is ever
        # shared between threads.
        self._sid_der: bytes = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": {
                    "issuer": leaf.issuer,
                    "serial_number": leaf.serial_number,
                }
            }
        ).dump()
        self._ess_der: bytes = tsp.SigningCertificateV2(
            {
                "certs": [
                    {
                        # hash_algorithm left at its DEFAULT (sha256), so DER omits it.
                        "cert_hash": hashlib.sha256(leaf_der).digest(),
                        "issuer_serial": {
                            "issuer": [asn1_x509.GeneralName({"directory_name": leaf.issuer})],
                            "serial_number": leaf.serial_number,
                        },
                    }
                ]
            }
        ).dump()
        self._chain_der = [cert_der(c) for c in config.cert_chain]
        self._chain_pem = pem_chain(config.cert_chain)

    @property
    def config(self) -> TSAConfig:
        """The validated configuration this authority signs with."""
        return self._config

    @property
    def body_limit(self) -> int:
        """Largest request body accepted, in bytes."""
        return self._config.body_limit

    def chain_pem(self) -> str:
        """The certificate chain as PEM, signer leaf first, root last."""
        return self._chain_pem

    def check_ready(self) -> None:
        """Raise :class:`Unavailable` unless a timestamp could be issued right now."""
        self._gen_time()

    def timestamp(self, request_der: bytes) -> TimestampReply:
        """Answer a DER ``TimeStampReq`` with a DER ``TimeStampResp``, granted or rejected.

        The one entry point of the DER form (the HTTP API calls it too). Client faults
        never raise here: they come back as a rejection (status 2) with the matching
        PKIFailureInfo, and ``rejection`` set. Server conditions do raise (``Unavailable``
        when the signer certificate is not valid now).
        """
        try:
            request = _parse_der_request(request_der, self._config.policy_oid)
        except TimestampRejected as rejected:
            return TimestampReply(rejected.response_der(), rejected)
        return TimestampReply(self._issue(request))

    def timestamp_json(self, body: bytes) -> bytes:
        """A granted DER ``TimeStampResp`` for upstream's JSON request form.

        Raises :class:`TimestampRejected` (HTTP 400, ``{"code","message"}`` at the API)
        for a request we refuse.
        """
        return self._issue(_parse_json_request(body, self._config.policy_oid))

    def _gen_time(self) -> dt.datetime:
        now = whole_seconds(self._clock())  # UTC; see the module docstring
        leaf = self._leaf
        if now < leaf.not_valid_before_utc or now > leaf.not_valid_after_utc:
            raise Unavailable(
                f"the TSA signing certificate is not valid at {now.isoformat()} (valid "
                f"{leaf.not_valid_before_utc.isoformat()} to "
                f"{leaf.not_valid_after_utc.isoformat()}); the operator must renew it"
            )
        return now

    def _issue(self, request: _Request) -> bytes:
        """Sign a timestamp token for a checked request; the DER ``TimeStampResp``."""
        gen_time = self._gen_time()
        tst_fields: dict[str, Any] = {
            "version": "v1",
            "policy": self._config.policy_oid,
            "message_imprint": {
                "hash_algorithm": {"algorithm": request.hash_name},
                "hashed_message": request.digest,
            },
            "serial_number": random_serial(),
            "gen_time": gen_time,
        }
        if self._config.accuracy is not None:
            tst_fields["accuracy"] = _accuracy(self._config.accuracy)
        if request.nonce is not None:
            tst_fields["nonce"] = request.nonce
        tst_der = tsp.TSTInfo(tst_fields).dump()

        attributes = [
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
            cms.CMSAttribute({"type": "signing_time", "values": [_signing_time(gen_time)]}),
            cms.CMSAttribute(
                {
                    "type": "message_digest",
                    "values": [hashlib.new(self._sig_hash, tst_der).digest()],
                }
            ),
            cms.CMSAttribute(
                {
                    "type": "signing_certificate_v2",
                    "values": [tsp.SigningCertificateV2.load(self._ess_der)],
                }
            ),
        ]
        # DER SET OF: elements in ascending order of their encodings (X.690 11.6).
        attributes.sort(key=lambda attr: attr.dump())
        signed_attrs = cms.CMSAttributes(attributes)
        # The signature covers the attributes encoded with the SET OF tag (RFC 5652 5.4).
        signature = sign(self._key, signed_attrs.dump())

        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier.load(self._sid_der),
                "digest_algorithm": {"algorithm": self._sig_hash},
                "signed_attrs": signed_attrs,
                "signature_algorithm": algos.SignedDigestAlgorithm(
                    {"algorithm": f"{self._sig_hash}_ecdsa"}
                ),
                "signature": signature,
            }
        )
        signed_data: dict[str, Any] = {
            "version": "v3",
            "digest_algorithms": [{"algorithm": self._sig_hash}],
            "encap_content_info": {
                "content_type": "tst_info",
                "content": core.ParsableOctetString(tst_der),
            },
            "signer_infos": [signer_info],
        }
        if request.cert_req:
            signed_data["certificates"] = [
                asn1_x509.Certificate.load(der) for der in self._chain_der
            ]
        token = cms.ContentInfo(
            {"content_type": "signed_data", "content": cms.SignedData(signed_data)}
        )
        der: bytes = _TimeStampResp(
            {"status": {"status": "granted"}, "time_stamp_token": token}
        ).dump()
        return der
