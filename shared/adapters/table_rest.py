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
the date and version headers and the user agent (set by one policy here), authentication for the
credential it was given (Shared Key signing written here against the documented scheme, azure-core's
SAS and bearer-token policies) and azure-core's retry policy. Left out are the policies that do
nothing for these requests: proxy lookup, redirects, content decoding, secondary hosts, the custom
hook, HTTP logging (which shared/logs.py silences anyway) and distributed tracing (the app
configures no tracer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlsplit

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline import AsyncPipeline, PipelineRequest
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    AsyncRetryPolicy,
    AzureSasCredentialPolicy,
    SansIOHTTPPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest
from azure.data.tables import __version__ as TABLES_SDK_VERSION
from yarl import URL

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


#: The token audience of Azure Storage, the same in every cloud
#: (https://learn.microsoft.com/azure/storage/common/authorize-data-operations-portal and
#: https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory).
STORAGE_SCOPE = "https://storage.azure.com/.default"


class SharedKeySigning(SansIOHTTPPolicy[HttpRequest, AsyncHttpResponse]):
    """Signs each request with the account key, as Shared Key for the Table service documents
    (https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key#table-service-shared-key-authorization):
    StringToSign = VERB, Content-MD5, Content-Type, Date (x-ms-date when sent), CanonicalizedResource,
    one per line, where CanonicalizedResource is `/account` + the encoded URI path (+ `?comp=` if any).

    The path is the one the transport puts on the wire: aiohttp re-quotes every URL through yarl
    (`'` and `(` travel unencoded), and the service signs what it received, so the path is
    normalised the same way here. Azurite's path-style addresses keep the account in the path, so it
    appears twice, as the service expects.
    """

    def __init__(self, credential: AzureNamedKeyCredential) -> None:
        self._credential = credential

    def on_request(self, request: PipelineRequest[HttpRequest]) -> None:
        http = request.http_request
        name, key = self._credential.named_key
        headers = http.headers
        resource = f"/{name}{URL(http.url).raw_path}"
        comp = [value for field, value in parse_qsl(urlsplit(http.url).query) if field == "comp"]
        if comp:
            resource += f"?comp={comp[0]}"
        to_sign = "\n".join((http.method, headers.get("Content-MD5", ""), headers.get("Content-Type", ""),
                             headers.get("x-ms-date") or headers.get("Date", ""), resource))
        digest = hmac.new(base64.b64decode(key), to_sign.encode("utf-8"), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {name}:{base64.b64encode(digest).decode()}"


def authentication(credential: AzureNamedKeyCredential | AzureSasCredential | AsyncTokenCredential) -> Any:
    """The policy that authenticates requests with `credential`: Shared Key for an account key, the
    SAS for a SAS, and a Microsoft Entra token with the storage scope for a token credential."""
    if isinstance(credential, AzureNamedKeyCredential):
        return SharedKeySigning(credential)
    if isinstance(credential, AzureSasCredential):
        return AzureSasCredentialPolicy(credential)
    return AsyncBearerTokenCredentialPolicy(credential, STORAGE_SCOPE)


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
            authentication(credential),
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
