"""In-memory fakes of the ports in shared.services.ports, for pure service tests.

They implement the port's contract (ETags, Conflict, NotFound, ordering), not a call script, so a
service tested against them behaves the same against the real adapters (`tests/contracts` checks it).
The storage, vault, queue and audit stand-ins live in `local/memory.py`, which benchmarks use too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from local.memory import (
    AuditEntry,
    FakeAuditSink,
    FakeBatchEntityStore,
    FakeClock,
    FakeEntityStore,
    FakeSecretStore,
    FakeWorkQueue,
)
from shared.services.ports import JsonObject

__all__ = ["AuditEntry", "FakeAuditSink", "FakeBatchEntityStore", "FakeClock", "FakeEntityStore",
           "FakeSecretStore", "FakeWorkQueue"]


class PathGraph:
    """The Graph adapters' gateway over a fake that answers by path (`get(path)`, `send(method, path, body=)`).

    The adapters build their requests with msgraph-sdk's request builders; this turns each into the path
    relative to the version root (without the function-call `()` the builders write) and its query into
    `params`, so a fake written against paths keeps working.
    """

    base = "https://graph.test"

    def __init__(self, fake: Any) -> None:
        from shared.adapters.graph.gateway import request_builders

        self.fake = fake
        self.requests = request_builders(self.base)

    @staticmethod
    def _split(request: Any) -> tuple[str, dict[str, str]]:
        from urllib.parse import parse_qsl, urlsplit

        from shared.adapters.graph.gateway import url_of

        url = url_of(request, "")
        if url.startswith(("https://", "http://")):
            return url, {}
        parts = urlsplit(url)
        return parts.path.replace("()", ""), dict(parse_qsl(parts.query))

    async def get(self, request: Any, **options: Any) -> JsonObject:
        path, params = self._split(request)
        found: JsonObject = await self.fake.get(path, **({"params": params} if params else {}), **options)
        return found

    async def pages(self, request: Any, **options: Any) -> AsyncIterator[JsonObject]:
        path, params = self._split(request)
        async for page in self.fake.pages(path, **({"params": params} if params else {}), **options):
            yield page

    async def send(self, request: Any, **options: Any) -> Any:
        from shared.adapters.graph.gateway import body_of, method_of

        path, params = self._split(request)
        return await self.fake.send(method_of(request), path, body=body_of(request),
                                    **({"params": params} if params else {}), **options)

    def url(self, request: Any, *, api: str = "v1.0", relative: bool = False) -> str:
        from shared.adapters.graph.gateway import url_of

        return url_of(request, "" if relative else f"{self.base}/{api}")
