"""FulcioService: issued certificates checked by sigstore-python 4.5.1's own verifiers.

Oracles (independent of sigstack's code):

* chain: ``sigstore.verify.verifier.Verifier._verify_chain_at_time`` itself (cryptography's
  webpki client verifier with EKU allowed non-critical), run at the issuance time;
* SCT: ``sigstore._internal.sct.verify_sct`` with a ``CTKeyring`` holding the CT log key;
* identity: ``sigstore.verify.policy.Identity(identity=..., issuer=...)`` (SAN + 57264.1.1);
* 57264.1.8 and the CI extensions: sigstore's ``OIDCIssuerV2`` and friends.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
from fulcio_kit import (
    GITHUB_ISSUER,
    ISSUER_URL,
    K8S_ISSUER,
    NOW,
    FakeClock,
    Kit,
    github_claims,
    gitlab_claims,
    k8s_claims,
    make_ca,
    run,
)
from sigstore._internal.sct import verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import CTKeyring, Keyring
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.sign import Signer
from sigstore.verify import policy
from sigstore.verify.verifier import Verifier
from sigstore_models.common import v1 as common_v1

from sigstack.core.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequest,
    Unavailable,
    UpstreamError,
    VerificationError,
)
from sigstack.core.keys import require_supported, sign, spki_der
from sigstack.core.sct import PRECERT_POISON_OID, SCT_LIST_OID, tbs_without_extension
from sigstack.services.fulcio.service import FulcioService, IssuedCertificate

SIGSTORE_ARC = "1.3.6.1.4.1.57264."


def csr_for(key: Any, algorithm: hashes.SHA256 | hashes.SHA384 | None = None) -> bytes:
    """A CSR the way sigstore-python builds it (empty subject, BasicConstraints)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = None
    elif algorithm is None:
        algorithm = hashes.SHA256()
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    signed = builder.sign(key, algorithm)
    return signed.public_bytes(serialization.Encoding.PEM)


def pem(key: Any) -> bytes:
    public = key.public_key()
    return bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def ct_keyring(kit: Kit) -> CTKeyring:
    return CTKeyring(
        Keyring(
            [
                common_v1.PublicKey(
                    # the model takes JSON's base64 form and stores the decoded bytes
                    raw_bytes=base64.b64encode(spki_der(kit.ct.key.public_key())).decode(),  # type: ignore[arg-type]
                    key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
                )
            ]
        )
    )


def sigstore_verifies(kit: Kit, issued: IssuedCertificate) -> None:
    """Every check sigstore-python applies to a signing certificate, except the identity."""
    verifier = Verifier.__new__(Verifier)  # only the attribute _verify_chain_at_time reads
    verifier._fulcio_certificate_chain = [kit.ca.root, kit.ca.intermediate]
    at = TimestampVerificationResult(source=TimestampSource.TRANSPARENCY_SERVICE, time=NOW)
    chain = verifier._verify_chain_at_time(issued.certificate, at)
    assert chain[0] == kit.ca.intermediate  # the intermediate is a trust anchor there
    verify_sct(issued.certificate, chain, ct_keyring(kit))
    # the full path to the root alone, with the same webpki profile
    eku_ok = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ca_ok = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    path = (
        PolicyBuilder()
        .store(Store([kit.ca.root]))
        .time(NOW)
        .extension_policies(ca_policy=ca_ok, ee_policy=eku_ok)
        .build_client_verifier()
        .verify(issued.certificate, [kit.ca.intermediate])
    )
    assert path.chain == [issued.certificate, kit.ca.intermediate, kit.ca.root]
    # and the SCT check sigstore-python runs right after signing, on the returned chain
    verify_sct(issued.certificate, list(issued.chain), ct_keyring(kit))


def issue_email(kit: Kit, service: FulcioService | None = None, **claims: Any) -> IssuedCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return run((service or kit.service()).issue_from_csr(kit.email_token(**claims), csr_for(key)))


# --- the certificate and the precertificate ---------------------------------------------------


def test_email_certificate_passes_sigstore_python_checks(kit: Kit) -> None:
    issued = issue_email(kit)
    sigstore_verifies(kit, issued)
    policy.Identity(identity="alice@example.com", issuer=ISSUER_URL).verify(issued.certificate)
    policy.OIDCIssuerV2(ISSUER_URL).verify(issued.certificate)
    with pytest.raises(Exception, match="SANs do not match"):
        policy.Identity(identity="bob@example.com", issuer=ISSUER_URL).verify(issued.certificate)
    with pytest.raises(Exception, match="does not match"):
        policy.Identity(identity="alice@example.com", issuer="https://x").verify(issued.certificate)


def test_oracles_are_not_vacuous(kit: Kit) -> None:
    issued = issue_email(kit)
    other_log = SimpleNamespace(ct=SimpleNamespace(key=ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(SigstoreVerificationError, match="SCT verify failed"):
        verify_sct(issued.certificate, list(issued.chain), ct_keyring(other_log))  # type: ignore[arg-type]
    stranger = make_ca()
    verifier = Verifier.__new__(Verifier)
    verifier._fulcio_certificate_chain = [stranger.root, stranger.intermediate]
    at = TimestampVerificationResult(source=TimestampSource.TRANSPARENCY_SERVICE, time=NOW)
    with pytest.raises(SigstoreVerificationError):
        verifier._verify_chain_at_time(issued.certificate, at)
    late = TimestampVerificationResult(
        source=TimestampSource.TRANSPARENCY_SERVICE, time=NOW + timedelta(minutes=11)
    )
    verifier._fulcio_certificate_chain = [kit.ca.root, kit.ca.intermediate]
    with pytest.raises(SigstoreVerificationError):
        verifier._verify_chain_at_time(issued.certificate, late)


def test_certificate_profile(kit: Kit) -> None:
    issued = issue_email(kit)
    cert = issued.certificate
    assert cert.version is x509.Version.v3
    assert cert.subject == x509.Name([])
    assert cert.issuer == kit.ca.intermediate.subject
    assert 0 < cert.serial_number < 2**159  # positive, at most 20 DER bytes
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(minutes=10)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    cert.verify_directly_issued_by(kit.ca.intermediate)

    ext = cert.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical and list(eku.value) == [ExtendedKeyUsageOID.CODE_SIGNING]
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is False
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        aki.key_identifier
        == kit.ca.intermediate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    )
    sigstore_exts = {
        e.oid.dotted_string: e for e in ext if e.oid.dotted_string.startswith(SIGSTORE_ARC)
    }
    assert set(sigstore_exts) >= {SIGSTORE_ARC + "1.1", SIGSTORE_ARC + "1.8"}
    assert all(not e.critical for e in sigstore_exts.values())
    assert sigstore_exts[SIGSTORE_ARC + "1.1"].value.value == ISSUER_URL.encode()
    critical = {e.oid for e in ext if e.critical}
    assert critical == {
        x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        x509.oid.ExtensionOID.KEY_USAGE,
        x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
    }
    scts = ext.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps)
    assert scts.oid == SCT_LIST_OID
    assert not scts.critical and len(list(scts.value)) == 1


def test_precert_and_final_certificate_match(kit: Kit) -> None:
    issued = issue_email(kit)
    [submitted] = kit.ct.submissions
    assert submitted[1:] == [
        kit.ca.intermediate.public_bytes(serialization.Encoding.DER),
        kit.ca.root.public_bytes(serialization.Encoding.DER),
    ]
    precert = x509.load_der_x509_certificate(submitted[0])
    final = issued.certificate
    assert final.tbs_precertificate_bytes == tbs_without_extension(submitted[0], PRECERT_POISON_OID)
    # the poison is the LAST extension, critical; the SCT list takes its position
    pre_exts, final_exts = list(precert.extensions), list(final.extensions)
    assert pre_exts[-1].oid == PRECERT_POISON_OID and pre_exts[-1].critical
    assert final_exts[-1].oid == SCT_LIST_OID and not final_exts[-1].critical
    assert [e.oid for e in pre_exts[:-1]] == [e.oid for e in final_exts[:-1]]
    assert precert.serial_number == final.serial_number
    assert precert.not_valid_after_utc == final.not_valid_after_utc
    scts = final.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps)
    [sct] = list(scts.value)
    assert sct.log_id == kit.ct.log_id
    assert sct.timestamp.replace(tzinfo=None) == NOW.replace(tzinfo=None)


def test_serials_are_unique(kit: Kit) -> None:
    service = kit.service()
    serials = {issue_email(kit, service).certificate.serial_number for _ in range(5)}
    assert len(serials) == 5


def test_lifetime_and_whole_seconds_come_from_config_and_clock(kit: Kit) -> None:
    kit.clock.now = NOW + timedelta(seconds=5, microseconds=123456)
    issued = issue_email(kit, kit.service(cert_lifetime=timedelta(minutes=3)))
    assert issued.certificate.not_valid_before_utc == NOW + timedelta(seconds=5)
    assert issued.certificate.not_valid_after_utc == NOW + timedelta(minutes=3, seconds=5)


# --- issuer types --------------------------------------------------------------------------


def test_github_workflow_certificate(kit: Kit) -> None:
    token = kit.issuers["github"].token(kit.clock, **github_claims())
    key = ec.generate_private_key(ec.SECP256R1())
    issued = run(kit.service().issue_from_csr(token, csr_for(key)))
    sigstore_verifies(kit, issued)
    cert = issued.certificate
    ref = "octo/hello/.github/workflows/release.yml@refs/heads/main"
    policy.Identity(identity=f"https://github.com/{ref}", issuer=GITHUB_ISSUER).verify(cert)
    policy.AllOf(
        [
            policy.OIDCIssuerV2(GITHUB_ISSUER),
            policy.GitHubWorkflowTrigger("push"),
            policy.GitHubWorkflowSHA("b" * 40),
            policy.GitHubWorkflowName("Release"),
            policy.GitHubWorkflowRepository("octo/hello"),
            policy.GitHubWorkflowRef("refs/heads/main"),
            policy.OIDCBuildSignerURI(f"https://github.com/{ref}"),
            policy.OIDCBuildSignerDigest("a" * 40),
            policy.OIDCRunnerEnvironment("github-hosted"),
            policy.OIDCSourceRepositoryURI("https://github.com/octo/hello"),
            policy.OIDCSourceRepositoryDigest("b" * 40),
            policy.OIDCSourceRepositoryRef("refs/heads/main"),
            policy.OIDCSourceRepositoryIdentifier("12345"),
            policy.OIDCSourceRepositoryOwnerURI("https://github.com/octo"),
            policy.OIDCSourceRepositoryOwnerIdentifier("678"),
            policy.OIDCBuildConfigURI(f"https://github.com/{ref}"),
            policy.OIDCBuildConfigDigest("c" * 40),
            policy.OIDCBuildTrigger("push"),
            policy.OIDCRunInvocationURI(
                "https://github.com/octo/hello/actions/runs/999/attempts/1"
            ),
            policy.OIDCSourceRepositoryVisibility("public"),
        ]
    ).verify(cert)
    for ext in cert.extensions:
        if ext.oid.dotted_string.startswith(SIGSTORE_ARC):
            assert not ext.critical


def test_gitlab_and_kubernetes_certificates(kit: Kit) -> None:
    service = kit.service()
    key = ec.generate_private_key(ec.SECP256R1())
    gl = run(
        service.issue_from_csr(
            kit.issuers["gitlab"].token(kit.clock, **gitlab_claims()), csr_for(key)
        )
    )
    sigstore_verifies(kit, gl)
    policy.Identity(
        identity="https://gitlab.example.com/grp/proj//.gitlab-ci.yml@refs/heads/main",
        issuer="https://gitlab.example.com",
    ).verify(gl.certificate)
    k8s = run(
        service.issue_from_csr(kit.issuers["k8s"].token(kit.clock, **k8s_claims()), csr_for(key))
    )
    sigstore_verifies(kit, k8s)
    policy.Identity(
        identity="https://kubernetes.io/namespaces/default/serviceaccounts/builder",
        issuer=K8S_ISSUER,
    ).verify(k8s.certificate)
    policy.OIDCIssuerV2(K8S_ISSUER).verify(k8s.certificate)


# --- key types and proof of possession ------------------------------------------------------

SUPPORTED_KEYS: dict[str, Callable[[], Any]] = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", sorted(SUPPORTED_KEYS))
def test_supported_key_types_via_csr_and_public_key(kit: Kit, kind: str) -> None:
    key = SUPPORTED_KEYS[kind]()
    service = kit.service()
    by_csr = run(service.issue_from_csr(kit.email_token(), csr_for(key)))
    sigstore_verifies(kit, by_csr)
    certified = require_supported(by_csr.certificate.public_key())
    assert spki_der(certified) == spki_der(key.public_key())
    pop = sign(key, b"alice@example.com")
    by_key = run(service.issue_from_public_key(kit.email_token(), pem(key), pop))
    sigstore_verifies(kit, by_key)


def test_sigstore_python_csr_is_accepted(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = Signer._build_csr(SimpleNamespace(_private_key=key))  # type: ignore[arg-type]
    issued = run(
        kit.service().issue_from_csr(
            kit.email_token(), csr.public_bytes(serialization.Encoding.PEM)
        )
    )
    sigstore_verifies(kit, issued)


def test_csr_signed_with_a_weak_hash_is_refused(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # cryptography no longer signs with SHA-1; SHA-224 is outside the accepted set too
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA224())
    )
    with pytest.raises(VerificationError, match="SHA-256 or stronger"):
        run(
            kit.service().issue_from_csr(
                kit.email_token(), csr.public_bytes(serialization.Encoding.PEM)
            )
        )


def test_csr_with_bad_self_signature_is_refused(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = x509.load_pem_x509_csr(csr_for(key)).public_bytes(serialization.Encoding.DER)
    req = asn1_csr.CertificationRequest.load(der)
    other = x509.load_pem_x509_csr(csr_for(ec.generate_private_key(ec.SECP256R1())))
    req["signature"] = other.signature  # a valid signature, by another key
    tampered = req.dump(force=True)
    with pytest.raises(VerificationError, match="self-signature does not verify"):
        run(kit.service().issue_from_csr(kit.email_token(), tampered))
    assert kit.ct.submissions == []


@pytest.mark.parametrize(
    "garbage", [b"", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", b"\x30\x03"]
)
def test_unparsable_csr_is_refused(kit: Kit, garbage: bytes) -> None:
    with pytest.raises(InvalidRequest, match="could not be parsed"):
        run(kit.service().issue_from_csr(kit.email_token(), garbage))


def test_pop_over_email_when_present_else_sub(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    service = kit.service()
    run(service.issue_from_public_key(kit.email_token(), pem(key), sign(key, b"alice@example.com")))
    gh_token = kit.issuers["github"].token(kit.clock, **github_claims())
    sub = github_claims()["sub"].encode()
    issued = run(service.issue_from_public_key(gh_token, pem(key), sign(key, sub)))
    sigstore_verifies(kit, issued)


def test_pop_signed_over_the_wrong_subject_is_refused(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    service = kit.service()
    for wrong in (b"user-123", b"mallory@example.com", b""):  # sub instead of email, others
        with pytest.raises(VerificationError, match="proof of possession") as err:
            run(service.issue_from_public_key(kit.email_token(), pem(key), sign(key, wrong)))
        assert "email" in err.value.message
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError, match="proof of possession"):
        run(
            service.issue_from_public_key(
                kit.email_token(), pem(key), sign(other, b"alice@example.com")
            )
        )
    assert kit.ct.submissions == []


UNSUPPORTED_KEYS: dict[str, Callable[[], Any]] = {
    "rsa1024": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505
    "p192": lambda: ec.generate_private_key(ec.SECP192R1()),
    "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
}


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED_KEYS))
def test_unsupported_keys_are_refused(kit: Kit, kind: str) -> None:
    key = UNSUPPORTED_KEYS[kind]()
    service = kit.service()
    with pytest.raises(InvalidRequest, match="not supported"):
        run(service.issue_from_csr(kit.email_token(), csr_for(key)))
    with pytest.raises(InvalidRequest, match="not supported"):
        run(service.issue_from_public_key(kit.email_token(), pem(key), b"sig"))
    assert kit.ct.submissions == []


def test_weak_rsa_exponent_is_refused(kit: Kit) -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(InvalidRequest, match="exponent"):
        run(kit.service().issue_from_public_key(kit.email_token(), pem(key), b"sig"))


def test_token_is_checked_before_the_key(kit: Kit) -> None:
    with pytest.raises(AuthenticationError):
        run(kit.service().issue_from_csr(kit.email_token(aud="other"), b"garbage"))


def test_email_verified_false_issues_nothing(kit: Kit) -> None:
    with pytest.raises(AuthenticationError, match="email_verified"):
        issue_email(kit, email_verified=False)
    assert kit.ct.submissions == []


# --- CT log and CA failures -----------------------------------------------------------------


def test_ct_failure_is_an_upstream_error(kit: Kit) -> None:
    kit.ct.fail_with = UpstreamError("the CT log refused the precertificate: HTTP 500")
    with pytest.raises(UpstreamError) as err:
        issue_email(kit)
    assert err.value.http_status == 502
    kit.ct.fail_with = RuntimeError("driver bug")
    with pytest.raises(UpstreamError, match="CT log submission failed"):
        issue_email(kit)


def test_ca_expiring_before_the_certificate_would_is_unavailable(clock: FakeClock) -> None:
    from fulcio_kit import make_kit

    ca = make_ca(NOW - timedelta(days=3650) + timedelta(minutes=5))  # expires in 5 minutes
    kit = make_kit(clock, ca)
    service = kit.service()
    with pytest.raises(Unavailable, match="expires"):
        issue_email(kit, service)
    with pytest.raises(Unavailable):
        run(service.health())
    assert kit.ct.submissions == []


def test_constructor_refuses_a_mismatched_chain(kit: Kit) -> None:
    config, verifier = kit.config(), kit.verifier()
    other = make_ca()
    with pytest.raises(ConfigError, match="does not match"):
        FulcioService(config, other.key, kit.ca.chain, kit.ct, verifier)
    with pytest.raises(ConfigError, match=r"not issued|does not match|issuer"):
        FulcioService(config, kit.ca.key, [kit.ca.intermediate, other.root], kit.ct, verifier)
    with pytest.raises(ConfigError, match="empty"):
        FulcioService(config, kit.ca.key, [], kit.ct, verifier)
    with pytest.raises(ConfigError, match="ECDSA"):
        FulcioService(config, ed25519.Ed25519PrivateKey.generate(), kit.ca.chain, kit.ct, verifier)


# --- read endpoints -------------------------------------------------------------------------


def test_trust_bundle_configuration_and_root_chain(kit: Kit) -> None:
    service = kit.service()
    bundle = service.trust_bundle()
    [chain] = bundle["chains"]
    loaded = [x509.load_pem_x509_certificate(p.encode()) for p in chain["certificates"]]
    assert loaded == [kit.ca.intermediate, kit.ca.root]
    assert x509.load_pem_x509_certificates(service.root_cert_chain_pem().encode()) == loaded
    issuers = service.configuration()["issuers"]
    by_url = {i.get("issuerUrl") or i.get("wildcardIssuerUrl"): i for i in issuers}
    assert by_url[ISSUER_URL] == {
        "issuerUrl": ISSUER_URL,
        "audience": "sigstore",
        "challengeClaim": "email",
        "issuerType": "email",
    }
    assert by_url["https://oidc.eks.*.amazonaws.com/id/*"]["challengeClaim"] == "sub"
    assert by_url["https://accounts.example.org"]["subjectDomain"] == "https://example.org"
    assert len(issuers) == 5


def test_public_key_as_base64_der_is_accepted(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = base64.b64encode(spki_der(key.public_key()))
    pop = sign(key, b"alice@example.com")
    issued = run(kit.service().issue_from_public_key(kit.email_token(), der, pop))
    assert spki_der(require_supported(issued.certificate.public_key())) == spki_der(
        key.public_key()
    )


@pytest.mark.parametrize(
    "content",
    [b"not base64!", b"QUJD", b"-----BEGIN PUBLIC KEY-----\nQUJD\n-----END PUBLIC KEY-----\n"],
)
def test_unparsable_public_key_is_refused(kit: Kit, content: bytes) -> None:
    with pytest.raises(InvalidRequest, match="could not be parsed"):
        run(kit.service().issue_from_public_key(kit.email_token(), content, b"sig"))
    assert kit.ct.submissions == []


def test_closing_a_service_whose_submitter_holds_nothing(kit: Kit) -> None:
    service = kit.service()
    run(service.aclose())  # LocalCTLog has no aclose(): nothing to release
    run(service.aclose())
