"""The audit log: read with filters and paging, and verify its keyed, anchored chains (docs/audit.md)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import azure.functions as func

from functions import answers
from functions.http import AUDIT_READ, Plain, Reply, route
from shared.bootstrap import bridge
from shared.errors import InvalidInput
from shared.services.audit import PAGE_DEFAULT, AuditFilter

bp = func.Blueprint()  # type: ignore[no-untyped-call]


def _filter(call: Plain) -> AuditFilter:
    connection = call.query.get("connection")
    if not connection:
        raise InvalidInput("the connection query parameter is required", field="connection")
    bridge().connection(connection)
    today = bridge().clock.now().astimezone(dt.UTC).date()
    days: dict[str, dt.date] = {}
    for name in ("from", "to"):
        try:
            days[name] = dt.date.fromisoformat(call.query.get(name) or today.isoformat())
        except ValueError:
            raise InvalidInput(f"{name} must be a date like 2026-11-23", field=name) from None
    return AuditFilter(connection, days["from"], days["to"], action=call.query.get("action") or None,
                       target=call.query.get("target") or None, outcome=call.query.get("outcome") or None)


@route(bp, "audit", "GET", roles=[AUDIT_READ], query=answers.AuditQuery, answers={200: answers.AuditPage})
async def read_audit(call: Plain) -> Reply:
    """Records of one connection over a day range, in time order; filters action, target, outcome; paged."""
    flt = _filter(call)
    try:
        top = int(call.query.get("top") or PAGE_DEFAULT)
    except ValueError:
        raise InvalidInput("top must be a whole number", field="top") from None
    page = await bridge().audit_query.page(flt, top=top, token=call.query.get("continuationToken") or None)
    body: dict[str, object] = {"value": [r.model_dump(mode="json", by_alias=True) for r in page.records]}
    if page.next_token:
        body["continuationToken"] = page.next_token
        body["@odata.nextLink"] = f"{call.url}?{_next_query(call, page.next_token)}"
    return Reply(200, body)


def _next_query(call: Plain, token: str) -> str:
    query = {k: v for k, v in call.query.items() if k != "continuationToken"}
    return urlencode({**query, "continuationToken": token})


@route(bp, "audit/verify", "GET", roles=[AUDIT_READ], query=answers.AuditQuery,
       answers={200: answers.AuditVerification})
async def verify_audit(call: Plain) -> Reply:
    """Check the keyed chains of a day range against their anchors; name each finding and the unanchored window."""
    flt = _filter(call)
    report = await bridge().audit_query.verify(flt.connection, flt.first, flt.last)
    return Reply(200, report.as_json())
