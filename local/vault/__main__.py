"""CLI: `python -m local.vault serve --port P --data DIR --authority URL --tenant TID [...]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from local.tls import ensure_tls
from local.vault.app import DropConnection, DroppingApp, Settings, VaultApp
from local.vault.auth import parse_roles
from local.vault.limits import Faults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local.vault", description="Key Vault secrets emulator")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve one vault over HTTPS on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8444)
    serve.add_argument("--data", type=Path, required=True, help="folder for the encrypted secrets and the key")
    serve.add_argument("--authority", required=True, help="the Entra authority, e.g. https://127.0.0.1:8443")
    serve.add_argument("--tenant", required=True, help="tenant id named in the challenge and token issuer")
    serve.add_argument("--roles", type=Path, help="JSON file {principal object id: role}, reread on change")
    serve.add_argument("--time-scale", type=float, default=1.0, help="emulated seconds per real second")
    serve.add_argument("--limits", choices=("on", "off"), default="on", help="Key Vault's throttling limits")
    serve.add_argument("--faults", type=json.loads, default={},
                       help='JSON fault settings, e.g. {"error_rate": 0.1, "latency_ms": 50}')
    serve.add_argument("--admin", action="store_true", help="enable the /_emulator/ admin API")
    serve.add_argument("--tls-dir", type=Path, help="folder of the local CA (default .local/tls)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.roles is not None and args.roles.exists():
        try:
            parse_roles(json.loads(args.roles.read_text(encoding="utf-8") or "{}"))
        except ValueError as exc:
            print(f"--roles {args.roles}: {exc}", file=sys.stderr)
            return 2
    try:
        faults = Faults.model_validate(args.faults)
    except ValueError as exc:
        print(f"--faults: {exc}", file=sys.stderr)
        return 2
    if args.time_scale <= 0:
        print("--time-scale must be positive", file=sys.stderr)
        return 2
    tls = ensure_tls(args.tls_dir)
    settings = Settings(data_dir=args.data, base_url=f"https://127.0.0.1:{args.port}", authority=args.authority,
                        tenant=args.tenant, roles_file=args.roles, time_scale=args.time_scale, admin=args.admin,
                        limits=args.limits == "on", faults=faults, ssl_context=tls.client_context())
    import uvicorn  # imported late: the rest of the module is importable without a server

    # A dropped connection is an injected fault, not a crash: keep it out of the error log.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: not (record.exc_info and isinstance(record.exc_info[1], DropConnection)))

    config = uvicorn.Config(DroppingApp(VaultApp(settings)), host="127.0.0.1", port=args.port,
                            ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key), log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
