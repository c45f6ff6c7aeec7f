"""Local passkey verification against the software authenticator: each check names itself."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from fido2.utils import websafe_encode
from fido2.webauthn import AttestationObject, CollectedClientData
from hypothesis import given, settings
from hypothesis import strategies as st

from local.authenticator import (
    DEFAULT_AAGUID,
    TEST_ROOT_NAME,
    AttestationRoot,
    SoftwareAuthenticator,
    well_known_root,
)
from local.mds import blob, entry, local_blob, local_ca, root_setting
from shared.domain.attestation import AttestationRejected, KeyRestrictions, verify
from shared.domain.mds import TrustAnchors, root_certificate

CHALLENGE = os.urandom(32)
OPTIONS = {"publicKey": {"rp": {"id": "login.microsoftonline.com"}, "challenge": websafe_encode(CHALLENGE)}}


@pytest.mark.parametrize("fmt", ["packed-self", "packed-x5c", "none"])
def test_each_format_verifies(fmt: Any) -> None:
    credential = SoftwareAuthenticator(fmt=fmt).register(OPTIONS)
    result = verify(credential, challenge=CHALLENGE)
    assert result.aaguid == DEFAULT_AAGUID
    assert result.fmt == ("none" if fmt == "none" else "packed")
    assert result.credential_id == credential["id"]


@pytest.mark.parametrize(("make", "check"), [
    (lambda: verify(SoftwareAuthenticator().register(OPTIONS), challenge=b"other"), "clientData.challenge"),
    (lambda: verify(SoftwareAuthenticator(origin="https://evil.example").register(OPTIONS), challenge=CHALLENGE),
     "clientData.origin"),
    (lambda: verify(SoftwareAuthenticator().register(OPTIONS, rp_id="evil.example"), challenge=CHALLENGE),
     "rpIdHash"),
    (lambda: verify(SoftwareAuthenticator(user_verified=False).register(OPTIONS), challenge=CHALLENGE),
     "flags.UV"),
    (lambda: verify(SoftwareAuthenticator().register(OPTIONS), challenge=CHALLENGE,
                    allowed_aaguids=["00000000-0000-0000-0000-000000000001"]), "aaguid"),
    (lambda: verify(SoftwareAuthenticator().register(OPTIONS), challenge=CHALLENGE,
                    restrictions=KeyRestrictions(True, "block", frozenset({DEFAULT_AAGUID}))), "aaguid"),
    (lambda: verify(SoftwareAuthenticator(fmt="none").register(OPTIONS), challenge=CHALLENGE,
                    attestation_enforced=True), "attestation"),
    (lambda: verify({"id": "x"}, challenge=CHALLENGE), "credential"),
])
def test_each_failure_names_its_check(make: Any, check: str) -> None:
    with pytest.raises(AttestationRejected) as caught:
        make()
    assert check in caught.value.check


def test_a_tampered_signature_is_refused() -> None:
    credential = SoftwareAuthenticator().register(OPTIONS)
    # Same type, challenge and origin, one extra member: the signed hash no longer matches.
    altered = CollectedClientData.create("webauthn.create", CHALLENGE, "https://login.microsoftonline.com",
                                         extra="x")
    credential["response"]["clientDataJSON"] = websafe_encode(altered)
    with pytest.raises(AttestationRejected, match="sig"):
        verify(credential, challenge=CHALLENGE)


def test_a_known_credential_is_refused() -> None:
    credential = SoftwareAuthenticator().register(OPTIONS)
    with pytest.raises(AttestationRejected, match="already registered"):
        verify(credential, challenge=CHALLENGE, known_credential_ids=[credential["id"]])


def _decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _with(credential: dict[str, Any], **response: str) -> dict[str, Any]:
    return {**credential, "response": {**credential["response"], **response}}


def _restatement(credential: dict[str, Any], fmt: str, statement: dict[str, Any]) -> dict[str, Any]:
    original = AttestationObject(_decode(credential["response"]["attestationObject"]))
    rebuilt = AttestationObject.create(fmt, original.auth_data, statement)
    return _with(credential, attestationObject=websafe_encode(bytes(rebuilt)))


def test_missing_user_presence_is_refused() -> None:
    with pytest.raises(AttestationRejected, match=r"flags\.UP"):
        verify(SoftwareAuthenticator(user_present=False).register(OPTIONS), challenge=CHALLENGE)


def test_an_assertion_is_not_a_registration() -> None:
    credential = SoftwareAuthenticator().register(OPTIONS)
    client_data = CollectedClientData.create("webauthn.get", CHALLENGE, "https://login.microsoftonline.com")
    with pytest.raises(AttestationRejected, match=r"clientData\.type"):
        verify(_with(credential, clientDataJSON=websafe_encode(bytes(client_data))), challenge=CHALLENGE)


def test_other_formats_and_stray_statements_are_refused() -> None:
    credential = SoftwareAuthenticator(fmt="none").register(OPTIONS)
    with pytest.raises(AttestationRejected, match=r"attestationObject\.fmt"):
        verify(_restatement(credential, "fido-u2f", {}), challenge=CHALLENGE)
    with pytest.raises(AttestationRejected, match="empty statement"):
        verify(_restatement(credential, "none", {"alg": -7}), challenge=CHALLENGE)


@pytest.fixture(scope="module")
def anchors() -> TrustAnchors:
    """The local stack's test MDS blob (the software authenticator's root), verified under the local CA."""
    return TrustAnchors.from_blob(local_blob(), root_certificate(root_setting()))


def test_enforced_attestation_accepts_a_certificate_chain_only(anchors: TrustAnchors) -> None:
    result = verify(SoftwareAuthenticator(fmt="packed-x5c").register(OPTIONS), challenge=CHALLENGE,
                    attestation_enforced=True, trust=anchors)
    assert result.attestation_type == "basic"
    assert result.trusted is True
    with pytest.raises(AttestationRejected, match="enforces attestation"):
        verify(SoftwareAuthenticator(fmt="packed-self").register(OPTIONS), challenge=CHALLENGE,
               attestation_enforced=True)


@pytest.mark.parametrize("root", [AttestationRoot.generate(), AttestationRoot.generate(TEST_ROOT_NAME)],
                         ids=["unknown-root", "same-name-other-key"])
def test_enforced_attestation_refuses_a_chain_from_a_self_made_root(anchors: TrustAnchors,
                                                                    root: AttestationRoot) -> None:
    # The chain verifies on its own (leaf signed by its root, signature by the leaf): only the metadata
    # can tell that nobody vouches for the root, even one named like the listed root.
    credential = SoftwareAuthenticator(fmt="packed-x5c", root=root).register(OPTIONS)
    assert verify(credential, challenge=CHALLENGE).attestation_type == "basic"
    with pytest.raises(AttestationRejected) as caught:
        verify(credential, challenge=CHALLENGE, attestation_enforced=True, trust=anchors)
    assert caught.value.check == "attestationStatement.x5c"
    assert DEFAULT_AAGUID in caught.value.detail
    # Not enforced: accepted, and reported as untrusted rather than attested.
    assert verify(credential, challenge=CHALLENGE, trust=anchors).trusted is False


@pytest.mark.parametrize("chain", ["leaf-only", "listed-root-appended"])
def test_a_forged_leaf_cannot_borrow_the_listed_root(anchors: TrustAnchors, chain: str) -> None:
    # The attacker's leaf names the listed root as its issuer but is signed by their own key; they send it
    # alone, or followed by the genuine listed root certificate.
    forger = AttestationRoot.generate(TEST_ROOT_NAME)
    credential = SoftwareAuthenticator(fmt="packed-x5c", root=forger).register(OPTIONS)
    statement = AttestationObject(_decode(credential["response"]["attestationObject"])).att_stmt
    leaf = statement["x5c"][0]
    x5c = [leaf] if chain == "leaf-only" else [leaf, well_known_root().der]
    forged = _restatement(credential, "packed", {**statement, "x5c": x5c})
    with pytest.raises(AttestationRejected) as caught:
        verify(forged, challenge=CHALLENGE, attestation_enforced=True, trust=anchors)
    assert caught.value.check.startswith("attestationStatement")


def test_enforced_attestation_without_metadata_trusts_no_chain() -> None:
    with pytest.raises(AttestationRejected, match="no FIDO metadata") as caught:
        verify(SoftwareAuthenticator(fmt="packed-x5c").register(OPTIONS), challenge=CHALLENGE,
               attestation_enforced=True)
    assert caught.value.check == "attestationStatement.x5c"


def test_a_listed_root_for_another_aaguid_is_not_trusted(anchors: TrustAnchors) -> None:
    # The root is in the blob, but for the software authenticator's AAGUID only.
    credential = SoftwareAuthenticator(fmt="packed-x5c", aaguid="cb69481e-8ff7-4039-93ec-0a2729a154a8") \
        .register(OPTIONS)
    with pytest.raises(AttestationRejected, match="cb69481e"):
        verify(credential, challenge=CHALLENGE, attestation_enforced=True, trust=anchors)


def test_the_challenge_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from shared.domain import attestation

    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(attestation.hmac, "compare_digest", compare_digest)
    credential = SoftwareAuthenticator().register(OPTIONS)
    verify(credential, challenge=CHALLENGE)
    with pytest.raises(AttestationRejected, match=r"clientData\.challenge"):
        verify(credential, challenge=CHALLENGE[:-1] + bytes([CHALLENGE[-1] ^ 1]))
    assert compared == [(CHALLENGE, CHALLENGE), (CHALLENGE, CHALLENGE[:-1] + bytes([CHALLENGE[-1] ^ 1]))]


def test_an_allow_list_restriction_admits_only_listed_keys() -> None:
    allow = KeyRestrictions(True, "allow", frozenset({DEFAULT_AAGUID}))
    assert verify(SoftwareAuthenticator().register(OPTIONS), challenge=CHALLENGE, restrictions=allow)
    with pytest.raises(AttestationRejected, match="key restrictions"):
        verify(SoftwareAuthenticator(aaguid="cb69481e-8ff7-4039-93ec-0a2729a154a8").register(OPTIONS),
               challenge=CHALLENGE, restrictions=allow)


def test_a_chain_from_another_authenticator_is_refused() -> None:
    credential = SoftwareAuthenticator(fmt="packed-x5c").register(OPTIONS)
    other = SoftwareAuthenticator(fmt="packed-x5c").register(OPTIONS)
    mine = AttestationObject(_decode(credential["response"]["attestationObject"]))
    theirs = AttestationObject(_decode(other["response"]["attestationObject"]))
    with pytest.raises(AttestationRejected, match="attestationStatement"):
        verify(_restatement(credential, "packed", {**mine.att_stmt, "x5c": theirs.att_stmt["x5c"]}),
               challenge=CHALLENGE)


FUZZ_BASE = SoftwareAuthenticator(fmt="packed-x5c").register(OPTIONS)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["attestationObject", "clientDataJSON"]), position=st.integers(min_value=0),
       value=st.integers(min_value=0, max_value=255), cut=st.booleans())
def test_damaged_input_is_only_ever_rejected(field: str, position: int, value: int, cut: bool) -> None:
    raw = bytearray(_decode(FUZZ_BASE["response"][field]))
    position %= len(raw)
    if cut:
        del raw[position:]
    elif raw[position] == value:
        return
    else:
        raw[position] = value
    try:
        verify(_with(FUZZ_BASE, **{field: websafe_encode(bytes(raw))}), challenge=CHALLENGE)
    except AttestationRejected:
        return
    # A change that verifies can only have touched bytes no check covers (e.g. clientData extras).
    assert field == "clientDataJSON" or not cut


@pytest.mark.parametrize("status", ["REVOKED", "ATTESTATION_KEY_COMPROMISE"])
def test_a_root_the_metadata_marks_revoked_or_compromised_is_not_trusted(status: str) -> None:
    key, ca = local_ca()
    credential = SoftwareAuthenticator(fmt="packed-x5c").register(OPTIONS)
    statement = AttestationObject(_decode(credential["response"]["attestationObject"])).att_stmt
    listed = entry(DEFAULT_AAGUID, [well_known_root().der], status=status)
    if status == "ATTESTATION_KEY_COMPROMISE":
        # The report names the compromised certificate: this authenticator's attestation certificate.
        listed["statusReports"] = [{**listed["statusReports"][0],  # type: ignore[index]
                                    "certificate": base64.b64encode(statement["x5c"][0]).decode()}]
    anchors = TrustAnchors.from_blob(blob([listed], issuer_key=key, issuer=ca), root_certificate(root_setting()))
    with pytest.raises(AttestationRejected) as caught:
        verify(credential, challenge=CHALLENGE, attestation_enforced=True, trust=anchors)
    assert caught.value.check == "attestationStatement.x5c"
