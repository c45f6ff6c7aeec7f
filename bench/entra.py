"""Speed of the Entra simulator, so that it never limits the other benchmarks.

    python -m bench.entra [--users 100000]

Generates a tenant of `--users` users, starts the simulator on it (limits off) and measures: the
time to load the tenant (process start to first answer), a 999-user page of a group's transitive
members (median over every page of the sync group), a first round of users/delta in 999-user pages,
small requests per second (GET /organization from 16 concurrent clients), and the simulator's resident
set (peak and at the end). Prints one line with each figure's ratio to its target (load 10 s per
100,000 users, page 50 ms, 500 requests/s).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from bench.memory import process_rss_mb
from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, generated_tenant
from local.entra.process import running
from local.tls import ensure_tls

LOAD_TARGET_S = 10.0  # per 100,000 users
PAGE_TARGET_MS = 50.0
RATE_TARGET = 500.0


async def _rate(url: str, token: str, context: ssl.SSLContext, seconds: float = 4.0) -> float:
    # aiohttp, because on two shared cores httpx's own per-request cost would be measured, not the server's.
    done = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(ssl=context, limit=16)
    async with aiohttp.ClientSession(connector=connector, headers={"authorization": f"Bearer {token}"}) as http:

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                async with http.get(f"{url}/v1.0/organization") as answer:
                    answer.raise_for_status()
                    await answer.read()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(16)))
        return done / (time.perf_counter() - started)


def measure(users: int, folder: Path) -> str:
    """Generate, load and measure; the summary line."""
    tls = ensure_tls()
    path = folder / "tenant.json"
    with path.open("w", encoding="utf-8") as out:
        generated_tenant(users, groups=10, depth=3, seed=1).write(out)
    started = time.perf_counter()
    with running(data_dir=folder / "data", log_path=folder / "entra.log", tenant=str(path), limits=False,
                 timeout=600) as sim:
        load = time.perf_counter() - started
        context = tls.client_context()
        token = httpx.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=context, data={
            "grant_type": "client_credentials", "client_id": BRIDGE_CLIENT_ID, "client_secret": BRIDGE_CLIENT_SECRET,
            "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
        with httpx.Client(verify=context, headers={"authorization": f"Bearer {token}"}) as http:
            group = http.get(f"{sim.url}/v1.0/groups", params={"$filter": "displayName eq 'Bridge Sync'"}).json()
            url = f"{sim.url}/v1.0/groups/{group['value'][0]['id']}/transitiveMembers/microsoft.graph.user"
            times: list[float] = []
            next_url: str | None = url + "?$top=999&$select=id,userPrincipalName,displayName"
            listed = 0
            while next_url:
                begun = time.perf_counter()
                page = http.get(next_url).json()
                times.append((time.perf_counter() - begun) * 1000)
                listed += len(page["value"])
                next_url = page.get("@odata.nextLink")
            begun, delta_pages, delta_users = time.perf_counter(), 0, 0
            next_url = f"{sim.url}/v1.0/users/delta?$select=id,userPrincipalName,displayName"
            while next_url:
                page = http.get(next_url, headers={"Prefer": "odata.maxpagesize=999"}).json()
                delta_pages, delta_users = delta_pages + 1, delta_users + len(page["value"])
                next_url = page.get("@odata.nextLink")
            delta_s = time.perf_counter() - begun
        rate = asyncio.run(_rate(sim.url, token, context))
        peak, now = process_rss_mb(sim.process.proc.pid if sim.process.proc else 0)
    page_ms = statistics.median(times)
    load_target = LOAD_TARGET_S * max(1.0, users / 100_000)
    return (f"entra simulator: {users} users loaded in {load:.1f} s (ratio to {load_target:.0f} s "
            f"{load / load_target:.2f}); 999-user page median {page_ms:.1f} ms over {len(times)} pages, {listed} "
            f"users (ratio to {PAGE_TARGET_MS:.0f} ms {page_ms / PAGE_TARGET_MS:.2f}); users/delta first round "
            f"{delta_users} users in {delta_pages} pages, {delta_s:.1f} s; {rate:.0f} small requests/s (ratio to "
            f"{RATE_TARGET:.0f} {rate / RATE_TARGET:.2f}); RSS peak {peak:.0f} MB, now {now:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    """Run and print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        print(measure(args.users, Path(folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
