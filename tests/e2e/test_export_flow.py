"""Export end to end (docs/export.md): the function app in the local host serves SCIM, the export-work queue on
Azurite applies each change to the Entra simulator, and status shows the counts and problems. Bad SCIM input
is answered with a SCIM error naming the problem, and nothing reaches Entra."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from local.entra.demo import DEMO_DOMAIN
from local.host.process import RunningHost
from local.tls import TlsFiles
from tests.e2e.waiting import wait_for
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _settings(entra: EntraFixture, vault: VaultFixture, storage: str, tls_files: TlsFiles) -> dict[str, str]:
    conn = {"name": "exp", "tenantId": entra.tenant_id, "cloud": "local", "auth": {"kind": "managedIdentity"},
            "features": {"export": {"enabled": True, "usageLocation": "CH", "defaultLicenseSku": "ENTERPRISEPACK",
                                    "deleteUsers": True}}}
    return {"KEY_VAULT_URL": vault.url, "AzureWebJobsStorage": storage, "CONNECTIONS": json.dumps([conn]),
            "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
            "SSL_CERT_FILE": str(tls_files.bundle), "REQUESTS_CA_BUNDLE": str(tls_files.bundle),
            "IDENTITY_ENDPOINT": entra.identity_endpoint, "IDENTITY_HEADER": entra.identity_header,
            "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *", "FEDERATION_SCHEDULE": "0 0 0 1 1 *"}


def _error(answer: httpx.Response, status: int, scim_type: str, named: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["schemas"] == [ERROR]
    assert body["scimType"] == scim_type
    assert named in body["detail"], body


def test_scim_changes_reach_entra_with_the_export_rules(function_host: Any, entra: EntraFixture,
                                                         vault: VaultFixture, azurite_connection_string: str,
                                                         tls_files: TlsFiles) -> None:
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")
    host: RunningHost = function_host(values=_settings(entra, vault, azurite_connection_string, tls_files))
    tag = uuid.uuid4().hex[:8]
    base = "/api/scim/v2/exp"
    before = entra.admin("GET", "/_sim/tenant")
    with httpx.Client(base_url=host.url, headers={"x-functions-key": host.function_key}, timeout=60) as http:
        config = http.get(f"{base}/ServiceProviderConfig")
        assert config.status_code == 200, config.text
        assert config.json()["patch"]["supported"] is True
        assert {r["name"] for r in http.get(f"{base}/ResourceTypes").json()["Resources"]} == {"User", "Group"}
        assert ENTERPRISE in {s["id"] for s in http.get(f"{base}/Schemas").json()["Resources"]}

        # Bad input first: each a SCIM error naming the problem, and nothing written anywhere.
        _error(http.post(f"{base}/Users", json={"schemas": [USER], "userName": f"x{tag}@{DEMO_DOMAIN}",
                                                "favouriteColour": "red"}), 400, "invalidSyntax", "favouriteColour")
        _error(http.post(f"{base}/Users", json={"schemas": [USER], "userName": f"x{tag}@unverified.example"}),
               400, "invalidValue", "unverified.example")
        _error(http.get(f"{base}/Users", params={"filter": 'favouriteColour eq "red"'}), 400, "invalidFilter",
               "favouriteColour")
        _error(http.get(f"{base}/Users", params={"filter": "userName eqq 1"}), 400, "invalidFilter", "eqq")
        assert http.get(f"{base}/Users").json()["totalResults"] == 0

        ada = http.post(f"{base}/Users", json={"schemas": [USER, ENTERPRISE], "userName": f"ada{tag}@{DEMO_DOMAIN}",
                                               "active": True, "name": {"givenName": "Ada", "familyName": "L"},
                                               ENTERPRISE: {"employeeNumber": tag, "department": "R&D"}})
        assert ada.status_code == 201, ada.text
        assert ada.headers["ETag"] == ada.json()["meta"]["version"]
        assert ada.headers["Location"].endswith(f"/Users/{ada.json()['id']}")
        ada_id = ada.json()["id"]
        _error(http.patch(f"{base}/Users/{ada_id}", json={"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "name.nickname", "value": "x"}]}), 400, "invalidPath", "name.nickname")
        team = http.post(f"{base}/Groups", json={"schemas": [GROUP], "displayName": f"Team {tag}",
                                                 "members": [{"value": ada_id}]})
        assert team.status_code == 201, team.text
        team_id = team.json()["id"]
        _error(http.patch(f"{base}/Groups/{team_id}", json={"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": team_id}]}]}), 400, "invalidValue", "itself")
        stale = http.put(f"{base}/Users/{ada_id}", headers={"If-Match": 'W/"99"'},
                         json={"schemas": [USER], "userName": f"ada{tag}@{DEMO_DOMAIN}"})
        assert stale.status_code == 412, stale.text

        found = http.get(f"{base}/Users", params={"filter": f'userName eq "ADA{tag}@{DEMO_DOMAIN}"'}).json()
        assert [r["id"] for r in found["Resources"]] == [ada_id]

        def exported() -> dict[str, Any] | None:
            status = http.get("/api/connections/exp/status").json()
            export = status.get("export") or {}
            return status if export.get("users") == 1 and export.get("groups") == 1 and not export.get(
                "pending") else None

        status = wait_for(exported, timeout=120)
        # The only problem: no groups.owners is set, so the created group is said to have no owner but the bridge's.
        problems = [p["problem"] for p in status["export"]["problems"]]
        assert len(problems) == 1, status["export"]
        assert "set features.export.groups.owners" in problems[0]
        after = entra.admin("GET", "/_sim/tenant")
        assert after["users"] == before["users"] + 1
        # The created user's password is in Entra only: not in the host's log, not in any SCIM answer.
        password = entra.admin("GET", f"/_sim/users/ada{tag}@{DEMO_DOMAIN}/password")["password"]
        assert password not in host.process.log_path.read_text()
        assert password not in http.get(f"{base}/Users/{ada_id}").text
        assert entra.admin("GET", f"/_sim/users/ada{tag}@{DEMO_DOMAIN}/password")["forceChange"] == "True"
        assert after["groups"] == before["groups"] + 1

        # active false disables the user the bridge created; status still counts it as exported.
        off = http.patch(f"{base}/Users/{ada_id}", json={"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "active", "value": False}]})
        assert off.status_code == 200, off.text
        wait_for(lambda: not http.get("/api/connections/exp/status").json()["export"]["pending"], timeout=60)
        log = host.process.log_path.read_text()
        assert "user.disable" in log, log[-3000:]
        deleted = http.delete(f"{base}/Groups/{team_id}")
        assert deleted.status_code == 204
        wait_for(lambda: entra.admin("GET", "/_sim/tenant")["groups"] == before["groups"], timeout=60)
        # With deleteUsers, a SCIM DELETE deletes the user the bridge created; the tenant is as it was.
        assert http.delete(f"{base}/Users/{ada_id}").status_code == 204
        wait_for(lambda: entra.admin("GET", "/_sim/tenant")["users"] == before["users"], timeout=60)
