"""The simulator refuses a bad FIDO2 registration as Entra does (authentication-post-fido2methods: 400
invalidRequest), with checks of its own that share no code with the bridge's verifier."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fido2 import cbor

from local.authenticator import SoftwareAuthenticator
from tests.conformance.entra_fido2.graph_calls import b64url, documented_body, graph_error, options_for

ROOT = Path(__file__).resolve().parents[3]


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def with_client_data(credential: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The credential with members of its clientDataJSON changed after the authenticator answered."""
    client_data = json.loads(b64url(credential["response"]["clientDataJSON"]))
    client_data.update(changes)
    response = {**credential["response"], "clientDataJSON": encode(json.dumps(client_data).encode())}
    return {**credential, "response": response}


def with_attestation(credential: dict[str, Any], change: Any) -> dict[str, Any]:
    """The credential with its attestation object (decoded CBOR) changed by `change`."""
    attestation = cbor.decode(b64url(credential["response"]["attestationObject"]))
    change(attestation)
    response = {**credential["response"], "attestationObject": encode(cbor.encode(attestation))}
    return {**credential, "response": response}


def flip_signature(attestation: dict[str, Any]) -> None:
    sig = bytearray(attestation["attStmt"]["sig"])
    sig[len(sig) // 2] ^= 0x01
    attestation["attStmt"]["sig"] = bytes(sig)


def refused(graph: httpx.Client, user: str, credential: dict[str, Any]) -> str:
    answer = graph.post(f"/v1.0/users/{user}/authentication/fido2Methods", json=documented_body(credential))
    return graph_error(answer, 400, "invalidRequest")


def registered(graph: httpx.Client, user: str, credential: dict[str, Any]) -> None:
    answer = graph.post(f"/v1.0/users/{user}/authentication/fido2Methods", json=documented_body(credential))
    assert answer.status_code == 201, answer.text
    graph.delete(f"/v1.0/users/{user}/authentication/fido2Methods/{answer.json()['id']}")


def test_a_tampered_challenge_is_refused_and_the_issued_one_still_works(graph: httpx.Client,
                                                                       users: list[str]) -> None:
    options = options_for(graph, users[0])
    credential = SoftwareAuthenticator(fmt="packed-self").register(options)
    forged = with_client_data(credential, challenge=encode(b"\x00" * 32))
    assert "challenge" in refused(graph, users[0], forged)
    # A refusal does not use the challenge up.
    registered(graph, users[0], credential)


def test_client_data_moved_to_another_issued_challenge_breaks_the_signature(graph: httpx.Client,
                                                                          users: list[str]) -> None:
    signed_for = options_for(graph, users[0])
    other = options_for(graph, users[0])["publicKey"]["challenge"]
    moved = with_client_data(SoftwareAuthenticator(fmt="packed-self").register(signed_for), challenge=other)
    assert "does not verify" in refused(graph, users[0], moved)


@pytest.mark.parametrize("fmt", ["packed-self", "packed-x5c"])
def test_a_bad_signature_is_refused(graph: httpx.Client, users: list[str], fmt: str) -> None:
    credential = SoftwareAuthenticator(fmt=fmt).register(options_for(graph, users[0]))  # type: ignore[arg-type]
    assert "does not verify" in refused(graph, users[0], with_attestation(credential, flip_signature))


def test_a_wrong_origin_or_rp_is_refused(graph: httpx.Client, users: list[str]) -> None:
    phished = SoftwareAuthenticator(origin="https://login.microsoftonline.com.example.net").register(
        options_for(graph, users[0]))
    assert "origin" in refused(graph, users[0], phished)
    other_rp = SoftwareAuthenticator().register(options_for(graph, users[0]), rp_id="login.example.net")
    assert "rpIdHash" in refused(graph, users[0], other_rp)


def test_an_assertion_is_not_a_registration(graph: httpx.Client, users: list[str]) -> None:
    credential = SoftwareAuthenticator(fmt="none").register(options_for(graph, users[0]))
    assert "webauthn.create" in refused(graph, users[0], with_client_data(credential, type="webauthn.get"))


def test_user_presence_and_verification_are_required(graph: httpx.Client, users: list[str]) -> None:
    # creationOptions asks for userVerification "required".
    absent = SoftwareAuthenticator(user_present=False).register(options_for(graph, users[0]))
    assert "UP" in refused(graph, users[0], absent)
    unverified = SoftwareAuthenticator(user_verified=False).register(options_for(graph, users[0]))
    assert "UV" in refused(graph, users[0], unverified)


def test_only_packed_and_none_statements_are_accepted(graph: httpx.Client, users: list[str]) -> None:
    credential = SoftwareAuthenticator(fmt="none").register(options_for(graph, users[0]))

    def as_u2f(attestation: dict[str, Any]) -> None:
        attestation["fmt"] = "fido-u2f"

    def none_with_statement(attestation: dict[str, Any]) -> None:
        attestation["attStmt"] = {"sig": b"\x01" * 8}

    assert "format" in refused(graph, users[0], with_attestation(credential, as_u2f))
    assert "does not verify" in refused(graph, users[0], with_attestation(credential, none_with_statement))
    registered(graph, users[0], credential)


def test_a_credential_id_other_than_the_authenticators_is_refused(graph: httpx.Client, users: list[str]) -> None:
    credential = SoftwareAuthenticator(fmt="none").register(options_for(graph, users[0]))
    swapped = {**credential, "id": encode(b"\x07" * 32), "rawId": encode(b"\x07" * 32)}
    assert "rawId" in refused(graph, users[0], swapped)


def test_the_checks_share_no_code_with_the_bridge() -> None:
    # The simulator is the bridge's test oracle: verifying with the bridge's own code would check nothing.
    for path in [*(ROOT / "local" / "entra").rglob("*.py"), ROOT / "local" / "mds.py",
                 ROOT / "local" / "authenticator.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n == "shared" or n.startswith("shared.")], path
