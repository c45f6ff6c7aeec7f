"""Change notifications through the local host: the subscription timer passes Graph's handshake on the
function's endpoints, a membership change reaches the directory with no sync requested, and forged
notifications are refused with problem+json (and audited) while the handshake echoes its token."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from bench.freshness import CONNECTION, Stack, first_sync, measure, new_users, running, subscribed, sync_group


def _forged_and_handshake(stack: Stack, subscription_id: str) -> None:
    base = f"{stack.host.url}/api/notifications/connections/{CONNECTION}"
    # No function key, no token: Graph has neither. The handshake echoes the token as text/plain.
    token = "Validation: Testing client application reachability " + secrets.token_hex(8)
    echoed = httpx.post(base, params={"validationToken": token}, timeout=10)
    assert echoed.status_code == 200
    assert echoed.headers["content-type"].startswith("text/plain")
    assert echoed.text == token
    lifecycle = httpx.post(f"{base}/lifecycle", params={"validationToken": token}, timeout=10)
    assert lifecycle.text == token
    forged = httpx.post(base, timeout=10, json={"value": [{
        "subscriptionId": subscription_id, "clientState": secrets.token_urlsafe(48), "changeType": "updated",
        "resource": "Groups/x", "tenantId": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"}]})
    assert forged.status_code == 403
    assert forged.headers["content-type"].startswith("application/problem+json")
    missing = httpx.post(base, timeout=10, json={"value": [{"subscriptionId": subscription_id}]})
    assert missing.status_code == 403
    malformed = httpx.post(base, timeout=10, content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    unknown = httpx.post(f"{stack.host.url}/api/notifications/connections/nosuch", timeout=10,
                         json={"value": [{"subscriptionId": subscription_id, "clientState": "x"}]})
    assert unknown.status_code == 404


def test_membership_changes_arrive_through_notifications_and_forgeries_are_refused(tmp_path: Path) -> None:
    with running(tmp_path) as stack:
        users = new_users(stack, 3)
        status = subscribed(stack)
        first_sync(stack)
        results = measure(stack, users, sync_group(stack), pause=0.2)
        assert len(results) == 3  # each user's row appeared with no sync requested by anyone

        _forged_and_handshake(stack, status["subscriptions"]["groups"]["subscriptionId"])
        audit = stack.http.get("/api/audit", params={"connection": CONNECTION, "action": "notification.refused"})
        assert audit.status_code == 200, audit.text
        refused = audit.json()["value"]
        assert len(refused) == 3  # forged, missing and malformed; an unknown connection has no chain to write to
        assert all(r["outcome"] == "refused" for r in refused)
        runs = stack.http.get(f"/api/connections/{CONNECTION}/status").json()
        assert runs["lastSync"]["outcome"] == "completed"

        removed = stack.http.post(f"/api/connections/{CONNECTION}/notifications/uninstall")
        assert removed.status_code == 200
        assert sorted(removed.json()["removed"]) == ["groups", "users"]
        assert stack.admin("GET", "/_sim/subscriptions")["value"] == []
