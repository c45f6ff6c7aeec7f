"""Entity operations on Table storage's REST protocol, sent through a short azure-core pipeline.

azure-data-tables spends about as much CPU per entity operation as a local round trip takes: its
generated serializer models every request and answer, and its pipeline runs thirteen policies. A
passkey registration makes eight such operations, so the SDK's own work was most of the bridge's time
per request. The operations the bridge uses are few and documented, so they are written here:

- Query Entities, with a point query as its one-row case
  (https://learn.microsoft.com/rest/api/storageservices/query-entities),
- Insert Entity (https://learn.microsoft.com/rest/api/storageservices/insert-entity),
- Insert Or Replace Entity (https://learn.microsoft.com/rest/api/storageservices/insert-or-replace-entity),
- Update Entity (https://learn.microsoft.com/rest/api/storageservices/update-entity2),
- Delete Entity (https://learn.microsoft.com/rest/api/storageservices/delete-entity1),
- entity-group transactions (shared.adapters.table_batch).

They go through an azure-core pipeline that keeps what matters of the SDK's: the client request id,
the date and version headers and the user agent (set by one policy here), the SDK's own
authentication policy for the credential it was given (shared key or Microsoft Entra token) and
azure-core's retry policy. Left out are the policies that do nothing for these requests: proxy
lookup, redirects, content decoding, secondary hosts, the custom hook, HTTP logging (which
shared/logs.py silences anyway) and distributed tracing (the app configures no tracer).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast
from urllib.parse import quote

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline import AsyncPipeline, PipelineRequest
from azure.core.pipeline.policies import (
    AsyncRetryPolicy,
    SansIOHTTPPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest

# The SDK's choice of authentication policy for a credential: SharedKey signing for an account key
# (Azurite's path-style addresses included), a bearer token with the storage scope otherwise. Private
# to azure-data-tables; the version is pinned in requirements and the Azurite tests sign with it.
from azure.data.tables import __version__ as TABLES_SDK_VERSION
from azure.data.tables.aio._authentication_async import _configure_credential

from shared.services.ports import Entity, JsonObject

#: What Table storage's JSON answers carry besides the entity's own properties.
_SYSTEM = frozenset({"PartitionKey", "RowKey", "Timestamp", "odata.etag", "odata.metadata", "odata.type",
                     "odata.id", "odata.editLink"})
_TYPE_SUFFIX = "@odata.type"
JSON_MARKER = "_json"
MINIMAL_METADATA = "application/json;odata=minimalmetadata"


@dataclass(frozen=True)
class Answer:
    """One response: status, headers and body.

    `headers` is the transport's own mapping, which is case-insensitive: Azurite sends `Etag` where
    Azure sends `ETag`, and both are read as `ETag`.
    """

    status: int
    headers: Mapping[str, str]
    content: bytes

    def error_code(self) -> str:
        """The service's error code (`odata.error.code`), or the status line's number."""
        try:
            return str(json.loads(self.content)["odata.error"]["code"])
        except (ValueError, KeyError, TypeError):
            return str(self.status)


class _StorageHeaders(SansIOHTTPPolicy[HttpRequest, AsyncHttpResponse]):
    """The headers the SDK's first three policies set, in one step: a client request id, the SDK's
    user agent, x-ms-version and the OData version headers, and the date SharedKey signs (formatted
    once per second)."""

    def __init__(self, api_version: str) -> None:
        self._api_version = api_version
        self._user_agent = UserAgentPolicy(sdk_moniker=f"data-tables/{TABLES_SDK_VERSION}").user_agent
        self._second = 0
        self._date = ""

    def on_request(self, request: PipelineRequest[HttpRequest]) -> None:
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, formatdate(now, usegmt=True)
        headers = request.http_request.headers
        headers["x-ms-client-request-id"] = str(uuid.uuid4())
        headers["User-Agent"] = self._user_agent
        headers["x-ms-version"] = self._api_version
        headers["DataServiceVersion"] = "3.0"
        headers["MaxDataServiceVersion"] = "3.0;NetFx"
        headers["x-ms-date"] = headers["Date"] = self._date


def key_literal(value: str) -> str:
    """A key inside an entity address: single quotes doubled, then percent-encoded (as the SDK does)."""
    return quote(value.replace("'", "''"), safe="")


def string_literal(value: str) -> str:
    """A string constant inside a $filter expression."""
    return "'" + value.replace("'", "''") + "'"


def decode(raw: Mapping[str, Any], etag: str | None = None) -> Entity:
    """An entity from its JSON form (minimal metadata): 64-bit integers and doubles come back typed,
    properties listed in `_json` come back as the lists and objects they were."""
    data: JsonObject = {}
    typed: dict[str, Any] | None = None
    for name, value in raw.items():
        if name in _SYSTEM:
            continue
        if name.endswith(_TYPE_SUFFIX):
            if typed is None:
                typed = {}
            typed[name[:-len(_TYPE_SUFFIX)]] = value
            continue
        data[name] = value
    if typed:
        for name, kind in typed.items():
            if name in data:
                if kind == "Edm.Int64":
                    data[name] = int(data[name])
                elif kind == "Edm.Double":
                    data[name] = float(data[name])
    marker = data.pop(JSON_MARKER, None)
    if marker:
        for name in str(marker).split(","):
            if name in data:
                data[name] = json.loads(data[name])
    return Entity(partition_key=str(raw["PartitionKey"]), row_key=str(raw["RowKey"]), data=data,
                  etag=etag or cast(str | None, raw.get("odata.etag")))


class TableRest:
    """Sends Table storage requests for one account through the short pipeline."""

    def __init__(self, account_url: str, credential: AzureNamedKeyCredential | AzureSasCredential |
                 AsyncTokenCredential, transport: AsyncHttpTransport[Any, Any], api_version: str) -> None:
        self.account_url = account_url.split("?", 1)[0].rstrip("/")
        policies: list[Any] = [
            _StorageHeaders(api_version),
            _configure_credential(credential),
            AsyncRetryPolicy(),
        ]
        self._pipeline: AsyncPipeline[HttpRequest, AsyncHttpResponse] = AsyncPipeline(transport, policies=policies)

    async def send(self, method: str, path: str, *, query: str = "", headers: Mapping[str, str] | None = None,
                   content: bytes | str | None = None) -> Answer:
        """One request to `{account}/{path}{query}`; raises azure-core's errors when no answer came."""
        request = HttpRequest(method, f"{self.account_url}/{path}{query}", headers=dict(headers or {}),
                              content=content)
        # Not streamed: the transport has read the whole body by the time the pipeline returns.
        response = (await self._pipeline.run(request, stream=False)).http_response
        return Answer(response.status_code, response.headers, response.content)
