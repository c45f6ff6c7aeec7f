"""The audit log: read with filters and paging, and verify its keyed, anchored chains (docs/audit.md)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import azure.functions as func

from functions import answers
from functions.http import AUDIT_READ, Plain, Reply, route
from shared.bootstrap import bridge
from shared.services.audit import PAGE_DEFAULT, AuditFilter, AuditPage

bp = func.Blueprint()  # type: ignore[no-untyped-call]


def _filter(query: answers.AuditQuery) -> AuditFilter:
    bridge().connection(query.connection)  # an unknown connection is a 404 naming CONNECTIONS
    today = bridge().clock.now().astimezone(dt.UTC).date()
    return AuditFilter(query.connection, query.first or today, query.to or today, action=query.action or None,
                       target=query.target or None, outcome=query.outcome or None)


@route(bp, "audit", "GET", roles=[AUDIT_READ], query=answers.AuditQuery, answers={200: answers.AuditPage})
async def read_audit(call: Plain) -> Reply:
    """Records of one connection over a day range, in time order; filters action, target, outcome; paged."""
    query = answers.AuditQuery.model_validate(call.query)
    page = await bridge().audit_query.page(_filter(query), top=query.top or PAGE_DEFAULT,
                                           token=query.continuation_token or None)
    return Reply(200, _page_body(call, page))


def _page_body(call: Plain, page: AuditPage) -> dict[str, object]:
    body: dict[str, object] = {"value": [r.model_dump(mode="json", by_alias=True) for r in page.records]}
    if page.next_token:
        body["continuationToken"] = page.next_token
        body["@odata.nextLink"] = f"{call.url}?{_next_query(call, page.next_token)}"
    return body


def _next_query(call: Plain, token: str) -> str:
    query = {k: v for k, v in call.query.items() if k != "continuationToken"}
    return urlencode({**query, "continuationToken": token})


@route(bp, "audit/verify", "GET", roles=[AUDIT_READ], query=answers.AuditQuery,
       answers={200: answers.AuditVerification})
async def verify_audit(call: Plain) -> Reply:
    """Check the keyed chains of a day range against their anchors; name each finding and the unanchored window."""
    flt = _filter(answers.AuditQuery.model_validate(call.query))
    report = await bridge().audit_query.verify(flt.connection, flt.first, flt.last)
    return Reply(200, report.as_json())
