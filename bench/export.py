"""Export at scale: an initial push of users and groups through SCIM Bulk until Entra holds them all.

    python -m bench.export --users 10000 --groups 200 [--workers 16] [--time-scale 10] [--patches 40]

Starts Azurite and the Entra simulator (a tenant with the demo's domains and enough license seats, Microsoft's
throttling limits on), then:

- pushes `--users` users (each with the default license and usage location) and `--groups` groups (the users
  spread over them) through the SCIM service's Bulk handling, 100 operations per request, the way an identity
  provider's first synchronisation does; every change is stored in Table storage (Azurite) and applied by
  `--workers` concurrent export workers through the production adapters (the Graph gateway with its shared
  throttle governor, the hash-chained audit log on Azurite). The work queue between them is in memory: the
  host's queue trigger is not what is measured;
- reports the Entra writes per second the simulator counted over the push, as a ratio to Microsoft's bound of
  20 writes per second per app and tenant (3,000 per 150 s, docs/architecture.md, Limits; goal at least 0.9).
  The simulator lets a first 3,000 writes through at once, then 20 per second, so a push shorter than a few
  minutes shows a ratio above 1 and a long one tends to 1. With `--time-scale X` the simulator's windows pass
  X times faster, so the bound is 20 X per second;
- then `--patches` membership PATCHes one after another, each timed from the SCIM request until its change is
  in Entra: the p95 as a ratio to 2 s (goal under 1).

Prints one summary line per figure with its ratio to the goal. Timings depend on the machine and on whatever
else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.identity.aio import ClientSecretCredential

from bench.sync import _audit
from local.entra.demo import (
    BRIDGE_CLIENT_ID,
    BRIDGE_CLIENT_SECRET,
    BRIDGE_PRINCIPAL_ID,
    DEMO_DOMAIN,
    EXPORT_PERMISSIONS,
    demo_tenant,
)
from local.entra.process import running as entra_running
from local.servers import azurite
from local.tls import ensure_tls
from shared.adapters.graph import GraphGateway, SystemClock, ThrottleGovernor
from shared.adapters.graph.export import GraphExportDirectory
from shared.adapters.scim import TableScimRepository
from shared.adapters.tables import TableEntityStore
from shared.config import Connection
from shared.domain.scim import ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA, Kind
from shared.errors import Transient
from shared.services.export import ExportService
from shared.services.ports import JsonObject
from shared.services.scim import BulkRunner, ScimService
from shared.topology import Queue

WRITES_PER_SECOND = 20.0
WRITE_GOAL = 0.9
PATCH_GOAL_S = 2.0
BULK_OPERATIONS = 100
SKU = "6fd2c87f-b296-42f0-b197-1e91e994b900"


class MemoryQueue:
    """The export-work queue in memory: messages in order, a change whose member is not in Entra yet goes back."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[JsonObject] = asyncio.Queue()

    async def send(self, queue: Queue, message: JsonObject, *, delay_seconds: float = 0) -> None:
        """Enqueue."""
        await self.items.put(message)


@dataclass
class Push:
    """What the initial push did."""

    seconds: float
    writes: float
    retried: int


def tenant_file(folder: Path, users: int) -> Path:
    """The demo tenant with few users, the bridge app granted export, and seats for every exported user."""
    tenant = demo_tenant(users=20)
    tenant.skus = [{"skuId": SKU, "skuPartNumber": "ENTERPRISEPACK", "enabled": users + 10,
                    "servicePlans": [], "appliesTo": "User"}]
    app = tenant.apps[BRIDGE_CLIENT_ID]
    app.graphRoles = [*app.graphRoles, *EXPORT_PERMISSIONS]
    path = folder / "tenant.json"
    path.write_text(json.dumps(tenant.to_json()), encoding="utf-8")
    return path


def connection(tenant_id: str, users: int, owner: str) -> Connection:
    """The bench connection: export on, the default license, removals allowed, `owner` bound to created groups."""
    return Connection.model_validate({
        "name": "bench", "tenantId": tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": BRIDGE_CLIENT_ID, "secretName": "bridge-client-secret"},
        "features": {"export": {"enabled": True, "usageLocation": "CH", "defaultLicenseSku": "ENTERPRISEPACK",
                                "removalThreshold": users, "groups": {"owners": [owner]}}}})


async def scenarios(users: int, groups: int, workers: int, patches: int, scale: float, tenant_id: str, url: str,
                    storage: str, ca: str, admin: Any, out: Any) -> None:
    """Push, then time membership patches."""
    clock = SystemClock()
    tables = TableEntityStore.from_connection_string(storage)
    credential = ClientSecretCredential(tenant_id, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, authority=url,
                                        connection_verify=ca)
    graph = GraphGateway(connection="bench", tenant_id=tenant_id, credential=credential, graph_base=url,
                         scope="https://graph.microsoft.com/.default", verify=ssl.create_default_context(cafile=ca),
                         governor=ThrottleGovernor(tables, clock), max_wait=300)
    conn = connection(tenant_id, users, BRIDGE_PRINCIPAL_ID)
    repo = TableScimRepository(tables)
    queue = MemoryQueue()
    scim = ScimService(repo, queue, clock)
    engine = ExportService(repo, _audit(tables, clock))
    entra = GraphExportDirectory(graph)
    done: dict[str, asyncio.Event] = {}
    retried = 0

    async def domains() -> list[str]:
        return await entra.verified_domains()

    async def worker() -> None:
        nonlocal retried
        while True:
            message = await queue.items.get()
            kind: Kind = "Groups" if message["args"]["resourceType"] == "Groups" else "Users"
            try:
                await engine.apply(conn, entra, kind, message["target"], request_id=message["correlationId"],
                                   change_id=message["args"]["change"])
            except Transient:
                retried += 1
                await asyncio.sleep(0.2)
                await queue.items.put(message)
            else:
                done.setdefault(message["args"]["change"], asyncio.Event()).set()
            finally:
                queue.items.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        before = admin("GET", "/_sim/tenant", None)
        started = time.perf_counter()
        bulk = BulkRunner(scim)
        base = "https://bench/api/scim/v2/bench"
        user_ids: list[str] = []
        for start in range(0, users, BULK_OPERATIONS):
            operations = [{"method": "POST", "path": "/Users", "bulkId": f"u{i}", "data": {
                "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], "userName": f"export{i}@{DEMO_DOMAIN}", "active": True,
                "name": {"givenName": "Export", "familyName": str(i)}, ENTERPRISE_SCHEMA: {"employeeNumber": str(i)}}}
                for i in range(start, min(start + BULK_OPERATIONS, users))]
            answer = await bulk.run(conn, {"Operations": operations}, request_id=f"bulk-u{start}", domains=domains,
                                    base_url=base)
            user_ids.extend(op["location"].rsplit("/", 1)[1] for op in answer["Operations"] if op["status"] == "201")
        group_ids: list[str] = []
        per_group = max(1, len(user_ids) // max(groups, 1))
        for start in range(0, groups, BULK_OPERATIONS):
            operations = [{"method": "POST", "path": "/Groups", "bulkId": f"g{g}", "data": {
                "schemas": [GROUP_SCHEMA], "displayName": f"Export group {g}",
                "members": [{"value": u} for u in user_ids[g * per_group:(g + 1) * per_group]]}}
                for g in range(start, min(start + BULK_OPERATIONS, groups))]
            answer = await bulk.run(conn, {"Operations": operations}, request_id=f"bulk-g{start}", domains=domains,
                                    base_url=base)
            group_ids.extend(op["location"].rsplit("/", 1)[1] for op in answer["Operations"] if op["status"] == "201")
        await queue.items.join()
        push = Push(time.perf_counter() - started, 0.0, retried)
        after = admin("GET", "/_sim/tenant", None)
        push.writes = after["counters"]["writes"] - before["counters"]["writes"]
        throttled = after["counters"]["throttled"] - before["counters"]["throttled"]
        held = after["users"] - before["users"], after["groups"] - before["groups"]
        rate = push.writes / push.seconds
        bound = WRITES_PER_SECOND * scale
        out(f"export push: {users} users and {groups} groups through SCIM Bulk in {push.seconds:.1f} s, Entra holds "
            f"{held[0]} users and {held[1]} groups; {push.writes:.0f} Entra writes at {rate:.1f}/s, ratio to the "
            f"{bound:.0f}/s write bound {rate / bound:.2f} (goal >= {WRITE_GOAL}); {throttled:.0f} requests "
            f"throttled (429) and retried; {push.retried} group changes waited for their members")

        seconds: list[float] = []
        for n in range(patches):
            group = group_ids[n % len(group_ids)]
            member = user_ids[(n * 7919 + per_group) % len(user_ids)]
            began = time.perf_counter()
            stored = await scim.patch(conn, "Groups", group, {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": member}]}]},
                if_match=None, request_id=f"patch-{n}-{uuid.uuid4().hex[:6]}", domains=domains)
            await queue.items.join()
            seconds.append(time.perf_counter() - began)
            del stored
        if seconds:
            p95 = statistics.quantiles(seconds, n=20)[-1] if len(seconds) >= 2 else seconds[0]
            out(f"export membership PATCH to Entra: p95 {p95:.2f} s over {len(seconds)} (median "
                f"{statistics.median(seconds):.2f} s); ratio to {PATCH_GOAL_S:.0f} s {p95 / PATCH_GOAL_S:.2f} "
                "(goal < 1)")
    finally:
        for task in tasks:
            task.cancel()
        await graph.close()
        await tables.close()
        await credential.close()


def run(users: int, groups: int, workers: int, patches: int, scale: float, folder: Path) -> None:
    """Start the stand-ins and run the scenarios."""
    tls = ensure_tls()
    # Each 429 is logged by the gateway; the summary line counts them instead.
    logging.getLogger("shared.adapters.graph").setLevel(logging.ERROR)
    tenant = tenant_file(folder, users)
    # Nothing the bench writes needs to outlive it; on disk, Azurite saves its whole table store as one JSON text
    # again and again, a cost that grows with the push's rows and that Table storage does not have.
    with azurite(folder / "azurite", folder / "azurite.log", in_memory=True) as storage, \
            entra_running(data_dir=folder / "entra", log_path=folder / "entra.log", tenant=str(tenant),
                          limits=True, time_scale=scale, timeout=180) as sim:
        def admin(method: str, path: str, body: Any) -> Any:
            return sim.admin(method, path, body)

        asyncio.run(scenarios(users, groups, workers, patches, scale, sim.tenant_id, sim.url, storage, str(tls.ca),
                              admin, lambda line: print(line, flush=True)))


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--workers", type=int, default=16, help="concurrent export workers")
    parser.add_argument("--patches", type=int, default=40, help="membership PATCHes timed after the push")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="the simulator's throttling windows pass this many times faster")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"bench-export-{uuid.uuid4().hex[:6]}-") as folder:
        run(args.users, args.groups, args.workers, args.patches, args.time_scale, Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
