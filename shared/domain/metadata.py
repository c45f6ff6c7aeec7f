"""IdP metadata (WS-Federation and SAML 2.0) read into the values internalDomainFederation takes. Pure.

Both formats are SAML 2.0 metadata documents (an `EntityDescriptor`, possibly inside an
`EntitiesDescriptor`): SAML IdPs publish an `IDPSSODescriptor` with `SingleSignOnService`; WS-Federation
IdPs (AD FS among them) add a `RoleDescriptor` of type `fed:SecurityTokenServiceType` with a
`PassiveRequestorEndpoint`. Signing certificates are the `KeyDescriptor`s whose `use` is `signing` or
absent; the document's own `Signature` is not one of them.
Sources: OASIS "Metadata for the OASIS SAML V2.0" (saml-metadata-2.0-os) and "Web Services Federation
Language 1.2" section 3.1; https://learn.microsoft.com/entra/identity/hybrid/connect/how-to-connect-fed-saml-idp.

XML is parsed with defusedxml, which refuses DTDs, entity expansion and external references.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Literal
from xml.etree.ElementTree import Element  # nosec B405 - only the type; parsing goes through defusedxml

import defusedxml.ElementTree as SafeXml
from defusedxml import DefusedXmlException

MAX_METADATA_BYTES = 1024 * 1024

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
FED = "http://docs.oasis-open.org/wsfed/federation/200706"
WSA = "http://www.w3.org/2005/08/addressing"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"

Protocol = Literal["wsFed", "saml"]


class MetadataError(ValueError):
    """The document is not IdP metadata this bridge can use; the message says why."""


@dataclass(frozen=True)
class IdpMetadata:
    """What an IdP's metadata says, in the words of internalDomainFederation."""

    issuer_uri: str
    protocol: Protocol
    passive_sign_in_uris: tuple[str, ...]
    signing_certificates: tuple[str, ...]  # base64 DER, in document order, without duplicates
    sign_out_uri: str | None = None
    active_sign_in_uri: str | None = None
    saml_sign_in_uris: tuple[str, ...] = field(default=())

    @property
    def passive_sign_in_uri(self) -> str:
        """The sign-in URI to give Entra: WS-Federation's passive endpoint, else SAML's SSO endpoint."""
        return (self.passive_sign_in_uris or self.saml_sign_in_uris or ("",))[0]


def certificate_key(value: str) -> str:
    """A comparable identity of a base64 DER certificate: the SHA-256 of its bytes (whitespace ignored)."""
    text = "".join(value.split())
    try:
        return hashlib.sha256(base64.b64decode(text, validate=True)).hexdigest()
    except (binascii.Error, ValueError):
        return "text:" + text


def _text(element: Element | None) -> str:
    return "".join((element.text or "").split()) if element is not None else ""


def _entity(root: Element, issuer_hint: str | None) -> Element:
    if root.tag == f"{{{MD}}}EntityDescriptor":
        return root
    if root.tag != f"{{{MD}}}EntitiesDescriptor":
        raise MetadataError(f"the document is not SAML 2.0 metadata (root element {root.tag!r}, expected "
                            "md:EntityDescriptor)")
    entities = root.findall(f".//{{{MD}}}EntityDescriptor")
    if not entities:
        raise MetadataError("the md:EntitiesDescriptor holds no md:EntityDescriptor")
    if issuer_hint:
        for entity in entities:
            if entity.get("entityID") == issuer_hint:
                return entity
    if len(entities) > 1:
        raise MetadataError(f"the metadata describes {len(entities)} entities: give issuerUri to choose one")
    return entities[0]


def _signing_certificates(descriptors: list[Element]) -> tuple[str, ...]:
    found: list[str] = []
    keys: set[str] = set()
    for descriptor in descriptors:
        for key in descriptor.findall(f"{{{MD}}}KeyDescriptor"):
            if key.get("use", "signing") != "signing":
                continue
            for cert in key.findall(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"):
                value = _text(cert)
                if value and certificate_key(value) not in keys:
                    keys.add(certificate_key(value))
                    found.append(value)
    return tuple(found)


def parse_metadata(document: bytes | str, *, issuer_hint: str | None = None) -> IdpMetadata:
    """Read WS-Federation or SAML 2.0 IdP metadata; MetadataError names what is missing or unsafe."""
    data = document.encode() if isinstance(document, str) else document
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError(f"the metadata is {len(data)} bytes; at most {MAX_METADATA_BYTES} are read")
    try:
        root = SafeXml.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise MetadataError(f"the metadata was refused as unsafe XML ({type(exc).__name__}): DTDs and entities "
                            "are not allowed") from None
    except SafeXml.ParseError as exc:
        raise MetadataError(f"the metadata is not well-formed XML: {exc}") from None
    entity = _entity(root, issuer_hint)
    issuer = entity.get("entityID") or ""
    if not issuer:
        raise MetadataError("the md:EntityDescriptor has no entityID (the issuer URI)")
    sts = [r for r in entity.findall(f"{{{MD}}}RoleDescriptor") if (r.get(f"{{{XSI}}}type") or "")
           .endswith("SecurityTokenServiceType")]
    idp = entity.findall(f"{{{MD}}}IDPSSODescriptor")
    if not sts and not idp:
        raise MetadataError("the metadata has neither a WS-Federation security token service "
                            "(md:RoleDescriptor fed:SecurityTokenServiceType) nor an md:IDPSSODescriptor")
    passive = tuple(_text(a) for r in sts for a in r.findall(
        f"{{{FED}}}PassiveRequestorEndpoint/{{{WSA}}}EndpointReference/{{{WSA}}}Address") if _text(a))
    active = [_text(a) for r in sts for a in r.findall(
        f"{{{FED}}}SecurityTokenServiceEndpoint/{{{WSA}}}EndpointReference/{{{WSA}}}Address") if _text(a)]
    sso = tuple(s.get("Location") or "" for d in idp for s in d.findall(f"{{{MD}}}SingleSignOnService")
                if s.get("Binding") in (REDIRECT, POST) and s.get("Location"))
    logout = [s.get("Location") or "" for d in idp for s in d.findall(f"{{{MD}}}SingleLogoutService")
              if s.get("Location")]
    certificates = _signing_certificates([*sts, *idp])
    if not certificates:
        raise MetadataError("the metadata publishes no signing certificate (md:KeyDescriptor use=\"signing\")")
    if not passive and not sso:
        raise MetadataError("the metadata has no sign-in endpoint (fed:PassiveRequestorEndpoint or an "
                            "md:SingleSignOnService with the HTTP-Redirect or HTTP-POST binding)")
    return IdpMetadata(issuer_uri=issuer, protocol="wsFed" if passive else "saml", passive_sign_in_uris=passive,
                       signing_certificates=certificates, sign_out_uri=logout[0] if logout else None,
                       active_sign_in_uri=active[0] if active else None, saml_sign_in_uris=sso)
