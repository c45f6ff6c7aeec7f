"""Test a connection: a token, one read, and the per-feature permission report with remediation."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.config import Connection
from shared.domain import permissions
from shared.errors import BridgeError, NotFound, PermissionDenied
from shared.services.ports import GraphApi, JsonObject


@dataclass
class ConnectionReport:
    """The outcome of a connection test."""

    connection: str
    tenant_id: str
    ok: bool = False
    token: JsonObject = field(default_factory=dict)
    read: JsonObject = field(default_factory=dict)
    features: list[JsonObject] = field(default_factory=list)
    tenant_settings: JsonObject = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> JsonObject:
        """The response body."""
        return asdict(self)


class ConnectionTester:
    """Runs the connection test with a gateway and the claims of its token."""

    def __init__(self, graph: GraphApi, claims: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._graph = graph
        self._claims = claims

    async def test(self, conn: Connection) -> ConnectionReport:
        """Token, one read, permissions and roles per enabled feature, tenant settings."""
        result = ConnectionReport(connection=conn.name, tenant_id=conn.tenant_id)
        try:
            claims = await self._claims()
        except Exception as exc:  # any credential failure is the finding itself
            result.problems.append(f"no token: {type(exc).__name__}: {str(exc).splitlines()[0][:300]} - check the "
                                   "connection's auth settings (CONNECTIONS) and its secret in Key Vault")
            return result
        granted = sorted(str(r) for r in claims.get("roles", []) or [])
        result.token = {"obtained": True, "tenant": claims.get("tid"), "appId": claims.get("appid") or
                        claims.get("azp"), "servicePrincipal": claims.get("oid"), "roles": granted}
        if claims.get("tid") and str(claims.get("tid")).lower() != conn.tenant_id.lower():
            result.problems.append(f"the token is for tenant {claims.get('tid')}, not {conn.tenant_id} (tenantId)")
        started = time.monotonic()
        try:
            org = await self._graph.get("/organization", params={"$select": "id,displayName"})
            first = (org.get("value") or [{}])[0]
            result.read = {"ok": True, "organization": first.get("displayName"),
                           "milliseconds": round((time.monotonic() - started) * 1000, 1)}
        except BridgeError as err:
            result.read = {"ok": False, "error": err.detail}
            result.problems.append(f"one read failed: {err.detail}")
        roles = await self._roles(str(claims.get("oid") or ""), result)
        features = conn.features
        enabled = permissions.enabled_features(features.sync.enabled, features.rotation.enabled,
                                               features.passkeys.enabled, features.federation.enabled,
                                               features.export.enabled)
        for item in permissions.report(enabled, granted, roles):
            result.features.append({**asdict(item), "ok": item.ok})
            if not item.ok:
                result.problems.append(f"{item.feature}: missing {', '.join(item.missing + item.roles_missing)}")
        if features.passkeys.enabled:
            result.tenant_settings["passkeys"] = await self._passkey_policy(result)
        result.ok = not result.problems
        return result

    async def _roles(self, principal: str, result: ConnectionReport) -> list[str]:
        if not principal:
            return []
        path = f"/servicePrincipals/{principal}/transitiveMemberOf/microsoft.graph.directoryRole"
        names: list[str] = []
        try:
            async for page in self._graph.pages(path, params={"$select": "displayName"}):
                names.extend(str(r.get("displayName")) for r in page["value"] if r.get("displayName"))
        except BridgeError as err:
            result.problems.append(f"cannot read the app's directory roles: {err.detail}")
        result.token["directoryRoles"] = sorted(names)
        return names

    async def _passkey_policy(self, result: ConnectionReport) -> JsonObject:
        # https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get
        path = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
        try:
            policy = await self._graph.get(path)
        except (PermissionDenied, NotFound, BridgeError) as err:
            result.problems.append(f"cannot read the FIDO2 policy: {err.detail} (Policy.Read.All)")
            return {"readable": False}
        restrictions = policy.get("keyRestrictions") or {}
        settings = {"state": policy.get("state"), "selfServiceRegistrationAllowed":
                    policy.get("isSelfServiceRegistrationAllowed"), "attestationEnforced":
                    policy.get("isAttestationEnforced"), "keyRestrictions": {
                        "enforced": restrictions.get("isEnforced"), "type": restrictions.get("enforcementType"),
                        "aaGuids": restrictions.get("aaGuids", [])}}
        if policy.get("state") != "enabled":
            result.problems.append("the FIDO2 (passkey) method is not enabled: Entra admin center > Authentication "
                                   "methods > Passkey (FIDO2) > Enable")
        return settings
