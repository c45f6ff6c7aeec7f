"""CLI of the Event Grid stand-in.

    python -m local.eventgrid serve --port 8445 --data DIR --key KEY [--time-scale N]
    python -m local.eventgrid subscribe --endpoint URL [--types bridge.user.imported ...] [--name NAME] [--topic URL]

`subscribe` talks to a running stand-in: the one `make run` started (found in .local/stack-env.json) unless
`--topic` names another. The stand-in validates the endpoint with the webhook handshake first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from local.servers import ROOT
from local.tls import ensure_tls

STACK_ENV = ROOT / ".local" / "stack-env.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local.eventgrid", description="Event Grid topic stand-in")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve one topic over HTTPS on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8445)
    serve.add_argument("--data", type=Path, required=True, help="folder for subscriptions and dead letters")
    serve.add_argument("--key", required=True, help="the topic's access key (aeg-sas-key)")
    serve.add_argument("--time-scale", type=float, default=1.0, help="Event Grid seconds per real second (retries)")
    serve.add_argument("--authority", help="Entra authority whose tokens are accepted, e.g. https://127.0.0.1:8443")
    serve.add_argument("--tenant", help="tenant id of those tokens")
    serve.add_argument("--tls-dir", type=Path, help="folder of the local CA (default .local/tls)")
    sub = commands.add_parser("subscribe", help="add a webhook subscription to a running stand-in")
    sub.add_argument("--endpoint", required=True, help="the webhook URL (answers the OPTIONS handshake)")
    sub.add_argument("--types", nargs="*", default=[], help="CloudEvents types to deliver (default: all)")
    sub.add_argument("--name", default="webhook", help="subscription name (letters, digits, -)")
    sub.add_argument("--topic", help="the stand-in's base URL (default: the one make run started)")
    return parser


def _topic_url(given: str | None) -> str:
    if given:
        return given.rstrip("/")
    endpoint = os.environ.get("EVENTGRID_TOPIC_ENDPOINT")
    if not endpoint and STACK_ENV.exists():
        endpoint = json.loads(STACK_ENV.read_text(encoding="utf-8")).get("EVENTGRID_TOPIC_ENDPOINT")
    if not endpoint:
        raise SystemExit("no running stand-in found: start `make run` or pass --topic https://127.0.0.1:PORT")
    return endpoint.removesuffix("/api/events").rstrip("/")


def subscribe(topic: str, name: str, endpoint: str, types: list[str], context: ssl.SSLContext) -> int:
    """PUT the subscription; print the stand-in's answer."""
    body = json.dumps({"endpoint": endpoint, "types": types}).encode()
    request = urllib.request.Request(f"{topic}/_admin/subscriptions/{name}", data=body, method="PUT",  # noqa: S310
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as answer:  # noqa: S310 - loopback
            print(answer.read().decode())
            return 0
    except urllib.error.HTTPError as err:
        print(f"subscription refused ({err.code}): {err.read().decode()}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve, or subscribe."""
    args = _parser().parse_args(argv)
    tls = ensure_tls(getattr(args, "tls_dir", None))
    if args.command == "subscribe":
        return subscribe(_topic_url(args.topic), args.name, args.endpoint, args.types, tls.client_context())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.time_scale <= 0:
        print("--time-scale must be positive", file=sys.stderr)
        return 2
    import uvicorn  # imported late: the rest is importable without a server

    from local.eventgrid.app import Settings, build_app

    settings = Settings(data_dir=args.data, key=args.key, time_scale=args.time_scale, authority=args.authority,
                        tenant=args.tenant, ssl_context=tls.client_context())
    config = uvicorn.Config(build_app(settings), host="127.0.0.1", port=args.port, ssl_certfile=str(tls.cert),
                            ssl_keyfile=str(tls.key), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
