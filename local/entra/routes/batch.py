"""JSON batching: POST /v1.0/$batch and /beta/$batch.

https://learn.microsoft.com/graph/json-batching: up to 20 requests, relative URLs (the leading slash
optional, as Graph takes both), `dependsOn` (a
failed dependency answers 424), each request authorized and throttled on its own, so a 200 batch can
hold 429 items with their own Retry-After.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.entra.core import GraphError, Simulator, json_body

MAX_REQUESTS = 20


def routes(sim: Simulator) -> list[Route]:
    """The batch routes."""

    def check(requests: Any) -> list[dict[str, Any]]:
        if not isinstance(requests, list) or not requests:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > MAX_REQUESTS:
            raise GraphError(400, "BadRequest", f"The number of batch requests exceeds the limit of {MAX_REQUESTS}.")
        ids = [str(r.get("id", "")) for r in requests if isinstance(r, dict)]
        if len(ids) != len(requests) or len(set(ids)) != len(ids) or "" in ids:
            raise GraphError(400, "BadRequest", "Each batch request needs a unique id.")
        for item in requests:
            url = str(item.get("url") or "")
            if item.get("method") not in ("GET", "POST", "PATCH", "PUT", "DELETE") or not url or "://" in url:
                raise GraphError(400, "BadRequest", "Each batch request needs a method and a relative url.")
            # Graph takes relative urls with or without the leading slash ("users/{id}" or "/users/{id}").
            item["url"] = url if url.startswith("/") else "/" + url
        return requests

    async def batch(request: Request) -> Response:
        version = request.url.path.split("/")[1]
        try:
            sim.authenticate(request)
            items = check((await json_body(request)).get("requests"))
        except GraphError as err:
            return sim.error(request, err)
        app = sim.app
        if app is None:
            return sim.error(request, GraphError(500, "generalException", "batching is not ready"))
        results: dict[str, dict[str, Any]] = {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=sim.base_url) as client:
            for item in items:
                depends = item.get("dependsOn") or []
                if any(results.get(str(d), {}).get("status", 200) >= 400 for d in depends):
                    ids = sim.request_ids(request)
                    results[str(item["id"])] = {"id": str(item["id"]), "status": 424, "body": {"error": {
                        "code": "FailedDependency", "message": "The request could not be completed because a "
                        "request it depends on failed.", "innerError": {
                            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                            "request-id": ids["request-id"], "client-request-id": ids["client-request-id"]}}}}
                    continue
                headers = {k: str(v) for k, v in (item.get("headers") or {}).items()}
                headers["authorization"] = request.headers.get("authorization", "")
                body = item.get("body")
                content = None if body is None else json.dumps(body).encode()
                if content is not None:
                    headers.setdefault("content-type", "application/json")
                answer = await client.request(item["method"], f"/{version}{item['url']}", headers=headers,
                                              content=content)
                try:
                    parsed = answer.json() if answer.content else None
                except ValueError:
                    parsed = None
                keep = {k: v for k, v in answer.headers.items() if k.lower() in (
                    "retry-after", "location", "content-type", "request-id", "x-ms-resource-unit")}
                results[str(item["id"])] = {"id": str(item["id"]), "status": answer.status_code, "headers": keep,
                                            **({"body": parsed} if parsed is not None else {})}
        return JSONResponse({"responses": [results[str(i["id"])] for i in items]}, headers=sim.request_ids(request))

    return [Route(f"/{version}/$batch", batch, methods=["POST"]) for version in ("v1.0", "beta")]
