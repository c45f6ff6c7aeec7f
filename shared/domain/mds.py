"""Trust anchors from the FIDO Metadata Service (MDS3). Pure: a blob handed in is verified and read.

The MDS3 blob is a JWT signed by a certificate chain ending in the FIDO Alliance's root; fido2's
`fido2.mds3` verifies it (parse_blob) and matches a packed attestation's certificate chain to the root
its metadata statement lists for the authenticator's AAGUID (MdsAttestationVerifier). Entries marked
REVOKED are left out, and a chain whose key is marked ATTESTATION_KEY_COMPROMISE is refused
(https://fidoalliance.org/metadata/, https://fidoalliance.org/specs/mds/fido-metadata-service-v3.0-ps-20210518.html).
Fetching the blob and keeping it are the adapter's (shared/adapters/mds.py).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature as BadSignature
from cryptography.hazmat.primitives.serialization import Encoding
from fido2.attestation.base import AttestationResult, InvalidSignature, verify_x509_chain
from fido2.mds3 import MdsAttestationVerifier, MetadataBlobPayload, parse_blob
from fido2.webauthn import AuthenticatorData

#: The root the FIDO Alliance signs MDS3 with: GlobalSign Root CA - R3
#: (https://fidoalliance.org/metadata/, "MDS3 root certificate"; SHA-256 fingerprint
#: CB:B5:22:D7:B7:F1:27:AD:6A:01:13:86:5B:DF:1C:D4:10:2E:7D:07:59:AF:63:5A:7C:F4:72:0D:C9:63:C5:3B).
FIDO_MDS_ROOT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIDXzCCAkegAwIBAgILBAAAAAABIVhTCKIwDQYJKoZIhvcNAQELBQAwTDEgMB4G
A1UECxMXR2xvYmFsU2lnbiBSb290IENBIC0gUjMxEzARBgNVBAoTCkdsb2JhbFNp
Z24xEzARBgNVBAMTCkdsb2JhbFNpZ24wHhcNMDkwMzE4MTAwMDAwWhcNMjkwMzE4
MTAwMDAwWjBMMSAwHgYDVQQLExdHbG9iYWxTaWduIFJvb3QgQ0EgLSBSMzETMBEG
A1UEChMKR2xvYmFsU2lnbjETMBEGA1UEAxMKR2xvYmFsU2lnbjCCASIwDQYJKoZI
hvcNAQEBBQADggEPADCCAQoCggEBAMwldpB5BngiFvXAg7aEyiie/QV2EcWtiHL8
RgJDx7KKnQRfJMsuS+FggkbhUqsMgUdwbN1k0ev1LKMPgj0MK66X17YUhhB5uzsT
gHeMCOFJ0mpiLx9e+pZo34knlTifBtc+ycsmWQ1z3rDI6SYOgxXG71uL0gRgykmm
KPZpO/bLyCiR5Z2KYVc3rHQU3HTgOu5yLy6c+9C7v/U9AOEGM+iCK65TpjoWc4zd
QQ4gOsC0p6Hpsk+QLjJg6VfLuQSSaGjlOCZgdbKfd/+RFO+uIEn8rUAVSNECMWEZ
XriX7613t2Saer9fwRPvm2L7DWzgVGkWqQPabumDk3F2xmmFghcCAwEAAaNCMEAw
DgYDVR0PAQH/BAQDAgEGMA8GA1UdEwEB/wQFMAMBAf8wHQYDVR0OBBYEFI/wS3+o
LkUkrk1Q+mOai97i3Ru8MA0GCSqGSIb3DQEBCwUAA4IBAQBLQNvAUKr+yAzv95ZU
RUm7lgAJQayzE4aGKAczymvmdLm6AC2upArT9fHxD4q/c2dKg8dEe3jgr25sbwMp
jjM5RcOO5LlXbKr8EpbsU8Yt5CRsuZRj+9xTaGdWPoO4zzUhw8lo/s7awlOqzJCK
6fBdRoyV3XpYKBovHd7NADdBj+1EbddTKJd+82cEHhXXipa0095MJ6RMG3NzdvQX
mcIfeg7jLQitChws/zyrVQ4PkX4268NXSb7hLi18YIvDQVETI53O9zJrlAGomecs
Mx86OyXShkDOOyyGeMlhLxS67ttVb9+E7gUJTb0o2HLO02JQZR7rkpeDMdmztcpH
WD9f
-----END CERTIFICATE-----
"""
#: Where the FIDO Alliance publishes the blob.
FIDO_MDS_URL = "https://mds3.fidoalliance.org/"


class MetadataRejected(ValueError):
    """A blob that is not a validly signed MDS3 blob under the configured root."""


def root_certificate(value: str) -> bytes:
    """The DER bytes of a root given as PEM text or as base64 DER (one line, as app settings hold it)."""
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            return x509.load_pem_x509_certificate(text.encode()).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True)).public_bytes(Encoding.DER)
    except (ValueError, binascii.Error) as exc:
        raise MetadataRejected(f"not a PEM or base64 DER certificate ({type(exc).__name__})") from None


@dataclass(frozen=True)
class TrustAnchors:
    """A verified MDS3 blob: its serial number, next update, and the verifier built on its entries."""

    no: int
    next_update: dt.date
    entries: int
    verifier: MdsAttestationVerifier

    @classmethod
    def from_blob(cls, blob: bytes, root_der: bytes) -> TrustAnchors:
        """Verify the blob's signature chain up to `root_der` and read its entries; MetadataRejected otherwise."""
        try:
            payload: MetadataBlobPayload = parse_blob(blob, root_der)
        except (InvalidSignature, BadSignature):
            raise MetadataRejected("the blob's signature or certificate chain does not verify under the MDS "
                                   "root certificate") from None
        except (ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError, binascii.Error) as exc:
            raise MetadataRejected(f"not an MDS3 blob ({type(exc).__name__})") from None
        except Exception as exc:
            # Certificate and key parsers raise their own types for damaged input; all mean a bad blob.
            raise MetadataRejected(f"not a verifiable MDS3 blob ({type(exc).__name__})") from None
        return cls(no=payload.no, next_update=payload.next_update, entries=len(payload.entries),
                   verifier=MdsAttestationVerifier(payload))

    def trusts(self, result: AttestationResult, auth_data: AuthenticatorData) -> bool:
        """Whether the attestation's chain ends in a root the blob lists for the authenticator (by AAGUID)."""
        trust_path: Sequence[bytes] = result.trust_path
        if not trust_path:
            return False
        try:
            root = self.verifier.ca_lookup(result, auth_data)  # type: ignore[no-untyped-call]
            if not root:
                return False
            verify_x509_chain([*trust_path, root])
        except (InvalidSignature, BadSignature):
            return False
        except Exception:
            # A chain whose certificates do not parse cannot be trusted.
            return False
        return True
