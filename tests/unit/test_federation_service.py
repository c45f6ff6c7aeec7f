"""The federation service with fakes of its ports: refusal and forcing, read-back, defederation, and the
monitor's alerts at 30, 7 and 1 days before the signing certificate expires (audit and status rows)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from shared.adapters.federation_watch import TableFederationWatch
from shared.config import Connection
from shared.domain.federation import AppAccess
from shared.errors import Conflict, NotFound
from shared.services.federation import FederationService, IdpRequest
from shared.services.ports import GraphResponse, JsonObject
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore
from tests.integration.entra.test_federation import idp_certificate

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
DOMAIN = "contoso.example"
CONN = Connection.model_validate({"name": "c1", "tenantId": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
                                  "cloud": "local", "features": {"federation": {"enabled": True}}})


class FakeDirectory:
    """Entra's domains in memory, answering as Graph does (federating switches authenticationType)."""

    def __init__(self, *, admins: list[str] | None = None, drop_on_write: set[str] | None = None) -> None:
        self.domains_by_name: dict[str, dict[str, Any]] = {
            DOMAIN: {"id": DOMAIN, "isVerified": True, "isDefault": False, "isInitial": False,
                     "authenticationType": "Managed"}}
        self.configs: dict[str, dict[str, Any]] = {}
        self.admins = admins or []
        self.drop_on_write = drop_on_write or set()  # members Graph "forgets" (to test the read-back)
        self.writes: list[tuple[str, JsonObject]] = []

    async def domain(self, name: str) -> JsonObject | None:
        found = self.domains_by_name.get(name)
        return dict(found) if found else None

    async def domains(self) -> list[JsonObject]:
        return [dict(d) for d in self.domains_by_name.values()]

    async def federation(self, name: str) -> JsonObject | None:
        found = self.configs.get(name)
        return dict(found) if found else None

    async def people_on_domain(self, name: str) -> tuple[list[str], int]:
        return list(self.admins), 0

    async def app_access(self) -> AppAccess:
        return AppAccess(("Domain-InternalFederation.ReadWrite.All",))

    def _keep(self, body: JsonObject) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in self.drop_on_write}

    async def create_federation(self, name: str, body: JsonObject) -> GraphResponse:
        self.writes.append(("POST", body))
        self.configs[name] = {"id": str(uuid.uuid4()), **self._keep(body)}
        self.domains_by_name[name]["authenticationType"] = "Federated"
        return GraphResponse(201, dict(self.configs[name]), request_id="r-create")

    async def update_federation(self, name: str, config_id: str, body: JsonObject) -> GraphResponse:
        self.writes.append(("PATCH", body))
        self.configs[name].update(self._keep(body))
        return GraphResponse(200, dict(self.configs[name]), request_id="r-update")

    async def delete_federation(self, name: str, config_id: str) -> GraphResponse:
        self.configs.pop(name)
        self.domains_by_name[name]["authenticationType"] = "Managed"
        return GraphResponse(204, None, request_id="r-delete")


class NoMetadata:
    async def fetch(self, url: str) -> bytes:
        raise AssertionError("no metadata URL was given")


def service(clock: FakeClock, audit: FakeAuditSink, entities: FakeEntityStore) -> FederationService:
    return FederationService(audit=audit, clock=clock, watched=TableFederationWatch(entities), metadata=NoMetadata())


def explicit(certificate: str) -> IdpRequest:
    return IdpRequest(given={"issuer_uri": "https://idp.example/e", "passive_sign_in_uri": "https://idp.example/sso",
                             "signing_certificate": certificate})


async def test_refused_while_a_check_fails_then_forced_with_the_reason_audited() -> None:
    audit, entities = FakeAuditSink(), FakeEntityStore()
    directory = FakeDirectory(admins=["root@contoso.example"])
    fed = service(FakeClock(NOW), audit, entities)
    certificate = idp_certificate(365, now=NOW)
    with pytest.raises(Conflict, match="no admins on the domain"):
        await fed.federate(CONN, directory, DOMAIN, explicit(certificate), force_reason=None, actor="op",
                           correlation_id="c")
    assert directory.writes == []
    done = await fed.federate(CONN, directory, DOMAIN, explicit(certificate), force_reason="break-glass accounts exist",
                              actor="op", correlation_id="c")
    assert done["authenticationType"] == "Federated"
    [(method, body)] = directory.writes
    assert (method, body["signingCertificate"]) == ("POST", certificate)
    [record] = audit.records
    assert (record.action, record.outcome, record.graph_request_id) == ("federation.set", "federated", "r-create")
    assert record.detail["forcedPast"] == ["no admins on the domain"]
    assert record.detail["forceReason"] == "break-glass accounts exist"
    assert certificate not in str(record.detail)


async def test_a_read_back_that_differs_is_audited_and_reported() -> None:
    audit = FakeAuditSink()
    directory = FakeDirectory(drop_on_write={"signingCertificate"})
    fed = service(FakeClock(NOW), audit, FakeEntityStore())
    with pytest.raises(Conflict, match="reads back different"):
        await fed.federate(CONN, directory, DOMAIN, explicit(idp_certificate(365, now=NOW)), force_reason=None,
                           actor="op", correlation_id="c")
    assert audit.records[-1].outcome == "mismatch"
    assert audit.records[-1].detail["readBackMismatch"] == ["signingCertificate"]


async def test_defederate_says_users_need_a_password_or_passkey() -> None:
    audit = FakeAuditSink()
    directory = FakeDirectory()
    fed = service(FakeClock(NOW), audit, FakeEntityStore())
    with pytest.raises(Conflict, match="not federated"):
        await fed.defederate(CONN, directory, DOMAIN, actor="op", correlation_id="c")
    with pytest.raises(NotFound):
        await fed.defederate(CONN, directory, "other.example", actor="op", correlation_id="c")
    await fed.federate(CONN, directory, DOMAIN, explicit(idp_certificate(365, now=NOW)), force_reason=None,
                       actor="op", correlation_id="c")
    removed = await fed.defederate(CONN, directory, DOMAIN, actor="op", correlation_id="c")
    assert removed["authenticationType"] == "Managed"
    assert "password or a passkey" in removed["note"]
    assert (audit.records[-1].action, audit.records[-1].outcome) == ("federation.removed", "managed")
    disabled = Connection.model_validate({**CONN.model_dump(by_alias=True), "features": {}})
    with pytest.raises(Conflict, match="not enabled"):
        await fed.compatibility(disabled, directory, DOMAIN)


async def test_the_monitor_alerts_30_7_and_1_days_before_expiry_once_each() -> None:
    clock, audit, entities = FakeClock(NOW), FakeAuditSink(), FakeEntityStore()
    directory = FakeDirectory()
    fed = service(clock, audit, entities)
    await fed.federate(CONN, directory, DOMAIN, explicit(idp_certificate(45, now=NOW)), force_reason=None,
                       actor="op", correlation_id="c")
    outcomes: list[str] = []
    for day in range(0, 47):
        clock.current = NOW + dt.timedelta(days=day, hours=1)
        await fed.watch(CONN, directory, correlation_id=f"w{day}")
        alerts = [r for r in audit.records if r.action == "federation.certificate.expiring"]
        if len(alerts) > len(outcomes):
            outcomes.append(f"day {day}: {alerts[-1].outcome}")
    assert outcomes == ["day 15: 30d", "day 38: 7d", "day 44: 1d", "day 45: expired"]
    alert = next(r for r in audit.records if r.action == "federation.certificate.expiring")
    assert alert.actor == "federation_monitor"
    assert set(alert.detail) >= {"domain", "signingCertificate", "expiresOn", "daysLeft", "threshold"}
    # The status route shows the monitor's row: the threshold reached and the problem.
    [row] = await TableFederationWatch(entities).rows(CONN.name)
    assert (row["domain"], row["alertedThreshold"]) == (DOMAIN, 0)
    assert "expired" in row["problem"]
    assert "no next certificate is known" in row["problem"]


def test_the_put_body_maps_to_the_service_request() -> None:
    from pydantic import ValidationError

    from functions.federation import FederationBody

    body = FederationBody.model_validate({
        "metadataUrl": "https://idp.example/FederationMetadata.xml", "displayName": "Example",
        "federatedIdpMfaBehavior": "enforceMfaByFederatedIdp", "force": {"reason": "admins have cloud accounts"}})
    request = body.request()
    assert request.metadata_url == "https://idp.example/FederationMetadata.xml"
    assert request.given == {"display_name": "Example", "federated_idp_mfa_behavior": "enforceMfaByFederatedIdp"}
    assert body.force is not None
    for bad in ({"metadataUrl": "http://idp.example/m"}, {"metadataUrl": "https://a/m", "metadataXml": "<x/>"},
                {"issuerUri": "https://i/e", "force": {"reason": "short"}}, {"preferredAuthenticationProtocol": "oidc"},
                {"issuerUri": "https://i/e", "unknown": 1}):
        with pytest.raises(ValidationError):
            FederationBody.model_validate(bad)
