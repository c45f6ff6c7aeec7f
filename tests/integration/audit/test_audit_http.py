"""GET /api/audit and GET /api/audit/verify through the functions, on Azurite and the vault emulator:
a target-filtered page holds every match; verification names its findings in the body."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import pytest

import functions.audit as audit_functions
from shared.config import settings
from shared.domain.audit import chain_id, shard_of
from shared.services.audit import AuditQuery
from shared.topology import Table
from tests.fakes import FakeClock
from tests.integration.audit.conftest import AuditVault

START = dt.datetime(2026, 5, 4, 10, 0, tzinfo=dt.UTC)


def _functions() -> dict[str, Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]]:
    app = func.FunctionApp()
    app.register_functions(audit_functions.bp)
    return {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}


FUNCTIONS = _functions()


@dataclass
class FakeBridge:
    """What the audit functions need of the composition root."""

    name: str
    clock: FakeClock
    audit_query: AuditQuery

    def connection(self, name: str) -> object:
        assert name == self.name
        return object()


@pytest.fixture
async def trail(audit_vault: AuditVault, monkeypatch: pytest.MonkeyPatch) -> FakeBridge:
    connection = f"h{uuid.uuid4().hex[:8]}"
    clock = FakeClock(START)
    sink = audit_vault.sink(clock)
    neighbours = [t for t in (f"user-{n}" for n in range(200)) if shard_of(t) == shard_of("user-wanted")][:3]
    for n in range(64):  # 60 records of targets that share user-wanted's chain, then its 4
        await sink.record(connection=connection, actor="test", action="thing.done",
                          target=neighbours[n % 3] if n < 60 else "user-wanted", outcome="ok",
                          correlation_id=f"c{n}", detail={"n": n})
        clock.advance(seconds=1)
    await sink.aclose()
    fake = FakeBridge(connection, clock, audit_vault.query(clock))
    monkeypatch.setattr(audit_functions, "bridge", lambda: fake)
    settings.cache_clear()
    return fake


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    settings.cache_clear()
    yield
    settings.cache_clear()


async def get(name: str, url: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = func.HttpRequest("GET", url, params=params, body=b"")
    response = await FUNCTIONS[name](req)
    return response.status_code, json.loads(response.get_body() or b"{}")


async def test_a_target_filtered_page_holds_every_match(trail: FakeBridge) -> None:
    day = START.date().isoformat()
    query = {"connection": trail.name, "from": day, "to": day, "target": "user-wanted"}
    for top in ("50", "99"):  # 50 answered no record and no token before; 99 answered 4
        status, body = await get("read_audit", "http://127.0.0.1/api/audit", {**query, "top": top})
        assert status == 200, body
        assert [r["detail"]["n"] for r in body["value"]] == [60, 61, 62, 63]
        assert "continuationToken" not in body


async def test_verify_names_the_findings(trail: FakeBridge, audit_vault: AuditVault) -> None:
    day = START.date().isoformat()
    params = {"connection": trail.name, "from": day, "to": day}
    status, body = await get("verify_audit", "http://127.0.0.1/api/audit/verify", params)
    assert (status, body["intact"], body["findings"], body["checked"]) == (200, True, [], 64)
    assert body["unanchoredWindow"]["seconds"] == 0
    target_chain = chain_id(trail.name, START, "user-wanted")
    await audit_vault.store.delete(Table.AUDIT, target_chain, f"{64:012d}")
    status, body = await get("verify_audit", "http://127.0.0.1/api/audit/verify", params)
    assert status == 200
    assert body["intact"] is False
    assert body["findings"] == [{"kind": "truncated", "chain": target_chain, "seq": 64, "lastSeq": 64,
                                 "detail": "truncated after 63: the anchor in Key Vault says 64 records were written"}]
