"""The audit log: read with filters and paging, and verify its hash chains."""

from __future__ import annotations

import datetime as dt
from typing import Any

import azure.functions as func

from functions.http import AUDIT_READ, Plain, Reply, route
from shared.bootstrap import bridge
from shared.errors import InvalidInput

bp = func.Blueprint()  # type: ignore[no-untyped-call]
MAX_DAYS = 31
PAGE_MAX = 1000


def _days(call: Plain) -> tuple[str, dt.date, dt.date]:
    connection = call.query.get("connection")
    if not connection:
        raise InvalidInput("the connection query parameter is required", field="connection")
    bridge().connection(connection)
    today = dt.datetime.now(dt.UTC).date()
    try:
        first = dt.date.fromisoformat(call.query.get("from", today.isoformat()))
        last = dt.date.fromisoformat(call.query.get("to", today.isoformat()))
    except ValueError:
        raise InvalidInput("from and to must be dates like 2026-11-23", field="from") from None
    if last < first or (last - first).days >= MAX_DAYS:
        raise InvalidInput(f"the day range must run forward and span at most {MAX_DAYS} days", field="to")
    return connection, first, last


@route(bp, "audit", "GET", roles=[AUDIT_READ])
async def read_audit(call: Plain) -> Reply:
    """Records of one connection over a day range; filters action, target; paging by skip/top."""
    connection, first, last = _days(call)
    action, target = call.query.get("action"), call.query.get("target")
    try:
        top = min(int(call.query.get("top", "200")), PAGE_MAX)
        skip = int(call.query.get("skip", "0"))
    except ValueError:
        raise InvalidInput("top and skip must be whole numbers", field="top") from None
    found: list[dict[str, Any]] = []
    async for record in bridge().audit_reader.records(connection, first, last):
        if (action and not record.action.startswith(action)) or (target and record.target != target):
            continue
        found.append(record.model_dump(mode="json", by_alias=True))
    body: dict[str, Any] = {"value": found[skip:skip + top], "count": len(found)}
    if skip + top < len(found):
        body["nextSkip"] = skip + top
    return Reply(200, body)


@route(bp, "audit/verify", "GET", roles=[AUDIT_READ])
async def verify_audit(call: Plain) -> Reply:
    """Recompute the hash chains of a day range and report the first broken link."""
    connection, first, last = _days(call)
    checked, broken = await bridge().audit_reader.verify(connection, first, last)
    return Reply(200, {"connection": connection, "from": first.isoformat(), "to": last.isoformat(),
                       "checked": checked, "intact": broken is None,
                       "firstBrokenLink": None if broken is None else {"chain": broken.chain, "seq": broken.seq,
                                                                       "reason": broken.reason}})
