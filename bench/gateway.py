"""The Graph gateway's own overhead per request, against the Entra simulator (limits off).

    python -m bench.gateway [--requests 400]

Times the same GET sent two ways: a bare httpx client with a bearer token, and the gateway (msgraph
request adapter, middleware, retries, throttle governor, error translation). The difference is what
the gateway costs; one line reports it per request and its ratio to a 5 ms budget (Graph itself
answers in tens of milliseconds, so 5 ms keeps the gateway under a tenth of a call). It also times the
first request of a new gateway with and without the warm-up an instance runs at start.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from azure.identity.aio import ClientSecretCredential

from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET
from local.entra.process import running
from local.tls import ensure_tls
from shared.adapters.graph import GraphGateway

BUDGET_MS = 5.0
GRAPH = "https://graph.microsoft.com/.default"


async def measure(requests: int, folder: Path) -> str:
    """Run both clients and return the summary line."""
    tls = ensure_tls()
    with running(data_dir=folder / "entra", log_path=folder / "entra.log", limits=False) as sim:
        credential = ClientSecretCredential(sim.tenant_id, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET,
                                            authority=sim.url, connection_verify=str(tls.ca))
        token = (await credential.get_token(GRAPH)).token
        gateway = GraphGateway(connection="bench", tenant_id=sim.tenant_id, credential=credential, graph_base=sim.url,
                               scope=GRAPH, verify=tls.client_context())
        path = "/organization"
        first_cold, first_warm = await first_requests(sim, tls, path)
        try:
            async with httpx.AsyncClient(verify=tls.client_context(), base_url=f"{sim.url}/v1.0",
                                         headers={"authorization": f"Bearer {token}"}) as raw:
                for _ in range(20):  # warm both paths: connections, token cache, imports
                    await raw.get(path)
                    await gateway.get(path)
                raw_times, gateway_times = [], []
                for _ in range(requests):
                    started = time.perf_counter()
                    (await raw.get(path)).raise_for_status()
                    raw_times.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    await gateway.get(path)
                    gateway_times.append(time.perf_counter() - started)
        finally:
            await gateway.close()
    raw_ms = statistics.median(raw_times) * 1000
    gateway_ms = statistics.median(gateway_times) * 1000
    overhead = max(0.0, gateway_ms - raw_ms)
    return (f"gateway: median {gateway_ms:.2f} ms per GET vs {raw_ms:.2f} ms bare httpx over {requests} requests; "
            f"own overhead {overhead:.2f} ms per request, ratio to the {BUDGET_MS:.0f} ms budget "
            f"{overhead / BUDGET_MS:.2f}; first request of a new gateway {first_cold:.0f} ms cold, "
            f"{first_warm:.0f} ms after warm-up")


async def first_requests(sim: Any, tls: Any, path: str) -> tuple[float, float]:
    """The first GET of a fresh gateway without and with warm-up (sign-in and connection done first)."""
    times = []
    for warm in (False, True):
        credential = ClientSecretCredential(sim.tenant_id, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET,
                                            authority=sim.url, connection_verify=str(tls.ca))
        gateway = GraphGateway(connection="bench", tenant_id=sim.tenant_id, credential=credential, graph_base=sim.url,
                               scope=GRAPH, verify=tls.client_context())
        try:
            if warm:
                await gateway.warm_up()
            started = time.perf_counter()
            await gateway.get(path)
            times.append((time.perf_counter() - started) * 1000)
        finally:
            await gateway.close()
    return times[0], times[1]


def main(argv: list[str] | None = None) -> int:
    """Measure and print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        print(asyncio.run(measure(args.requests, Path(folder))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
