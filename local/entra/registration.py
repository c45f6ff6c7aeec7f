"""The simulator's own checks of a FIDO2 registration (`POST /users/{id}/authentication/fido2Methods`).

Written from the WebAuthn registration steps (https://www.w3.org/TR/webauthn-2/#sctn-registering-a-new-credential)
and the options the simulator issues (authenticatorSelection.userVerification "required", pubKeyCredParams
ES256 and RS256, attestation "direct"; https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions),
on the fido2 library's public API only. It shares no code with the bridge's verifier
(shared/domain/attestation.py): a fault in one is caught by the other, since the bridge's passkey tests go
through both.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from fido2.attestation.base import (
    AttestationResult,
    AttestationVerifier,
    InvalidData,
    InvalidSignature,
    NoneAttestation,
    UntrustedAttestation,
)
from fido2.attestation.packed import PackedAttestation
from fido2.utils import websafe_encode
from fido2.webauthn import AttestationObject, AuthenticatorData, CollectedClientData

ORIGIN = "https://login.microsoftonline.com"
RP_ID = "login.microsoftonline.com"
#: The pubKeyCredParams of the creation options: ES256 and RS256.
ALGORITHMS = (-7, -257)
#: The statement formats the simulator accepts: packed (self or with a certificate chain) and none.
FORMATS = {"packed": PackedAttestation(), "none": NoneAttestation()}


class Refused(ValueError):
    """A registration Entra would refuse; the message names the check."""


@dataclass(frozen=True)
class Registered:
    """What a registration that passed every check yields."""

    credential_id: str  # base64url, no padding
    aaguid: str
    #: Whether a packed certificate chain ends in a root the served metadata lists for the AAGUID.
    attested: bool


class MetadataRoots(AttestationVerifier):
    """Trust: the attestation roots each AAGUID's metadata entry lists (the blob the simulator serves)."""

    def __init__(self, roots: Mapping[str, Sequence[bytes]]) -> None:
        super().__init__([PackedAttestation()])
        self._roots = {k.lower(): list(v) for k, v in roots.items()}

    def ca_lookup(self, attestation_result: AttestationResult, auth_data: AuthenticatorData) -> bytes | None:
        if not attestation_result.trust_path or auth_data.credential_data is None:
            return None
        aaguid = str(uuid.UUID(bytes=bytes(auth_data.credential_data.aaguid)))
        issuer = x509.load_der_x509_certificate(attestation_result.trust_path[-1]).issuer
        for root in self._roots.get(aaguid, []):
            if x509.load_der_x509_certificate(root).subject == issuer:
                return root
        return None


def check(client_data: CollectedClientData, attestation: AttestationObject, *, raw_id: bytes, challenge: bytes,
          roots: Mapping[str, Sequence[bytes]], attestation_enforced: bool, restrictions: Mapping[str, Any],
          known: Collection[str]) -> Registered:
    """Every check of a parsed registration, in the order WebAuthn gives them; Refused names the first to fail."""
    if client_data.type != CollectedClientData.TYPE.CREATE:
        raise Refused(f"clientDataJSON.type must be webauthn.create, not {client_data.type!r}")
    if not hmac.compare_digest(client_data.challenge, challenge):
        raise Refused("clientDataJSON.challenge is not the challenge issued")
    if client_data.origin != ORIGIN:
        raise Refused(f"clientDataJSON.origin must be {ORIGIN}")
    auth_data = attestation.auth_data
    if not hmac.compare_digest(auth_data.rp_id_hash, hashlib.sha256(RP_ID.encode()).digest()):
        raise Refused(f"authenticatorData.rpIdHash is not the hash of the rp id {RP_ID}")
    if not auth_data.is_user_present():
        raise Refused("authenticatorData flags: user presence (UP) is required")
    if not auth_data.is_user_verified():
        raise Refused("authenticatorData flags: user verification (UV) is required")
    attested = auth_data.credential_data
    if attested is None or not auth_data.is_attested():
        raise Refused("authenticatorData has no attested credential data")
    if attested.credential_id != raw_id:
        raise Refused("the credential id of authenticatorData is not the credential's rawId")
    if attested.public_key.ALGORITHM not in ALGORITHMS:
        raise Refused(f"the credential's algorithm {attested.public_key.ALGORITHM} was not offered")
    statement = FORMATS.get(attestation.fmt)
    if statement is None:
        raise Refused(f"attestation format {attestation.fmt!r} is not accepted; use packed or none")
    try:
        result = statement.verify(attestation.att_stmt, auth_data, client_data.hash)
    except (InvalidData, InvalidSignature, UntrustedAttestation) as exc:
        raise Refused(f"the {attestation.fmt} attestation statement does not verify "
                      f"({type(exc).__name__}: signature or statement)") from None
    except Exception as exc:
        # A damaged statement reaches certificate and key parsers that raise their own types.
        raise Refused(f"the {attestation.fmt} attestation statement is malformed ({type(exc).__name__})") from None
    aaguid = str(uuid.UUID(bytes=bytes(attested.aaguid)))
    trusted = _chain_trusted(attestation, client_data, roots, result)
    if attestation_enforced and not result.trust_path:
        raise Refused("the tenant enforces attestation: a packed statement with a certificate chain is required")
    if attestation_enforced and not trusted:
        raise Refused(f"the attestation certificate chain (x5c) does not end in a root listed for {aaguid}")
    if restrictions.get("isEnforced"):
        listed = aaguid in {str(a).lower() for a in restrictions.get("aaGuids") or []}
        if (restrictions.get("enforcementType") == "allow") != listed:
            raise Refused(f"authenticator {aaguid} is not permitted by the key restrictions")
    credential_id = websafe_encode(attested.credential_id)
    if credential_id in known:
        raise Refused("the credential is already registered")
    return Registered(credential_id, aaguid, trusted)


def _chain_trusted(attestation: AttestationObject, client_data: CollectedClientData,
                   roots: Mapping[str, Sequence[bytes]], result: AttestationResult) -> bool:
    if not result.trust_path:
        return False
    try:
        MetadataRoots(roots).verify_attestation(attestation, client_data.hash)
    except Exception:
        # Untrusted, or a certificate that does not parse: not attested either way.
        return False
    return True
