"""Local verification of a passkey registration before Entra sees it. Pure (no I/O).

Every check Entra makes on `POST /users/{id}/authentication/fido2Methods` is made here first, so a
bad credential gets a precise reason instead of Graph's generic 400
(https://learn.microsoft.com/graph/api/authentication-post-fido2methods). Parsing and signature
verification use the fido2 library; each failure names its check.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from fido2.attestation.base import InvalidData, InvalidSignature, UntrustedAttestation
from fido2.attestation.base import verify_x509_chain as _verify_chain
from fido2.attestation.packed import PackedAttestation
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    AttestationObject,
    AuthenticatorAttachment,
    CollectedClientData,
    PublicKeyCredentialType,
)

from shared.domain.mds import TrustAnchors

ENTRA_ORIGIN = "https://login.microsoftonline.com"
ENTRA_RP_ID = "login.microsoftonline.com"
FORMATS = ("packed", "none")
PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, struct.error)


class AttestationRejected(ValueError):
    """A registration failed one check; `check` names it for the problem response."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


@dataclass(frozen=True)
class KeyRestrictions:
    """The tenant's FIDO2 key restrictions (fido2AuthenticationMethodConfiguration.keyRestrictions)."""

    enforced: bool = False
    enforcement_type: str = "block"  # allow | block
    aaguids: frozenset[str] = frozenset()

    @classmethod
    def from_policy(cls, policy: Mapping[str, Any]) -> KeyRestrictions:
        """Read them from Graph's policy resource."""
        raw = policy.get("keyRestrictions") or {}
        return cls(enforced=bool(raw.get("isEnforced")), enforcement_type=str(raw.get("enforcementType") or "block"),
                   aaguids=frozenset(str(a).lower() for a in raw.get("aaGuids") or []))


@dataclass(frozen=True)
class VerifiedCredential:
    """What a verified registration yields."""

    credential_id: str  # base64url
    aaguid: str
    fmt: str
    attestation_type: str
    #: Whether a certificate chain ends in a root of the FIDO metadata; None when there was no chain to
    #: check or no metadata was given.
    trusted: bool | None = None


def parse(credential: Mapping[str, Any]) -> tuple[CollectedClientData, AttestationObject]:
    """The client data and attestation object of a RegistrationResponse (JSON form).

    Checks what the library's RegistrationResponse.from_dict checks (id equal to rawId, the credential
    type, the attachment, both response members) without its generic field-by-field parsing, which
    costs several times the signature check.
    """
    raw_id = credential["rawId"]
    if "id" in credential and credential["id"] != raw_id:
        raise ValueError("id does not match rawId")
    websafe_decode(raw_id)
    PublicKeyCredentialType(credential.get("type", PublicKeyCredentialType.PUBLIC_KEY.value))
    if credential.get("authenticatorAttachment") is not None:
        AuthenticatorAttachment(credential["authenticatorAttachment"])
    extensions = credential.get("clientExtensionResults")
    if extensions is not None and not isinstance(extensions, Mapping):
        raise TypeError("clientExtensionResults must be an object")
    response = credential["response"]
    return (CollectedClientData(websafe_decode(response["clientDataJSON"])),
            AttestationObject(websafe_decode(response["attestationObject"])))


def verify(credential: Mapping[str, Any], *, challenge: bytes, allowed_aaguids: Collection[str] = (),
           restrictions: KeyRestrictions = KeyRestrictions(), known_credential_ids: Collection[str] = (),
           attestation_enforced: bool = False, trust: TrustAnchors | None = None) -> VerifiedCredential:
    """Verify a WebAuthn RegistrationResponse (JSON form) for Entra; AttestationRejected names the failed check.

    With `attestation_enforced`, a packed certificate chain must end in a root that `trust` (a verified
    FIDO MDS3 blob) lists for the authenticator's AAGUID; without `trust` no chain is trusted.
    """
    try:
        client_data, attestation = parse(credential)
    except PARSE_ERRORS as exc:
        # Malformed CBOR or JSON surfaces as any of these from the library; all mean the same to a caller.
        raise AttestationRejected("credential", f"not a WebAuthn RegistrationResponse: {type(exc).__name__}") \
            from None
    if client_data.type != "webauthn.create":
        raise AttestationRejected("clientData.type", f"must be 'webauthn.create', not {client_data.type!r}")
    # Compared in constant time: the time taken must not tell how much of a guessed challenge was right.
    if not hmac.compare_digest(client_data.challenge, challenge):
        raise AttestationRejected("clientData.challenge", "does not match the challenge of this ceremony")
    if client_data.origin != ENTRA_ORIGIN:
        raise AttestationRejected("clientData.origin", f"must be {ENTRA_ORIGIN}, not {client_data.origin!r}")
    auth_data = attestation.auth_data
    if auth_data.rp_id_hash != hashlib.sha256(ENTRA_RP_ID.encode()).digest():
        raise AttestationRejected("authenticatorData.rpIdHash", f"is not the hash of {ENTRA_RP_ID}")
    if not auth_data.is_user_present():
        raise AttestationRejected("authenticatorData.flags.UP", "user presence is required")
    if not auth_data.is_user_verified():
        raise AttestationRejected("authenticatorData.flags.UV", "user verification is required")
    if auth_data.credential_data is None:
        raise AttestationRejected("authenticatorData.attestedCredentialData", "is missing")
    if attestation.fmt not in FORMATS:
        raise AttestationRejected("attestationObject.fmt", f"{attestation.fmt!r} is not supported; use packed or none")
    attestation_type = "none"
    trusted: bool | None = None
    if attestation.fmt == "packed":
        try:
            result = PackedAttestation().verify(attestation.att_stmt, auth_data, client_data.hash)
            if result.trust_path:
                _verify_chain(result.trust_path)
            attestation_type = result.attestation_type.name.lower()
        except InvalidSignature:
            raise AttestationRejected("attestationStatement.sig", "the packed signature does not verify") from None
        except (InvalidData, UntrustedAttestation, ValueError) as exc:
            raise AttestationRejected("attestationStatement", f"invalid packed attestation: {exc}") from None
        except Exception as exc:
            # A damaged statement reaches certificate and key parsers that raise their own types
            # (unsupported algorithm, bad X.509 version, ECDAA); all of them mean an invalid statement.
            raise AttestationRejected("attestationStatement",
                                      f"invalid packed attestation ({type(exc).__name__})") from None
        if result.trust_path and trust is not None:
            trusted = trust.trusts(result, auth_data)
    elif attestation.att_stmt:
        raise AttestationRejected("attestationStatement", "format none must have an empty statement")
    if attestation_enforced and attestation_type in ("none", "self"):
        raise AttestationRejected("attestation", "the tenant enforces attestation: the authenticator must send "
                                                 "a packed statement with a certificate chain")
    aaguid = str(uuid.UUID(bytes=bytes(auth_data.credential_data.aaguid)))
    if attestation_enforced and not trusted:
        if trust is None:
            raise AttestationRejected("attestationStatement.x5c", "the tenant enforces attestation and no FIDO "
                                                                  "metadata was available to check the chain against")
        raise AttestationRejected("attestationStatement.x5c", "the certificate chain does not end in a root that "
                                                              "the FIDO Metadata Service lists for authenticator "
                                                              f"{aaguid}")
    allowed = {a.lower() for a in allowed_aaguids}
    if allowed and aaguid not in allowed:
        raise AttestationRejected("aaguid", f"{aaguid} is not in the connection's allowed list "
                                            "(features.passkeys.allowedAaguids)")
    if restrictions.enforced:
        listed = aaguid in restrictions.aaguids
        if (restrictions.enforcement_type == "allow") != listed:
            raise AttestationRejected("aaguid", f"{aaguid} is blocked by the tenant's FIDO2 key restrictions")
    credential_id = websafe_encode(auth_data.credential_data.credential_id)
    if credential_id in set(known_credential_ids):
        raise AttestationRejected("credentialId", "this credential is already registered")
    return VerifiedCredential(credential_id, aaguid, attestation.fmt, attestation_type, trusted)
