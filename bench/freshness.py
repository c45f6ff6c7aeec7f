"""Freshness: from a membership change in Entra to the user's row in the bridge, through change notifications.

    python -m bench.freshness [--changes 50] [--latency-ms 0] [--delivery-latency-ms 0] [--pause 5]

It starts Azurite, the Entra simulator (Microsoft's throttling limits on), the Key Vault emulator and the
function app in the local host with NOTIFICATION_BASE_URL pointing at it; runs the subscription timer
(Graph's handshake on the host's endpoints) and a first sync; then, one at a time, adds a user to the
sync group through the simulator's admin API (a random pause of up to `--pause` seconds between
two changes) and times how long the user takes to appear in
`GET /api/connections/{c}/users/{id}`. Nothing runs the sync but the notification (the sync timer is
set to once a year). `--latency-ms` adds latency to every Graph request, `--delivery-latency-ms` to each
notification delivery (the simulator's faults).

Split of each change's time: Graph's part, from the change until the simulator sent the notification,
and the bridge's own time, from then until the row is visible (the endpoint's checks, queue pickup, the
incremental sync's reads and writes). Goal: p95 under 10 s end to end, and
under 2 s of the bridge's own time. One summary line with both ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from local.entra.demo import DEMO_TENANT_ID, IDENTITY_PRINCIPAL_ID
from local.entra.process import RunningEntra
from local.entra.process import running as entra_running
from local.host.process import RunningHost, write_settings
from local.host.process import running as host_running
from local.servers import azurite, free_port
from local.tls import ensure_tls
from local.vault.process import running as vault_running

CONNECTION = "fresh"
SYNC_GROUP = "Bridge Sync"
GOAL_P95, GOAL_OWN = 10.0, 2.0


@dataclass
class Stack:
    """The running stand-ins and the host, and clients for them."""

    host: RunningHost
    entra: RunningEntra
    http: httpx.Client
    workdir: Path

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """The simulator's admin API."""
        return self.entra.admin(method, path, body)

    def run_timer(self, name: str) -> None:
        """Run a timer function now through the host's admin endpoint (master key)."""
        answer = self.http.post(f"/admin/functions/{name}", json={"input": ""},
                                headers={"x-functions-key": self.host.master_key or ""})
        answer.raise_for_status()

    def wait(self, check: Any, within: float = 60.0, every: float = 0.02) -> Any:
        """The first truthy value of `check()` within `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        raise TimeoutError(f"not met within {within} s; see the logs under {self.workdir}")


def _connection() -> dict[str, Any]:
    return {"name": CONNECTION, "tenantId": DEMO_TENANT_ID, "cloud": "local", "auth": {"kind": "managedIdentity"},
            "features": {"sync": {"enabled": True, "groups": [SYNC_GROUP]}}}


@contextlib.contextmanager
def running(workdir: Path, *, latency_ms: float = 0.0) -> Iterator[Stack]:
    """Azurite, the simulator, the vault emulator and the host with notifications on, for the block."""
    tls = ensure_tls()
    header = secrets.token_hex(16)
    faults = {"latencyMs": latency_ms} if latency_ms else None
    with contextlib.ExitStack() as stack:
        storage = stack.enter_context(azurite(workdir / "azurite", workdir / "azurite.log"))
        entra = stack.enter_context(entra_running(data_dir=workdir / "entra", log_path=workdir / "entra.log",
                                                  identity_header=header, faults=faults))
        vault = stack.enter_context(vault_running(data_dir=workdir / "vault", authority=entra.url,
                                                  tenant=entra.tenant_id, tls=tls, log_path=workdir / "vault.log"))
        vault.grant(IDENTITY_PRINCIPAL_ID, "Key Vault Secrets Officer")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        values = {"AzureWebJobsStorage": storage, "CONNECTIONS": json.dumps([_connection()]),
                  "KEY_VAULT_URL": vault.url, "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls.ca),
                  "SSL_CERT_FILE": str(tls.bundle),
                  "REQUESTS_CA_BUNDLE": str(tls.bundle), "IDENTITY_ENDPOINT": f"{entra.url}/msi/token",
                  "IDENTITY_HEADER": header, "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *",
                  "NOTIFICATION_BASE_URL": url, "LOG_FORMAT": "json"}
        key, master = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
        settings = write_settings(workdir / "local.settings.json", values, function_key=key, master_key=master)
        host = stack.enter_context(host_running(settings_file=settings, function_key=key, port=port,
                                                log_path=workdir / "host.log", master_key=master))
        http = stack.enter_context(httpx.Client(base_url=host.url, headers={"x-functions-key": key}, timeout=30))
        yield Stack(host, entra, http, workdir)


def subscribed(stack: Stack) -> dict[str, Any]:
    """Run the subscription timer and wait until both subscriptions are recorded."""
    stack.run_timer("notification_timer")

    def done() -> dict[str, Any] | None:
        status = stack.http.get(f"/api/connections/{CONNECTION}/notifications").json()
        subs = status.get("subscriptions", {})
        return status if all(subs.get(k, {}).get("subscriptionId") for k in ("groups", "users")) else None

    found: dict[str, Any] = stack.wait(done)
    return found


def first_sync(stack: Stack) -> None:
    """A full sync before the changes, waited for."""
    assert stack.http.post(f"/api/connections/{CONNECTION}/sync").status_code == 202
    stack.wait(lambda: (stack.http.get(f"/api/connections/{CONNECTION}/status").json().get("lastSync") or {})
               .get("outcome") == "completed", within=120)


def new_users(stack: Stack, count: int) -> list[str]:
    """Users in the tenant outside the sync group (made through the admin API)."""
    made = []
    for n in range(count):
        answer = stack.admin("POST", "/_sim/users", {"userPrincipalName": f"fresh{n}-{secrets.token_hex(3)}"
                                                                          "@bridge-demo.example",
                                                     "displayName": f"Fresh {n}"})
        made.append(str(answer["id"]))
    return made


def sync_group(stack: Stack) -> str:
    """The object id of the sync group."""
    headers = {"authorization": "Bearer " + _graph_token(stack)}
    with httpx.Client(verify=ensure_tls().client_context(), timeout=30) as graph:
        found = graph.get(f"{stack.entra.url}/v1.0/groups", headers=headers,
                          params={"$filter": f"displayName eq '{SYNC_GROUP}'", "$select": "id"}).json()
    return str(found["value"][0]["id"])


def _graph_token(stack: Stack) -> str:
    from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET

    with httpx.Client(verify=ensure_tls().client_context(), timeout=30) as login:
        answer = login.post(f"{stack.entra.url}/{stack.entra.tenant_id}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": BRIDGE_CLIENT_ID, "client_secret": BRIDGE_CLIENT_SECRET,
            "scope": "https://graph.microsoft.com/.default"})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def deliveries(stack: Stack) -> list[float]:
    """When the simulator sent each delivery of the groups subscription to the host."""
    for sub in stack.admin("GET", "/_sim/subscriptions")["value"]:
        if sub["resource"] == "groups":
            return [float(d["sentAt"]) for d in sub["deliveries"]["recent"]]
    return []


@dataclass
class Measured:
    """One change's timings in seconds."""

    total: float
    graph: float
    own: float


def measure(stack: Stack, users: list[str], group: str, *, pause: float = 5.0, seed: int = 1) -> list[Measured]:
    """Add each user to the sync group in turn and time until its row is in the bridge; between two changes
    a random pause of up to `pause` seconds, so some changes find the host's queue poller at its longest
    interval (host.json maxPollingInterval) and some soon after the last message."""
    found: list[Measured] = []
    rng = random.Random(seed)
    for user in users:
        seen = len(deliveries(stack))
        start = time.time()
        stack.admin("POST", f"/_sim/groups/{group}/members", {"ids": [user]})
        stack.wait(lambda u=user: stack.http.get(f"/api/connections/{CONNECTION}/users/{u}").status_code == 200,
                   within=120, every=0.01)
        end = time.time()
        fresh = [at for at in deliveries(stack)[seen:] if at >= start]
        delivered = min(fresh) if fresh else end
        found.append(Measured(end - start, delivered - start, end - delivered))
        time.sleep(rng.uniform(0, pause))
    return found


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(0.95 * len(ordered)) - 1))]


def summary(results: list[Measured]) -> str:
    """The one summary line."""
    totals, own, graph = [r.total for r in results], [r.own for r in results], [r.graph for r in results]
    p95_total, p95_own = _p95(totals), _p95(own)
    return (f"freshness: {len(results)} membership changes to rows via notifications: p50 "
            f"{statistics.median(totals):.2f} s, p95 {p95_total:.2f} s (Graph's delivery p50 "
            f"{statistics.median(graph):.2f} s; bridge's own time p50 "
            f"{statistics.median(own):.2f} s, p95 {p95_own:.2f} s); ratio to {GOAL_P95:.0f} s "
            f"{p95_total / GOAL_P95:.2f}, own time ratio to {GOAL_OWN:.0f} s {p95_own / GOAL_OWN:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every Graph request")
    parser.add_argument("--delivery-latency-ms", type=float, default=0.0, help="latency added to each delivery")
    parser.add_argument("--pause", type=float, default=5.0, help="longest random pause between changes (s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp, running(Path(tmp),
                                                                                latency_ms=args.latency_ms) as stack:
        started = time.monotonic()
        users = new_users(stack, args.changes)
        subscribed(stack)
        first_sync(stack)
        if args.delivery_latency_ms:
            faults = stack.admin("GET", "/_sim/faults")
            faults["routes"] = [{"path": "^/_notifications", "latencyMs": args.delivery_latency_ms}]
            stack.admin("PUT", "/_sim/faults", faults)
        print(f"(stack ready, {args.changes} users made, subscribed and synced in {time.monotonic() - started:.1f} s)",
              flush=True)
        results = measure(stack, users, sync_group(stack), pause=args.pause)
        print(summary(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
