"""The wire format of Table storage's entity-group transactions: the multipart body and its answer.

azure-data-tables builds and parses this body with Python's `email` package, which costs about 0.7 ms
of CPU per row and made a 100,000-user import CPU-bound in our own process. The format is small and
documented (https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions),
so the Table adapter writes it here and sends it like its other entity requests
(shared.adapters.table_rest: the SDK's authentication policy, azure-core's retries). Three operations
are used: Insert Or Replace Entity
(https://learn.microsoft.com/rest/api/storageservices/insert-or-replace-entity) for a row that may or
may not exist, Insert Entity (https://learn.microsoft.com/rest/api/storageservices/insert-entity) for
a row known to be new, and Update Entity with `If-Match: *`
(https://learn.microsoft.com/rest/api/storageservices/update-entity2) for a row known to exist. On
Azure each is one entity operation; Azurite looks the row up once for an insert or an update and twice
for an insert-or-replace, a scan of the row's partition each time.

Property values follow the JSON payload format
(https://learn.microsoft.com/rest/api/storageservices/payload-format-for-table-service-operations):
strings, booleans and 32-bit integers need no type annotation; 64-bit integers are sent as strings
annotated `Edm.Int64`, and doubles are annotated `Edm.Double` so that 1.0 stays a double.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.adapters.table_rest import key_literal
from shared.services.ports import TRANSACTION_ROWS

#: A transaction holds at most TRANSACTION_ROWS (100) entities and 4 MiB of payload (page above).
MAX_PAYLOAD = 4 * 1024 * 1024
_INT32 = range(-(2**31), 2**31)
_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3})[^\r\n]*\r?\n", re.MULTILINE)
_ERROR_INDEX = re.compile(r"^(\d+):")


class Int64(int):
    """An integer to be stored as Edm.Int64 (wider than 32 bits)."""


@dataclass(frozen=True)
class Part:
    """One operation's answer inside the changeset."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Failure:
    """The operation that failed a transaction, as Table storage reports it."""

    status: int
    code: str
    index: int | None


def entity_json(properties: Mapping[str, Any]) -> str:
    """The JSON body of one entity, with the type annotations the payload format needs."""
    body: dict[str, Any] = {}
    for name, value in properties.items():
        if value is None:
            continue
        if isinstance(value, (bool, str)):
            body[name] = value
        elif isinstance(value, int):
            if isinstance(value, Int64) or value not in _INT32:
                body[f"{name}@odata.type"] = "Edm.Int64"
                body[name] = str(int(value))
            else:
                body[name] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"property {name!r} is {value}; rows hold finite numbers only")
            body[f"{name}@odata.type"] = "Edm.Double"
            body[name] = value
        else:
            raise TypeError(f"property {name!r} has type {type(value).__name__}")
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


#: What a transaction does with a row: insert or replace it (UPSERT), insert it (INSERT, refused with
#: 409 when it exists) or replace it (UPDATE, refused with 404 when it does not).
UPSERT, INSERT, UPDATE = "upsert", "insert", "update"


def _operation(account_url: str, table: str, entity: Mapping[str, Any], content_id: int, boundary: str,
               kind: str = UPSERT) -> bytes:
    body = entity_json(entity).encode()
    if kind == INSERT:
        request = f"POST {account_url}/{table} HTTP/1.1\r\n"
    else:
        address = (f"{account_url}/{table}(PartitionKey='{key_literal(entity['PartitionKey'])}',"
                   f"RowKey='{key_literal(entity['RowKey'])}')")
        request = f"PUT {address} HTTP/1.1\r\n" + ("If-Match: *\r\n" if kind == UPDATE else "")
    head = (f"--{boundary}\r\n"
            "Content-Type: application/http\r\n"
            "Content-Transfer-Encoding: binary\r\n"
            f"Content-ID: {content_id}\r\n"
            "\r\n"
            f"{request}"
            "Content-Type: application/json\r\n"
            "Accept: application/json;odata=nometadata\r\n"
            "Prefer: return-no-content\r\n"
            "DataServiceVersion: 3.0;\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n")
    return head.encode() + body + b"\r\n"


@dataclass(frozen=True)
class Transaction:
    """One `$batch` request: its body, its content type, and how many operations it carries."""

    body: bytes
    content_type: str
    rows: int


def upsert_transactions(account_url: str, table: str, entities: Sequence[Mapping[str, Any]],
                        kinds: Sequence[str] | None = None) -> Iterator[Transaction]:
    """Transactions writing `entities` (one partition, each row once), split so that each holds at most
    TRANSACTION_ROWS operations and MAX_PAYLOAD bytes. `kinds` gives each entity's operation (UPSERT,
    INSERT or UPDATE); without it every row is inserted or replaced.

    Raises ValueError for a single entity that alone exceeds the payload limit.
    """
    account_url = account_url.split("?", 1)[0].rstrip("/")
    operations: list[bytes] = []
    size = 0
    changeset = f"changeset_{uuid.uuid4()}"
    # Envelope: the batch part's headers and the two closing delimiters.
    envelope = 200 + 2 * len(changeset)
    for n, entity in enumerate(entities):
        kind = kinds[n] if kinds is not None else UPSERT
        operation = _operation(account_url, table, entity, len(operations) + 1, changeset, kind)
        if envelope + len(operation) > MAX_PAYLOAD:
            raise ValueError(f"row {entity['RowKey']!r} is {len(operation)} bytes; a transaction holds "
                             f"{MAX_PAYLOAD} bytes")
        if operations and (len(operations) == TRANSACTION_ROWS or envelope + size + len(operation) > MAX_PAYLOAD):
            yield _transaction(operations, changeset)
            operations, size, changeset = [], 0, f"changeset_{uuid.uuid4()}"
            operation = _operation(account_url, table, entity, 1, changeset, kind)
        operations.append(operation)
        size += len(operation)
    if operations:
        yield _transaction(operations, changeset)


def _transaction(operations: list[bytes], changeset: str) -> Transaction:
    batch = f"batch_{uuid.uuid4()}"
    body = b"".join([
        f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode(),
        *operations,
        f"--{changeset}--\r\n--{batch}--\r\n".encode(),
    ])
    return Transaction(body=body, content_type=f"multipart/mixed; boundary={batch}", rows=len(operations))


def parts(body: bytes) -> list[Part]:
    """The operation answers of a `$batch` response body, in order."""
    found: list[Part] = []
    matches = list(_STATUS.finditer(body))
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(body)
        segment = body[match.end():end]
        _, _, content = segment.partition(b"\r\n\r\n")
        # The content runs to the next multipart delimiter line.
        delimiter = content.find(b"\r\n--")
        found.append(Part(status=int(match.group(1)), body=content if delimiter < 0 else content[:delimiter]))
    return found


def failure(answers: Sequence[Part], sent: int) -> Failure | None:
    """The failed operation of a transaction's answers, or None when every operation succeeded.

    On success the changeset answers each operation; on failure it holds the failed operation's answer
    alone, whose error message starts with the operation's zero-based index ("3:The specified ...").
    """
    for answer in answers:
        if not 200 <= answer.status < 300:
            code, index = _error_of(answer.body)
            return Failure(status=answer.status, code=code, index=index)
    if len(answers) != sent:
        return Failure(status=502, code=f"AnsweredOperations{len(answers)}Of{sent}", index=None)
    return None


def _error_of(body: bytes) -> tuple[str, int | None]:
    try:
        error = json.loads(body.decode("utf-8", "replace"))["odata.error"]
        code = str(error.get("code") or "Unknown")
        message = error.get("message")
        text = message.get("value", "") if isinstance(message, dict) else str(message or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "Unknown", None
    index = _ERROR_INDEX.match(text)
    return code, int(index.group(1)) if index else None
