"""IdP metadata: WS-Federation (AD FS style) and SAML 2.0 documents, and unsafe or incomplete ones."""

from __future__ import annotations

import pytest

from shared.domain.metadata import MetadataError, certificate_key, parse_metadata
from tests.integration.entra.test_federation import idp_certificate


def metadata_xml(issuer: str, certificates: list[str], *, passive: str | None = "https://idp.example/adfs/ls/",
                 sso: str | None = None, signature_certificate: str | None = None) -> str:
    """A metadata document as AD FS (passive endpoint) or a SAML IdP (SSO endpoint) publishes it."""
    keys = "".join(f'<KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data>'
                   f"<X509Certificate>{c}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>"
                   for c in certificates)
    encryption = ('<KeyDescriptor use="encryption"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data>'
                  "<X509Certificate>ZW5jcnlwdGlvbg==</X509Certificate></X509Data></KeyInfo></KeyDescriptor>")
    signature = ("" if signature_certificate is None else
                 '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:KeyInfo><ds:X509Data>'
                 f"<ds:X509Certificate>{signature_certificate}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
                 "</ds:Signature>")
    sts = ("" if passive is None else
           '<RoleDescriptor xsi:type="fed:SecurityTokenServiceType" '
           'protocolSupportEnumeration="http://docs.oasis-open.org/wsfed/federation/200706">'
           f"{keys}{encryption}<fed:SecurityTokenServiceEndpoint><wsa:EndpointReference><wsa:Address>"
           "https://idp.example/adfs/services/trust/2005/usernamemixed</wsa:Address></wsa:EndpointReference>"
           "</fed:SecurityTokenServiceEndpoint><fed:PassiveRequestorEndpoint><wsa:EndpointReference>"
           f"<wsa:Address>{passive}</wsa:Address></wsa:EndpointReference></fed:PassiveRequestorEndpoint>"
           "</RoleDescriptor>")
    idp = ("" if sso is None else
           f'<IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{keys}'
           '<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
           'Location="https://idp.example/logout"/>'
           '<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" Location="https://idp.example/soap"/>'
           f'<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso}"/>'
           "</IDPSSODescriptor>")
    return ('<?xml version="1.0" encoding="utf-8"?>'
            f'<EntityDescriptor ID="_1" entityID="{issuer}" xmlns="urn:oasis:names:tc:SAML:2.0:metadata" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:fed="http://docs.oasis-open.org/wsfed/federation/200706" '
            f'xmlns:wsa="http://www.w3.org/2005/08/addressing">{signature}{sts}{idp}</EntityDescriptor>')


def test_ws_federation_metadata_gives_issuer_passive_endpoint_and_signing_certificates_only() -> None:
    one, two = idp_certificate(), idp_certificate(700)
    meta = parse_metadata(metadata_xml("http://idp.example/adfs/services/trust", [one, two, one],
                                       signature_certificate=idp_certificate()))
    assert meta.issuer_uri == "http://idp.example/adfs/services/trust"
    assert meta.protocol == "wsFed"
    assert meta.passive_sign_in_uri == "https://idp.example/adfs/ls/"
    assert meta.active_sign_in_uri == "https://idp.example/adfs/services/trust/2005/usernamemixed"
    # duplicates, the encryption key and the document's own signature certificate are not signing keys
    assert meta.signing_certificates == (one, two)


def test_saml_metadata_uses_the_redirect_or_post_sso_endpoint() -> None:
    cert = idp_certificate()
    meta = parse_metadata(metadata_xml("https://idp.example/saml", [cert], passive=None,
                                       sso="https://idp.example/sso"))
    assert meta.protocol == "saml"
    assert meta.passive_sign_in_uri == "https://idp.example/sso"
    assert meta.sign_out_uri == "https://idp.example/logout"


def test_wrapped_entities_are_chosen_by_issuer() -> None:
    cert = idp_certificate()
    inner = [metadata_xml(f"https://idp{n}.example/e", [cert]).split("?>", 1)[1] for n in (1, 2)]
    doc = f'<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata">{"".join(inner)}</EntitiesDescriptor>'
    with pytest.raises(MetadataError, match="give issuerUri"):
        parse_metadata(doc)
    assert parse_metadata(doc, issuer_hint="https://idp2.example/e").issuer_uri == "https://idp2.example/e"


@pytest.mark.parametrize(("document", "message"), [
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "unsafe XML"),
    ('<!DOCTYPE x SYSTEM "https://evil.example/x.dtd"><x/>', "unsafe XML"),
    ("<EntityDescriptor", "not well-formed"),
    ("<html/>", "not SAML 2.0 metadata"),
    ('<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata"/>', "no entityID"),
    ('<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="e"/>', "neither"),
])
def test_unsafe_or_incomplete_documents_are_refused_with_the_reason(document: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_metadata(document)


def test_metadata_without_a_signing_certificate_or_endpoint_is_refused() -> None:
    with pytest.raises(MetadataError, match="no signing certificate"):
        parse_metadata(metadata_xml("https://i/e", []))
    with pytest.raises(MetadataError, match="no sign-in endpoint"):
        parse_metadata(metadata_xml("https://i/e", [idp_certificate()], passive=None, sso=None).replace(
            "</EntityDescriptor>", '<IDPSSODescriptor><KeyDescriptor><KeyInfo xmlns="http://www.w3.org/2000/09/'
            f'xmldsig#"><X509Data><X509Certificate>{idp_certificate()}</X509Certificate></X509Data></KeyInfo>'
            "</KeyDescriptor></IDPSSODescriptor></EntityDescriptor>"))


def test_oversized_metadata_is_refused_before_parsing() -> None:
    with pytest.raises(MetadataError, match="at most"):
        parse_metadata(b"<x>" + b" " * (1024 * 1024) + b"</x>")


def test_certificates_compare_without_formatting() -> None:
    cert = idp_certificate()
    assert certificate_key(cert) == certificate_key("\n".join(cert[i:i + 64] for i in range(0, len(cert), 64)))
