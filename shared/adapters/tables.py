"""EntityStore on Azure Table storage, the same against Azurite and Azure.

Rows are JSON documents: strings, numbers and booleans are stored as native properties so they stay
readable in Storage Explorer; lists and objects are stored as JSON text and listed in the `_json`
property so they come back as they went in. Optimistic concurrency uses the service's ETags.
Tables are created with azure-data-tables; entities travel through shared.adapters.table_rest.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

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
from azure.data.tables.aio import TableServiceClient

from shared.adapters import table_batch
from shared.adapters.table_rest import (
    JSON_MARKER,
    MINIMAL_METADATA,
    Answer,
    TableRest,
    decode,
    key_literal,
    string_literal,
)
from shared.errors import BridgeError, Conflict, InvalidInput, NotFound, PermissionDenied, Throttled, Transient
from shared.services.ports import Entity
from shared.topology import Table

log = logging.getLogger(__name__)

# Characters Table storage forbids in PartitionKey and RowKey
# (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model).
_FORBIDDEN_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
# A string property holds at most 64 KiB of UTF-16, i.e. 32 K characters (same page).
_MAX_STRING_CHARS = 32 * 1024
_RESERVED = {"PartitionKey", "RowKey", "Timestamp", "etag", JSON_MARKER}
DATA_ROLE = "Storage Table Data Contributor"
#: Rows per page of a query: the service's maximum (Query Entities).
PAGE_ROWS = 1000
_NO_METADATA = "application/json;odata=nometadata"
_READ = {"Accept": MINIMAL_METADATA}
# Writes ask for no body back: the new ETag is in the answer's headers.
_WRITE = {"Accept": _NO_METADATA, "Content-Type": "application/json", "Prefer": "return-no-content"}


def _kind(exists: bool | None) -> str:
    """The transaction operation for what a caller knows of a row: it exists, it does not, or nothing."""
    if exists is None:
        return table_batch.UPSERT
    return table_batch.UPDATE if exists else table_batch.INSERT


def check_key(kind: str, value: str) -> str:
    """Reject a PartitionKey/RowKey that Table storage would refuse, naming the key."""
    if not value or len(value) > 1024 or _FORBIDDEN_KEY.search(value):
        raise InvalidInput(f"{kind} {value[:80]!r} is empty, too long or contains / \\ # ? or a control character",
                           field=kind)
    return value


def check_property(key: str, value: Any, *, where: str = "") -> Any:
    """A property as Table storage keeps it (a list or object as compact JSON text; None: not stored), or
    InvalidInput naming the property when Table storage would refuse it (reserved name, type, 64-bit range,
    non-finite number, string length)."""
    if key in _RESERVED:
        raise InvalidInput(f"property name {key!r} is reserved", field=key)
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        value = json.dumps(value, separators=(",", ":"), sort_keys=True)
    elif not isinstance(value, (str, int, float, bool)):
        raise InvalidInput(f"property {key!r} has type {type(value).__name__}; rows hold JSON values only",
                           field=key)
    elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise InvalidInput(f"property {key!r} does not fit in 64 bits", field=key)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"property {key!r} is {value}; rows hold finite numbers only", field=key)
    if isinstance(value, str) and len(value) > _MAX_STRING_CHARS:
        raise InvalidInput(f"property {key!r}{where} is {len(value)} characters; Table storage holds "
                           f"{_MAX_STRING_CHARS}", field=key)
    return value


def _to_properties(entity: Entity) -> dict[str, Any]:
    """The entity's wire properties (shared.adapters.table_batch.entity_json adds the type annotations)."""
    props: dict[str, Any] = {"PartitionKey": check_key("PartitionKey", entity.partition_key),
                             "RowKey": check_key("RowKey", entity.row_key)}
    encoded: list[str] = []
    for key, value in entity.data.items():
        checked = check_property(key, value, where=f" of {entity.partition_key}/{entity.row_key}")
        if checked is None:
            continue
        if isinstance(value, (list, dict)):
            encoded.append(key)
        props[key] = checked
    if encoded:
        props[JSON_MARKER] = ",".join(encoded)
    return props


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


def storage_transport() -> AioHttpTransport:
    """The HTTP transport of the storage clients.

    With environment settings on (the SDK's default), aiohttp looks up proxy variables and .netrc on a
    worker thread before every request, which costs about as much as a local round trip. The lookup is
    kept only when a proxy is configured, so a proxy set in the environment is still honoured.
    """
    return AioHttpTransport(use_env_settings=bool(urllib.request.getproxies_environment()))


class TableEntityStore:
    """shared.services.ports.EntityStore on one storage account.

    Tables are created with azure-data-tables; rows are read and written through
    shared.adapters.table_rest, on the same transport and with the SDK's authentication policy.
    """

    def __init__(self, service: TableServiceClient, transport: AioHttpTransport) -> None:
        self._service = service
        if service.credential is None:
            raise InvalidInput("the storage account needs a credential: set AzureWebJobsStorage or grant the "
                               f"app's identity the '{DATA_ROLE}' role", field="AzureWebJobsStorage")
        self._rest = TableRest(service.url, service.credential, transport, service.api_version)
        self._ready: set[Table] = set()
        #: Entities returned by reads (point reads and queries) so far, in all and per table: what a
        #: benchmark reads to see how much of the storage a piece of work touched.
        self.rows_read = 0
        self.rows_read_by_table: dict[str, int] = {}

    def _count_read(self, table: Table, rows: int) -> None:
        self.rows_read += rows
        self.rows_read_by_table[table.value] = self.rows_read_by_table.get(table.value, 0) + rows

    @classmethod
    def from_connection_string(cls, connection_string: str) -> TableEntityStore:
        """For Azurite and for accounts that still allow shared keys."""
        transport = storage_transport()
        return cls(TableServiceClient.from_connection_string(connection_string, transport=transport), transport)

    @classmethod
    def from_account(cls, url: str, credential: AsyncTokenCredential) -> TableEntityStore:
        """Identity-based access (the app's managed identity) to the table service at `url`."""
        transport = storage_transport()
        return cls(TableServiceClient(endpoint=url, credential=credential, transport=transport), transport)

    async def _table(self, table: Table) -> str:
        """The table's name, created on first use by this process."""
        if table not in self._ready:
            try:
                await self._service.create_table_if_not_exists(table.value)
            except Exception as exc:
                raise translate(exc, f"table {table.value}") from None
            self._ready.add(table)
        return table.value

    async def _send(self, method: str, path: str, what: str, *, query: str = "",
                    headers: Mapping[str, str] | None = None, content: bytes | str | None = None) -> Answer:
        try:
            return await self._rest.send(method, path, query=query, headers=headers, content=content)
        except Exception as exc:
            raise translate(exc, what) from None

    @staticmethod
    def _address(name: str, partition_key: str, row_key: str) -> str:
        return (f"{name}(PartitionKey='{key_literal(check_key('PartitionKey', partition_key))}',"
                f"RowKey='{key_literal(check_key('RowKey', row_key))}')")

    @staticmethod
    def _failed(answer: Answer, what: str) -> BridgeError:
        return status_error(answer.status, what, answer.headers.get("Retry-After"), answer.error_code())

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        """One row, or None."""
        what = f"{table.value}/{partition_key}/{row_key}"
        path = self._address(await self._table(table), partition_key, row_key)
        answer = await self._send("GET", path, what, headers=_READ)
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._failed(answer, what)
        self._count_read(table, 1)
        return decode(json.loads(answer.content), answer.headers.get("ETag"))

    async def _write(self, method: str, table: Table, entity: Entity, *, address: bool,
                     if_match: str | None) -> Entity:
        what = f"{table.value}/{entity.partition_key}/{entity.row_key}"
        body = table_batch.entity_json(_to_properties(entity))
        name = await self._table(table)
        headers = dict(_WRITE)
        if if_match is not None:
            headers["If-Match"] = if_match
        path = self._address(name, entity.partition_key, entity.row_key) if address else name
        answer = await self._send(method, path, what, headers=headers, content=body.encode())
        if answer.status not in (201, 204):
            raise self._failed(answer, what)
        return Entity(entity.partition_key, entity.row_key, dict(entity.data), answer.headers.get("ETag"))

    async def insert(self, table: Table, entity: Entity) -> Entity:
        """Create a row; Conflict when it exists."""
        return await self._write("POST", table, entity, address=False, if_match=None)

    async def upsert(self, table: Table, entity: Entity) -> Entity:
        """Create or replace a row without a concurrency check."""
        return await self._write("PUT", table, entity, address=True, if_match=None)

    async def update(self, table: Table, entity: Entity) -> Entity:
        """Replace a row only if its ETag still matches (any version when it has none); Conflict otherwise,
        NotFound when the row is gone."""
        return await self._write("PUT", table, entity, address=True, if_match=entity.etag or "*")

    async def upsert_many(self, table: Table, entities: Sequence[Entity], *,
                          exists: Mapping[str, bool] | None = None) -> None:
        """Create or replace rows in entity-group transactions of up to 100 rows of one partition.

        A row key given twice keeps its last version (a transaction may touch a row once). `exists`
        says, by row key, what the caller knows of a row: True, it exists (Update Entity, any version:
        a transaction that finds it gone fails with NotFound); False, it does not (Insert Entity:
        Conflict if it does). Other rows are inserted or replaced. Each is one operation on Azure;
        Azurite looks a row up once for an insert or update and twice for an insert-or-replace. The
        transactions are encoded by shared.adapters.table_batch.
        """
        name = await self._table(table)
        partitions: dict[str, dict[str, Entity]] = {}
        for entity in entities:
            partitions.setdefault(entity.partition_key, {})[entity.row_key] = entity
        prepared = {partition: [_to_properties(e) for e in rows.values()] for partition, rows in partitions.items()}
        for partition, rows in prepared.items():
            kinds = None if not exists else [_kind(exists.get(row["RowKey"])) for row in rows]
            try:
                transactions = list(table_batch.upsert_transactions(self._rest.account_url, name, rows, kinds))
            except ValueError as exc:
                raise InvalidInput(str(exc), field="entity") from None
            sent = 0
            for transaction in transactions:
                await self._submit(transaction, f"{name}/{partition}", rows[sent:sent + transaction.rows])
                sent += transaction.rows

    async def _submit(self, transaction: table_batch.Transaction, where: str,
                      rows: Sequence[dict[str, Any]]) -> None:
        """Send one transaction; `where` ("table/partition") names it in errors."""
        what = f"{where} ({transaction.rows} rows from {rows[0]['RowKey']})"
        answer = await self._send("POST", "$batch", what, content=transaction.body, headers={
            "Accept": "application/json", "Content-Type": transaction.content_type})
        if answer.status != 202:
            raise self._failed(answer, what)
        failed = table_batch.failure(table_batch.parts(answer.content), transaction.rows)
        if failed is not None:
            if failed.index is not None and 0 <= failed.index < len(rows):
                what = f"{where}/{rows[failed.index]['RowKey']} in a transaction"
            raise status_error(failed.status, what, None, failed.code)

    async def delete(self, table: Table, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
        """Delete a row; a missing row counts as deleted."""
        what = f"{table.value}/{partition_key}/{row_key}"
        path = self._address(await self._table(table), partition_key, row_key)
        answer = await self._send("DELETE", path, what, headers={"Accept": _NO_METADATA, "If-Match": etag or "*"})
        if answer.status not in (204, 404):
            raise self._failed(answer, what)

    async def query(self, table: Table, partition_key: str, *, row_key_from: str | None = None,
                    row_key_to: str | None = None, limit: int | None = None) -> AsyncIterator[Entity]:
        """Rows of one partition in row-key order, optionally within [from, to)."""
        clauses = [f"PartitionKey eq {string_literal(check_key('PartitionKey', partition_key))}"]
        if row_key_from is not None:
            clauses.append(f"RowKey ge {string_literal(row_key_from)}")
        if row_key_to is not None:
            clauses.append(f"RowKey lt {string_literal(row_key_to)}")
        async for found in self._select(table, " and ".join(clauses), limit, f"{table.value}/{partition_key}"):
            yield found

    async def query_partitions(self, table: Table, first: str, last: str, *,
                               limit: int | None = None) -> AsyncIterator[Entity]:
        """Rows of every partition whose key is within [first, last), in partition then row-key order.

        One query, paged by the service's continuation tokens, which it may also return at partition
        boundaries (https://learn.microsoft.com/rest/api/storageservices/query-timeout-and-pagination).
        """
        # Bounds, not keys: "conn/" bounds the keys "conn.*" and is never stored, so it is not checked as one.
        condition = f"PartitionKey ge {string_literal(first)} and PartitionKey lt {string_literal(last)}"
        async for found in self._select(table, condition, limit, f"{table.value}/[{first}, {last})"):
            yield found

    async def _select(self, table: Table, condition: str, limit: int | None, what: str) -> AsyncIterator[Entity]:
        """Query Entities, following the continuation headers from page to page."""
        path = f"{await self._table(table)}()"
        first = f"?$filter={quote(condition, safe='')}&$top={min(limit or PAGE_ROWS, PAGE_ROWS)}"
        query, count = first, 0
        while True:
            answer = await self._send("GET", path, what, query=query, headers=_READ)
            if answer.status != 200:
                raise self._failed(answer, what)
            rows = json.loads(answer.content).get("value", [])
            self._count_read(table, len(rows))
            for raw in rows:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield decode(raw)
            next_partition = answer.headers.get("x-ms-continuation-NextPartitionKey")
            if not next_partition or (limit is not None and count >= limit):
                return
            query = f"{first}&NextPartitionKey={quote(next_partition, safe='')}"
            next_row = answer.headers.get("x-ms-continuation-NextRowKey")
            if next_row:
                query += f"&NextRowKey={quote(next_row, safe='')}"

    async def close(self) -> None:
        """Release the HTTP session (the SDK client and the entity requests share it)."""
        self._ready.clear()
        await self._service.close()
