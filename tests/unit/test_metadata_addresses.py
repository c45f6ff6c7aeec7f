"""Federation metadata URLs cannot reach inside the function app's network (SSRF) outside `cloud: local`:
literal addresses and names resolving to private, loopback, link-local or other non-public addresses,
in IPv4, IPv6 and IPv4-in-IPv6 forms, are refused before any connection is made."""

from __future__ import annotations

import ipaddress

import pytest

from shared.adapters.metadata import HttpsMetadataSource, refusal, system_resolver
from shared.errors import InvalidInput, Transient
from shared.services.federation import FederationService, IdpRequest
from tests.fake_repositories import FakeFederationWatch
from tests.fakes import FakeAuditSink, FakeClock

REFUSED = {
    "https://10.0.0.1/m.xml": "private",
    "https://172.16.5.4/m.xml": "private",
    "https://192.168.1.1/m.xml": "private",
    "https://127.0.0.1:8443/m.xml": "loopback",
    "https://169.254.169.254/metadata/instance": "link-local",  # the instance metadata endpoint
    "https://100.64.0.1/m.xml": "not globally reachable",  # shared address space (carrier NAT)
    "https://0.0.0.0/m.xml": "private",
    "https://[::1]/m.xml": "loopback",
    "https://[fe80::1]/m.xml": "link-local",
    "https://[fd00::1]/m.xml": "private",  # unique local
    "https://[::]/m.xml": "",
    "https://[::ffff:127.0.0.1]/m.xml": "loopback",  # IPv4-mapped
    "https://[::ffff:10.1.2.3]/m.xml": "private",
    "https://[::ffff:169.254.169.254]/m.xml": "link-local",
    "https://[2002:a9fe:a9fe::1]/m.xml": "link-local",  # 6to4 around 169.254.169.254
    "https://[ff02::1]/m.xml": "",
}


async def _nowhere(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must not be resolved: it is an address")


@pytest.mark.parametrize(("url", "why"), sorted(REFUSED.items()))
async def test_literal_addresses_inside_are_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await HttpsMetadataSource(resolver=_nowhere).fetch(url)
    assert refused.value.field == "metadataUrl"
    assert f"a {why}" in refused.value.detail
    assert "cloud: local" in refused.value.detail


NAMES = {
    "idp.example": ["10.20.30.40"],
    "rebind.example": ["8.8.8.8", "127.0.0.1"],  # one inside address is enough
    "v6.example": ["2001:4860:4860::8888", "fe80::1%eth0"],
    "mapped.example": ["::ffff:192.168.0.10"],
    "metadata.example": ["169.254.169.254"],
}


@pytest.mark.parametrize("host", sorted(NAMES))
async def test_names_resolving_inside_are_refused(host: str) -> None:
    asked: list[tuple[str, int]] = []

    async def resolver(name: str, port: int) -> list[str]:
        asked.append((name, port))
        return NAMES[name]

    with pytest.raises(InvalidInput, match="resolves to"):
        await HttpsMetadataSource(resolver=resolver).fetch(f"https://{host}:4443/FederationMetadata.xml")
    assert asked == [(host, 4443)]


@pytest.mark.parametrize("url", ["https://2130706433/m.xml", "https://127.1/m.xml", "https://0x7f.1/m.xml",
                                 "https://localhost/m.xml"])
async def test_other_spellings_of_loopback_are_refused_after_resolution(url: str) -> None:
    # The system resolver reads these as 127.0.0.1 (or ::1): the check sees what the socket would reach.
    with pytest.raises(InvalidInput, match="loopback"):
        await HttpsMetadataSource(resolver=system_resolver).fetch(url)


async def test_a_name_that_cannot_be_resolved_is_transient() -> None:
    async def failing(name: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(Transient, match="cannot be resolved"):
        await HttpsMetadataSource(resolver=failing).fetch("https://idp.example/m.xml")


@pytest.mark.parametrize("address", ["8.8.8.8", "20.190.128.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


async def test_the_federation_service_reports_the_refusal_as_the_metadata_problem() -> None:
    service = FederationService(audit=FakeAuditSink(), clock=FakeClock(), watched=FakeFederationWatch(),
                                metadata=HttpsMetadataSource(resolver=_nowhere))
    resolved = await service.resolve(IdpRequest(metadata_url="https://[::ffff:169.254.169.254]/metadata/identity"))
    assert resolved.inputs is None
    assert resolved.error is not None
    assert "::ffff:a9fe:a9fe (169.254.169.254), a link-local address" in resolved.error
