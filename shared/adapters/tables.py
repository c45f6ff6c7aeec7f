"""EntityStore on Azure Table storage (azure-data-tables, async), the same against Azurite and Azure.

Rows are JSON documents: strings, numbers and booleans are stored as native properties so they stay
readable in Storage Explorer; lists and objects are stored as JSON text and listed in the `_json`
property so they come back as they went in. Optimistic concurrency uses the service's ETags.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.adapters import table_batch
from shared.errors import BridgeError, Conflict, InvalidInput, NotFound, PermissionDenied, Throttled, Transient
from shared.services.ports import Entity, JsonObject
from shared.topology import Table

log = logging.getLogger(__name__)

# Characters Table storage forbids in PartitionKey and RowKey
# (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model).
_FORBIDDEN_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
# A string property holds at most 64 KiB of UTF-16, i.e. 32 K characters (same page).
_MAX_STRING_CHARS = 32 * 1024
_JSON_MARKER = "_json"
_RESERVED = {"PartitionKey", "RowKey", "Timestamp", "etag", _JSON_MARKER}
DATA_ROLE = "Storage Table Data Contributor"


def check_key(kind: str, value: str) -> str:
    """Reject a PartitionKey/RowKey that Table storage would refuse, naming the key."""
    if not value or len(value) > 1024 or _FORBIDDEN_KEY.search(value):
        raise InvalidInput(f"{kind} {value[:80]!r} is empty, too long or contains / \\ # ? or a control character",
                           field=kind)
    return value


def _to_properties(entity: Entity) -> dict[str, Any]:
    props: dict[str, Any] = {"PartitionKey": check_key("PartitionKey", entity.partition_key),
                             "RowKey": check_key("RowKey", entity.row_key)}
    encoded: list[str] = []
    for key, value in entity.data.items():
        if key in _RESERVED:
            raise InvalidInput(f"property name {key!r} is reserved", field=key)
        if value is None:
            continue
        if isinstance(value, (list, dict)):
            value = json.dumps(value, separators=(",", ":"), sort_keys=True)
            encoded.append(key)
        elif not isinstance(value, (str, int, float, bool)):
            raise InvalidInput(f"property {key!r} has type {type(value).__name__}; rows hold JSON values only",
                               field=key)
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**31) <= value < 2**31:
            # The SDK sends plain ints as Int32; wider ones must be marked Int64 explicitly.
            if not -(2**63) <= value < 2**63:
                raise InvalidInput(f"property {key!r} does not fit in 64 bits", field=key)
            value = EntityProperty(value, EdmType.INT64)
        if isinstance(value, str) and len(value) > _MAX_STRING_CHARS:
            raise InvalidInput(f"property {key!r} of {entity.partition_key}/{entity.row_key} is {len(value)} "
                               f"characters; Table storage holds {_MAX_STRING_CHARS}", field=key)
        props[key] = value
    if encoded:
        props[_JSON_MARKER] = ",".join(encoded)
    return props


def _from_properties(raw: Any) -> Entity:
    encoded = set(filter(None, str(raw.get(_JSON_MARKER, "")).split(",")))
    data: JsonObject = {}
    for key, value in raw.items():
        if key in _RESERVED:
            continue
        if isinstance(value, EntityProperty):
            value = value.value
        data[key] = json.loads(value) if key in encoded else value
    etag = raw.metadata.get("etag") if hasattr(raw, "metadata") else None
    return Entity(partition_key=raw["PartitionKey"], row_key=raw["RowKey"], data=data, etag=etag)


def translate(exc: Exception, what: str) -> BridgeError:
    """Map an azure-core exception to the taxonomy; `what` names the row or table."""
    if isinstance(exc, ResourceExistsError):
        return Conflict(f"{what} already exists")
    if isinstance(exc, ResourceModifiedError):
        return Conflict(f"{what} was changed by another writer")
    if isinstance(exc, ResourceNotFoundError):
        return NotFound(f"{what} does not exist")
    if isinstance(exc, ClientAuthenticationError):
        return PermissionDenied(f"storage refused access to {what}: grant the app's identity the "
                                f"'{DATA_ROLE}' role on the storage account", role=DATA_ROLE)
    if isinstance(exc, HttpResponseError):
        headers = getattr(exc.response, "headers", None) or {}
        return status_error(exc.status_code or 0, what, headers.get("Retry-After"), str(exc.reason or ""))
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, OSError)):
        return Transient(f"storage could not be reached for {what}: {type(exc).__name__}")
    return Transient(f"unexpected storage failure on {what}: {type(exc).__name__}")


def status_error(status: int, what: str, retry_after: str | None, reason: str) -> BridgeError:
    """Map a storage status code to the taxonomy; `what` names the row or table."""
    if status == 412:
        return Conflict(f"{what} was changed by another writer")
    if status == 409:
        return Conflict(f"{what} already exists")
    if status == 404:
        return NotFound(f"{what} does not exist")
    if status == 403:
        return PermissionDenied(f"storage refused access to {what}: grant the app's identity the "
                                f"'{DATA_ROLE}' role on the storage account", role=DATA_ROLE)
    if status in (429, 503):
        return Throttled(f"storage is busy with {what}", retry_after=_seconds(retry_after))
    if status >= 500:
        return Transient(f"storage failed on {what} with {status}")
    if status == 413:
        return InvalidInput(f"storage rejected {what}: the request is too large (RequestBodyTooLarge)")
    return InvalidInput(f"storage rejected {what}: {reason or status}")


def _seconds(retry_after: str | None) -> float:
    """Retry-After in seconds; one second when absent or given as a date."""
    try:
        return max(float(retry_after or 1), 0.0)
    except ValueError:
        return 1.0


def _wire(properties: dict[str, Any]) -> dict[str, Any]:
    """Properties for shared.adapters.table_batch: the SDK's Int64 marker becomes table_batch.Int64."""
    return {key: table_batch.Int64(value.value) if isinstance(value, EntityProperty) else value
            for key, value in properties.items()}


def storage_transport() -> AioHttpTransport:
    """The HTTP transport of the storage clients.

    With environment settings on (the SDK's default), aiohttp looks up proxy variables and .netrc on a
    worker thread before every request, which costs about as much as a local round trip. The lookup is
    kept only when a proxy is configured, so a proxy set in the environment is still honoured.
    """
    return AioHttpTransport(use_env_settings=bool(urllib.request.getproxies_environment()))


class TableEntityStore:
    """shared.services.ports.EntityStore on one storage account."""

    def __init__(self, service: TableServiceClient) -> None:
        self._service = service
        # One client per table: building a TableClient configures a pipeline, which costs more than a
        # local round trip; the clients share the service's transport.
        self._clients: dict[Table, TableClient] = {}

    @classmethod
    def from_connection_string(cls, connection_string: str) -> TableEntityStore:
        """For Azurite and for accounts that still allow shared keys."""
        return cls(TableServiceClient.from_connection_string(connection_string, transport=storage_transport()))

    @classmethod
    def from_account(cls, account_name: str, credential: AsyncTokenCredential,
                     endpoint: str | None = None) -> TableEntityStore:
        """Identity-based access (the app's managed identity)."""
        url = endpoint or f"https://{account_name}.table.core.windows.net"
        return cls(TableServiceClient(endpoint=url, credential=credential, transport=storage_transport()))

    async def _table(self, table: Table) -> TableClient:
        client = self._clients.get(table)
        if client is None:
            try:
                await self._service.create_table_if_not_exists(table.value)
            except Exception as exc:
                raise translate(exc, f"table {table.value}") from None
            client = self._clients[table] = self._service.get_table_client(table.value)
        return client

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        """One row, or None."""
        client = await self._table(table)
        try:
            raw = await client.get_entity(check_key("PartitionKey", partition_key), check_key("RowKey", row_key))
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise translate(exc, f"{table.value}/{partition_key}/{row_key}") from None
        return _from_properties(raw)

    async def insert(self, table: Table, entity: Entity) -> Entity:
        """Create a row; Conflict when it exists."""
        client = await self._table(table)
        try:
            meta = await client.create_entity(_to_properties(entity))
        except InvalidInput:
            raise
        except Exception as exc:
            raise translate(exc, f"{table.value}/{entity.partition_key}/{entity.row_key}") from None
        return Entity(entity.partition_key, entity.row_key, dict(entity.data), meta.get("etag"))

    async def upsert(self, table: Table, entity: Entity) -> Entity:
        """Create or replace a row without a concurrency check."""
        client = await self._table(table)
        try:
            meta = await client.upsert_entity(_to_properties(entity), mode=UpdateMode.REPLACE)
        except InvalidInput:
            raise
        except Exception as exc:
            raise translate(exc, f"{table.value}/{entity.partition_key}/{entity.row_key}") from None
        return Entity(entity.partition_key, entity.row_key, dict(entity.data), meta.get("etag"))

    async def upsert_many(self, table: Table, entities: Sequence[Entity]) -> None:
        """Create or replace rows in entity-group transactions of up to 100 rows of one partition.

        A row key given twice keeps its last version (a transaction may touch a row once). The
        transactions are encoded by shared.adapters.table_batch and sent through the SDK's pipeline.
        """
        client = await self._table(table)
        partitions: dict[str, dict[str, Entity]] = {}
        for entity in entities:
            partitions.setdefault(entity.partition_key, {})[entity.row_key] = entity
        prepared = {partition: [_wire(_to_properties(e)) for e in rows.values()]
                    for partition, rows in partitions.items()}
        for partition, rows in prepared.items():
            try:
                transactions = list(table_batch.upsert_transactions(client.url, table.value, rows))
            except ValueError as exc:
                raise InvalidInput(str(exc), field="entity") from None
            sent = 0
            for transaction in transactions:
                await self._submit(client, transaction, f"{table.value}/{partition}",
                                   rows[sent:sent + transaction.rows])
                sent += transaction.rows

    async def _submit(self, client: TableClient, transaction: table_batch.Transaction, where: str,
                      rows: Sequence[dict[str, Any]]) -> None:
        """Send one transaction; `where` ("table/partition") names it in errors."""
        what = f"{where} ({transaction.rows} rows from {rows[0]['RowKey']})"
        request = HttpRequest("POST", f"{client.url.split('?', 1)[0].rstrip('/')}/$batch", headers={
            "x-ms-version": client.api_version, "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx", "Accept": "application/json",
            "Content-Type": transaction.content_type}, content=transaction.body)
        try:
            # TableClient keeps its pipeline in `_client`, the generated client whose send_request is the
            # SDK's documented way of sending a raw request; stream=True keeps the pipeline from decoding
            # the multipart answer as JSON.
            response = await client._client.send_request(request, stream=True)
            await response.read()
        except Exception as exc:
            raise translate(exc, what) from None
        if response.status_code != 202:
            raise status_error(response.status_code, what, response.headers.get("Retry-After"),
                               response.reason or "")
        failed = table_batch.failure(table_batch.parts(response.content), transaction.rows)
        if failed is not None:
            if failed.index is not None and 0 <= failed.index < len(rows):
                what = f"{where}/{rows[failed.index]['RowKey']} in a transaction"
            raise status_error(failed.status, what, None, failed.code)

    async def update(self, table: Table, entity: Entity) -> Entity:
        """Replace a row only if its ETag still matches; Conflict otherwise."""
        client = await self._table(table)
        kwargs: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        if entity.etag is not None:
            kwargs.update(etag=entity.etag, match_condition=MatchConditions.IfNotModified)
        try:
            meta = await client.update_entity(_to_properties(entity), **kwargs)
        except InvalidInput:
            raise
        except Exception as exc:
            raise translate(exc, f"{table.value}/{entity.partition_key}/{entity.row_key}") from None
        return Entity(entity.partition_key, entity.row_key, dict(entity.data), meta.get("etag"))

    async def delete(self, table: Table, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
        """Delete a row; a missing row counts as deleted."""
        client = await self._table(table)
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        try:
            await client.delete_entity(check_key("PartitionKey", partition_key), check_key("RowKey", row_key),
                                       **kwargs)
        except ResourceNotFoundError:
            return
        except Exception as exc:
            raise translate(exc, f"{table.value}/{partition_key}/{row_key}") from None

    async def query(self, table: Table, partition_key: str, *, row_key_from: str | None = None,
                    row_key_to: str | None = None, limit: int | None = None) -> AsyncIterator[Entity]:
        """Rows of one partition in row-key order, optionally within [from, to)."""
        client = await self._table(table)
        clauses = ["PartitionKey eq @pk"]
        params: dict[str, str] = {"pk": check_key("PartitionKey", partition_key)}
        if row_key_from is not None:
            clauses.append("RowKey ge @rkfrom")
            params["rkfrom"] = row_key_from
        if row_key_to is not None:
            clauses.append("RowKey lt @rkto")
            params["rkto"] = row_key_to
        async for found in self._select(client, " and ".join(clauses), params, limit, f"{table.value}/{partition_key}"):
            yield found

    async def query_partitions(self, table: Table, first: str, last: str, *,
                               limit: int | None = None) -> AsyncIterator[Entity]:
        """Rows of every partition whose key is within [first, last), in partition then row-key order.

        One query, paged by the service's continuation tokens, which it may also return at partition
        boundaries (https://learn.microsoft.com/rest/api/storageservices/query-timeout-and-pagination).
        """
        client = await self._table(table)
        # Bounds, not keys: "conn/" bounds the keys "conn.*" and is never stored, so it is not checked as one.
        params = {"first": first, "last": last}
        async for found in self._select(client, "PartitionKey ge @first and PartitionKey lt @last", params, limit,
                                        f"{table.value}/[{first}, {last})"):
            yield found

    @staticmethod
    async def _select(client: TableClient, query: str, params: dict[str, str], limit: int | None,
                      what: str) -> AsyncIterator[Entity]:
        count = 0
        try:
            pager = client.query_entities(query, parameters=params, results_per_page=min(limit or 1000, 1000))
            async for raw in pager:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield _from_properties(raw)
        except BridgeError:
            raise
        except Exception as exc:
            raise translate(exc, what) from None

    async def close(self) -> None:
        """Release the HTTP session (the table clients share it)."""
        self._clients.clear()
        await self._service.close()
