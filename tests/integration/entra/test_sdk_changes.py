"""The real msgraph-sdk against the simulator's delta queries, group writes and licenses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.identity.aio import ClientSecretCredential
from kiota_abstractions.api_error import APIError
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph.generated.models.assigned_license import AssignedLicense
from msgraph.generated.models.group import Group
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
    AssignLicensePostRequestBody,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from local.entra.demo import GRAPH_PERMISSIONS
from shared.adapters.graph import graph_http_client
from tests.fixtures.entra import EntraFixture

GRAPH = "https://graph.microsoft.com/.default"


@pytest.fixture
async def client(entra: EntraFixture, tls_files: Any) -> AsyncIterator[GraphServiceClient]:
    credential = ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH], allowed_hosts=["127.0.0.1"])
    http = graph_http_client(tls_files.client_context())
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{entra.url}/v1.0"
    yield GraphServiceClient(request_adapter=adapter)
    await http.aclose()
    await credential.close()


def ref(entra: EntraFixture, object_id: str) -> ReferenceCreate:
    return ReferenceCreate(odata_id=f"https://graph.microsoft.com/v1.0/directoryObjects/{object_id}")


async def test_users_delta_pages_with_the_sdk_then_reports_a_change(client: GraphServiceClient,
                                                                    entra: EntraFixture) -> None:
    page = await client.users.delta.get()
    seen: list[str] = []
    while page is not None and page.odata_next_link:
        seen.extend(u.id for u in page.value or [] if u.id)
        page = await client.users.delta.with_url(page.odata_next_link).get()
    assert page is not None
    assert page.odata_delta_link
    seen.extend(u.id for u in page.value or [] if u.id)
    assert len(set(seen)) >= 300
    created = entra.admin("POST", "/_sim/users", {"userPrincipalName": f"delta.{uuid.uuid4().hex[:8]}@"
                                                                      "bridge-demo.example"})
    changes = await client.users.delta.with_url(page.odata_delta_link).get()
    assert changes is not None
    assert [u.id for u in changes.value or []] == [created["id"]]
    entra.admin("DELETE", f"/_sim/users/{created['id']}")


async def test_group_create_ref_add_remove_and_groups_delta(client: GraphServiceClient, entra: EntraFixture) -> None:
    users = await client.users.get()
    assert users is not None
    ids = [u.id for u in (users.value or [])[:3] if u.id]
    group = await client.groups.post(Group(display_name="SDK Pilot", mail_nickname="sdkpilot", mail_enabled=False,
                                           security_enabled=True))
    assert group is not None
    assert group.id
    try:
        items = client.groups.by_group_id(group.id)
        await items.members.ref.post(ref(entra, ids[0]))
        with pytest.raises(APIError) as already:
            await items.members.ref.post(ref(entra, ids[0]))
        assert already.value.response_status_code == 400
        latest = await client.groups.delta.get()  # first round: every group, members included when selected
        link = None
        while latest is not None:
            link = latest.odata_delta_link or link
            if not latest.odata_next_link:
                break
            latest = await client.groups.delta.with_url(latest.odata_next_link).get()
        assert link
        await items.members.ref.post(ref(entra, ids[1]))
        await items.members.by_directory_object_id(ids[0]).ref.delete()
        changed = await client.groups.delta.with_url(link).get()
        assert changed is not None
        assert [g.id for g in changed.value or []] == [group.id]
        members = await items.members.get()
        assert members is not None
        assert [m.id for m in members.value or []] == [ids[1]]
    finally:
        await client.groups.by_group_id(group.id).delete()
    with pytest.raises(APIError) as gone:
        await client.groups.by_group_id(group.id).get()
    assert gone.value.response_status_code == 404


async def test_subscribed_skus_and_assign_license(entra: EntraFixture, tls_files: Any) -> None:
    entra.admin("PATCH", f"/_sim/apps/{entra.client_id}",
                {"graphRoles": [*GRAPH_PERMISSIONS, "LicenseAssignment.ReadWrite.All"]})
    credential = ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    http = graph_http_client(tls_files.client_context())
    try:
        auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH], allowed_hosts=["127.0.0.1"])
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = f"{entra.url}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        skus = await client.subscribed_skus.get()
        assert skus is not None
        ems = next(s for s in skus.value or [] if s.sku_part_number == "EMS")
        assert ems.sku_id is not None
        users = await client.users.get()
        assert users is not None
        user_id = str((users.value or [])[-1].id)
        body = AssignLicensePostRequestBody(add_licenses=[AssignedLicense(sku_id=ems.sku_id, disabled_plans=[])],
                                            remove_licenses=[])
        updated = await client.users.by_user_id(user_id).assign_license.post(body)
        assert updated is not None
        assert [a.sku_id for a in updated.assigned_licenses or []] == [ems.sku_id]
        undo = AssignLicensePostRequestBody(add_licenses=[], remove_licenses=[ems.sku_id])
        await client.users.by_user_id(user_id).assign_license.post(undo)
    finally:
        entra.admin("PATCH", f"/_sim/apps/{entra.client_id}", {"graphRoles": list(GRAPH_PERMISSIONS)})
        await http.aclose()
        await credential.close()
