"""Secret creates per second through KeyVaultSecretStore against the emulator, versus Key Vault's bound.

Key Vault allows 300 secret creates per 10 s per vault (30 per second,
https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits). The emulator enforces that
window; this drives the real adapter (async SDK, client-credential tokens) with concurrent writers
that wait out every 429, and reports the sustained rate against 30/s: because a window admits its
300 creates at once, a client that keeps the vault saturated completes N creates (N - 300) / 30 s
after its first, so the rate is (N - 300) / elapsed, in emulated seconds. A ratio near 1.0 means the
adapter keeps the vault saturated; the emulator's tests prove no window admits more than 300.

    python -m bench.vault --creates 900 --workers 16
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid
from pathlib import Path

from azure.identity.aio import ClientSecretCredential

from local.tls import ensure_tls
from local.vault import rules
from local.vault.process import running
from local.vault.token_issuer import serving
from shared.adapters.vault import KeyVaultSecretStore

BOUND_PER_SECOND = rules.SECRET_CREATES_PER_WINDOW / rules.WINDOW_SECONDS


async def drive(url: str, credential: ClientSecretCredential, ca: str, creates: int, workers: int) -> list[float]:
    """Run `creates` puts over `workers` tasks; return the completion times, in order."""
    done: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(creates):
        queue.put_nowait(i)
    async with KeyVaultSecretStore(url, credential, connection_verify=ca, max_attempts=50,
                                   max_throttle_wait=60) as store:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                await store.put(f"bench-{i % 50}", uuid.uuid4().hex, tags={"state": "pending"})
                done.append(time.monotonic())

        await asyncio.gather(*(worker() for _ in range(workers)))
    return sorted(done)


async def main_async(args: argparse.Namespace) -> str:
    """Start an issuer and an emulator, run the load, and format the summary line."""
    tls = ensure_tls()
    with serving(tls) as issuer, tempfile.TemporaryDirectory() as folder:
        client = issuer.register()
        with running(data_dir=Path(folder) / "data", authority=issuer.url, tenant=issuer.tenant_id, tls=tls,
                     time_scale=args.time_scale) as vault:
            vault.grant(client.oid)
            credential = ClientSecretCredential(issuer.tenant_id, client.client_id, client.secret,
                                                authority=issuer.url, connection_verify=str(tls.ca))
            async with credential:
                start = time.monotonic()
                done = await drive(vault.url, credential, str(tls.ca), args.creates, args.workers)
            total = time.monotonic() - start
    window = rules.WINDOW_SECONDS / args.time_scale
    if done[-1] - done[0] < window:
        return f"vault creates: {len(done)} in {total:.1f}s (fewer than one window; raise --creates)"
    # A window admits 300 at once: a saturating client finishes N creates (N-300)/30 s after its first.
    rate = (len(done) - rules.SECRET_CREATES_PER_WINDOW) / ((done[-1] - done[0]) * args.time_scale)
    ratio = rate / BOUND_PER_SECOND
    return (f"vault creates: sustained {rate:.1f}/s vs bound {BOUND_PER_SECOND:.0f}/s (ratio {ratio:.2f}); "
            f"{len(done)} creates, {args.workers} workers, "
            f"{total:.1f}s real, time-scale {args.time_scale:g}")


def main() -> None:
    """Parse arguments and print one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=900)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
