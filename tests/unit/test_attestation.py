"""Local passkey verification against the software authenticator: each check names itself."""

from __future__ import annotations

import os
from typing import Any

import pytest
from fido2.utils import websafe_encode
from fido2.webauthn import CollectedClientData

from local.authenticator import DEFAULT_AAGUID, SoftwareAuthenticator
from shared.domain.attestation import AttestationRejected, KeyRestrictions, verify

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
