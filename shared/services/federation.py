"""Federate and defederate a custom domain through Graph, after the compatibility checks."""

from __future__ import annotations

from typing import Any

from shared.config import Connection
from shared.domain import federation as rules
from shared.errors import Conflict, NotFound
from shared.services.ports import AuditSink, Clock, GraphApi, JsonObject

ACTOR = "federation"


class FederationService:
    """Compatibility reports, federation and defederation of a connection's domains."""

    def __init__(self, *, audit: AuditSink, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock

    async def _domain(self, graph: GraphApi, domain: str) -> tuple[JsonObject | None, JsonObject | None]:
        try:
            found = await graph.get(f"/domains/{domain}")
        except NotFound:
            return None, None
        configs = await graph.get(f"/domains/{domain}/federationConfiguration")
        values = configs.get("value") or []
        return found, (values[0] if values else None)

    async def _people(self, graph: GraphApi, domain: str) -> tuple[list[str], int]:
        suffix = "@" + domain.lower()
        users: dict[str, tuple[str, bool]] = {}
        async for page in graph.pages("/users", params={"$select": "id,userPrincipalName,onPremisesSyncEnabled",
                                                          "$top": "999"}):
            for user in page["value"]:
                upn = str(user.get("userPrincipalName") or "")
                if upn.lower().endswith(suffix):
                    users[str(user["id"])] = (upn, user.get("onPremisesSyncEnabled") is True)
        admins: set[str] = set()
        async for page in graph.pages("/directoryRoles", params={"$select": "id,displayName"}):
            for role in page["value"]:
                async for members in graph.pages(f"/directoryRoles/{role['id']}/members", params={"$select": "id"}):
                    admins.update(str(m["id"]) for m in members["value"] if str(m["id"]) in users)
        return sorted(users[a][0] for a in admins), sum(1 for _, synced in users.values() if synced)

    async def compatibility(self, conn: Connection, graph: GraphApi, domain: str,
                            inputs: rules.IdpInputs | None) -> list[rules.Check]:
        """Every check for federating `domain`, each pass, warn or fail with remediation."""
        self._enabled(conn)
        found, current = await self._domain(graph, domain)
        admins, synced = await self._people(graph, domain) if found else ([], 0)
        return rules.compatibility(domain, found, current, admins_on_domain=admins, synced_on_domain=synced,
                                   inputs=inputs, now=self._clock.now())

    async def federate(self, conn: Connection, graph: GraphApi, domain: str, inputs: rules.IdpInputs, *,
                       force_reason: str | None, actor: str, correlation_id: str) -> JsonObject:
        """Create or update the federation configuration, read it back, and audit it."""
        checks = await self.compatibility(conn, graph, domain, inputs)
        blocking = rules.failures(checks)
        if blocking and not force_reason:
            raise Conflict(f"federating {domain} is refused: " + "; ".join(f"{c.name}: {c.detail}" for c in blocking)
                           + " (fix them, or send force with a reason)")
        _, current = await self._domain(graph, domain)
        body = inputs.graph_body()
        if current is None:
            response = await graph.send("POST", f"/domains/{domain}/federationConfiguration", body=body)
        else:
            response = await graph.send("PATCH", f"/domains/{domain}/federationConfiguration/{current['id']}",
                                        body=body)
        found, after = await self._domain(graph, domain)
        mismatched = [k for k in ("issuerUri", "passiveSignInUri", "signingCertificate")
                      if after is None or after.get(k) != body[k]]
        outcome = "federated" if not mismatched else "mismatch"
        detail: dict[str, Any] = {"domain": domain, "issuerUri": inputs.issuer_uri, "updated": current is not None,
                                  "readBackMismatch": mismatched}
        if force_reason:
            detail["forcedPast"] = [c.name for c in blocking]
            detail["forceReason"] = force_reason
        await self._audit.record(connection=conn.name, actor=actor, action="federation.set", target=domain,
                                 outcome=outcome, correlation_id=correlation_id, graph_request_id=response.request_id,
                                 detail=detail)
        if mismatched:
            raise Conflict(f"Graph accepted the federation of {domain} but reads back different {mismatched}")
        return {"domain": domain, "authenticationType": (found or {}).get("authenticationType"),
                "federationConfiguration": after, "note": "the switch can take up to two hours to reach every "
                                                          "sign-in"}

    async def defederate(self, conn: Connection, graph: GraphApi, domain: str, *, actor: str,
                         correlation_id: str) -> JsonObject:
        """Remove the federation configuration, read back, audit."""
        self._enabled(conn)
        found, current = await self._domain(graph, domain)
        if found is None:
            raise NotFound(f"{domain} is not a domain of this tenant")
        if current is None:
            raise Conflict(f"{domain} is not federated")
        response = await graph.send("DELETE", f"/domains/{domain}/federationConfiguration/{current['id']}")
        after, still = await self._domain(graph, domain)
        await self._audit.record(connection=conn.name, actor=actor, action="federation.removed", target=domain,
                                 outcome="managed" if still is None else "still-federated",
                                 correlation_id=correlation_id, graph_request_id=response.request_id,
                                 detail={"domain": domain, "issuerUri": current.get("issuerUri")})
        return {"domain": domain, "authenticationType": (after or {}).get("authenticationType"),
                "note": "users on this domain now sign in with Entra: they need a password or a passkey"}

    @staticmethod
    def _enabled(conn: Connection) -> None:
        if not conn.features.federation.enabled:
            raise Conflict(f"federation is not enabled for connection {conn.name!r} (features.federation.enabled)")
