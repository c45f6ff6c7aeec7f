"""`python -m local.entra serve|generate`: the Entra tenant simulator.

    python -m local.entra serve --port 8443 --tenant demo|fabrikam|FILE [--tenant ...] --data DIR [--admin]
                                [--time-scale X] [--limits on|off] [--identity-header VALUE] [--faults JSON]
    python -m local.entra generate --users N --groups G --depth D --seed S --out FILE
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from pathlib import Path

import uvicorn

from local.entra.app import build
from local.entra.core import Faults, Simulator
from local.entra.demo import demo_tenant, generated_tenant, second_demo_tenant
from local.entra.state import Store, Tenant, load_tenant
from local.entra.tenants import TenantRouter
from local.entra.tokens import Signer
from local.tls import ensure_tls


def _tenant(spec: str) -> Tenant:
    if spec == "demo":
        return demo_tenant()
    if spec == "fabrikam":
        return second_demo_tenant()
    return load_tenant(Path(spec))


def serve(args: argparse.Namespace) -> int:
    """Run the simulator until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = Path(args.data)
    started = time.perf_counter()
    # One signing key for every tenant, as Entra's keys are common; each tenant's issuer differs.
    data.mkdir(parents=True, exist_ok=True)
    signer = Signer(data)
    served = []
    for n, spec in enumerate(args.tenant or ["demo"]):
        # The first tenant keeps its state in the data folder itself, the others in tenants/<n>/ below it.
        store = Store.open(data if n == 0 else data / "tenants" / str(n), _tenant(spec))
        faults = Faults()
        if args.faults:
            faults.update(json.loads(args.faults))
        sim = Simulator(store, signer, base_url=f"https://127.0.0.1:{args.port}", admin=args.admin,
                        identity_header=args.identity_header, limits=args.limits == "on",
                        time_scale=args.time_scale, faults=faults)
        served.append((sim, build(sim)))
        print(f"entra simulator: tenant {store.tenant.tenantId} ({len(store.tenant.users)} users) loaded in "
              f"{time.perf_counter() - started:.2f} s; https://127.0.0.1:{args.port}", flush=True)
    # The tenants' objects live as long as the process: out of the collector's sight, a collection
    # no longer walks a million users.
    gc.collect()
    gc.freeze()
    tls = ensure_tls()
    app = served[0][1] if len(served) == 1 else TenantRouter(served)
    uvicorn.run(app, host="127.0.0.1", port=args.port, ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key),
                log_level="warning", timeout_graceful_shutdown=5)
    return 0


def generate(args: argparse.Namespace) -> int:
    """Write a generated tenant file."""
    started = time.perf_counter()
    gc.disable()  # a million objects made to be written: collecting them meanwhile only costs time
    tenant = generated_tenant(args.users, args.groups, args.depth, args.seed)
    with Path(args.out).open("w", encoding="utf-8") as out:
        tenant.write(out)
    print(f"wrote {args.out}: {len(tenant.users)} users, {len(tenant.groups)} groups, tenant {tenant.tenantId} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def command_line() -> argparse.ArgumentParser:
    """The simulator's command line."""
    parser = argparse.ArgumentParser(prog="python -m local.entra", description="Entra tenant simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve login, managed identity and Graph over HTTPS on 127.0.0.1")
    run.add_argument("--port", type=int, default=8443)
    run.add_argument("--tenant", action="append", help="'demo', 'fabrikam' (a second demo tenant) or a tenant file "
                     "(JSON); repeat it to serve several tenants (the first is the default; default: demo)")
    run.add_argument("--data", default=".local/entra", help="folder where the tenant state is kept")
    run.add_argument("--admin", action="store_true", help="serve the /_sim/ admin API")
    run.add_argument("--time-scale", type=float, default=1.0, help="throttling windows pass this much faster")
    run.add_argument("--limits", choices=["on", "off"], default="on")
    run.add_argument("--identity-header", default=None, help="the X-IDENTITY-HEADER managed identity requires")
    run.add_argument("--faults", default=None, help='e.g. {"errorRate": 0.1, "latencyMs": 100}')
    gen = commands.add_parser("generate", help="write a large deterministic tenant file")
    gen.add_argument("--users", type=int, required=True)
    gen.add_argument("--groups", type=int, default=10)
    gen.add_argument("--depth", type=int, default=3)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line."""
    args = command_line().parse_args(argv)
    return serve(args) if args.command == "serve" else generate(args)


if __name__ == "__main__":
    sys.exit(main())
