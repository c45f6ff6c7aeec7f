"""DomainDirectory (federation) and TenantDirectory (the connection test) on the in-memory tenant and on the
Graph adapters against the simulator: domains, the federation configuration created, updated and deleted,
who is on a domain, the bridge's access, the organization and its roles."""

from __future__ import annotations

import pytest

from shared.errors import Conflict, InvalidInput
from tests.fixtures.graph_contracts import GraphSubject

FEDERATION = {"displayName": "Contract IdP", "issuerUri": "https://idp.contract.example/issuer",
              "passiveSignInUri": "https://idp.contract.example/sso", "signOutUri": "https://idp.contract.example/out",
              "preferredAuthenticationProtocol": "saml", "signingCertificate": "MIIBcontract"}


async def test_domains_are_read(graph: GraphSubject) -> None:
    names = {str(d["id"]) for d in await graph.domains.domains()}
    assert graph.admin.domain in names
    found = await graph.domains.domain(graph.admin.domain)
    assert found is not None
    assert found["authenticationType"] == "Managed"
    assert found["isVerified"] is True
    assert not any(key.startswith("@odata") for key in found)
    assert await graph.domains.domain("nowhere.invalid") is None
    assert await graph.domains.federation(graph.admin.domain) is None


async def test_federation_is_created_updated_and_deleted(graph: GraphSubject) -> None:
    domain = graph.admin.domain
    created = await graph.domains.create_federation(domain, FEDERATION)
    try:
        assert created.status == 201
        assert created.body is not None
        config_id = str(created.body["id"])
        federation = await graph.domains.federation(domain)
        assert federation is not None
        assert federation["id"] == config_id
        assert federation["issuerUri"] == FEDERATION["issuerUri"]
        assert federation["signingCertificate"] == FEDERATION["signingCertificate"]
        assert (await graph.domains.domain(domain) or {})["authenticationType"] == "Federated"
        with pytest.raises(Conflict):
            await graph.domains.create_federation(domain, FEDERATION)

        updated = await graph.domains.update_federation(domain, config_id, {"nextSigningCertificate": "MIIBnext"})
        assert updated.status in (200, 204)
        after = await graph.domains.federation(domain) or {}
        assert after["nextSigningCertificate"] == "MIIBnext"
        assert after["signingCertificate"] == FEDERATION["signingCertificate"]
        with pytest.raises(InvalidInput):
            await graph.domains.update_federation(domain, config_id, {"noSuchProperty": "x"})
    finally:
        current = await graph.domains.federation(domain)
        if current is not None:
            deleted = await graph.domains.delete_federation(domain, str(current["id"]))
            assert deleted.status == 204
    assert await graph.domains.federation(domain) is None
    assert (await graph.domains.domain(domain) or {})["authenticationType"] == "Managed"


async def test_the_initial_domain_cannot_be_federated(graph: GraphSubject) -> None:
    initial = next(str(d["id"]) for d in await graph.domains.domains() if d.get("isInitial"))
    with pytest.raises(InvalidInput):
        await graph.domains.create_federation(initial, FEDERATION)


async def test_admins_and_synced_users_on_a_domain(graph: GraphSubject) -> None:
    before_admins, before_synced = await graph.domains.people_on_domain(graph.admin.domain)
    admin = graph.unique("globaladmin")
    admin_id = await graph.admin.add_user(admin)
    await graph.admin.add_user(graph.unique("synced"), onPremisesSyncEnabled=True)
    await graph.admin.grant_role("Global Administrator", admin_id)
    try:
        admins, synced = await graph.domains.people_on_domain(graph.admin.domain)
        assert set(admins) - set(before_admins) == {f"{admin}@{graph.admin.domain}"}
        assert synced == before_synced + 1
    finally:
        await graph.admin.grant_role("Global Administrator", admin_id, remove=True)


async def test_the_bridges_access(graph: GraphSubject) -> None:
    access = await graph.domains.app_access()
    assert "Domain-InternalFederation.ReadWrite.All" in access.permissions
    assert "User Administrator" in access.directory_roles


async def test_the_organization_and_its_roles(graph: GraphSubject) -> None:
    organization = await graph.organization.organization()
    assert organization.id
    assert organization.display_name == "Contoso Demo"
    roles = {r.display_name: r.id for r in await graph.organization.directory_roles()}
    assert graph.app_principal in await graph.organization.role_member_ids(roles["User Administrator"])
    assert await graph.organization.passkey_policy() == await graph.passkeys.policy()
