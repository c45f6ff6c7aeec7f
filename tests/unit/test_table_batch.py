"""The entity-group transaction codec: bodies within the documented limits, answers read as documented
(https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions)."""

from __future__ import annotations

import json

import pytest

from shared.adapters import table_batch
from shared.adapters.table_batch import Int64, Part

ACCOUNT = "https://myaccount.table.core.windows.net"

CHANGESET = b"changesetresponse_f4b3e2a1-0000-4d4e-9a9a-123456789abc"


def _answered(content_id: int) -> bytes:
    return (b"--" + CHANGESET + b"\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\nContent-ID: " + str(content_id).encode() + b"\r\n"
            b"X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\nDataServiceVersion: 1.0;\r\n"
            b'ETag: W/"0x8D101F7E4B662C' + str(content_id).encode() + b'"\r\n\r\n\r\n')


# The shape of the documented sample answer: one changeset, a response per operation.
OK_ANSWER = (
    b"--batchresponse_7ab1c7e7-9b4b-4fd4-a1ab-1b3d9e0a6c6f\r\n"
    b"Content-Type: multipart/mixed; boundary=" + CHANGESET + b"\r\n\r\n"
    + _answered(1) + _answered(2)
    + b"--" + CHANGESET + b"--\r\n--batchresponse_7ab1c7e7-9b4b-4fd4-a1ab-1b3d9e0a6c6f--\r\n"
)

# A failed transaction answers only the failed operation; its message starts with the operation's index.
FAILED_ANSWER = (
    b"--batchresponse_1\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n"
    b"\r\n"
    b"--changesetresponse_2\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-ID: 2\r\n"
    b"Content-Type: application/json;odata=minimalmetadata;streaming=true;charset=utf-8\r\n"
    b"\r\n"
    b'{"odata.error":{"code":"EntityTooLarge","message":{"lang":"en-US","value":"1:The entity is larger '
    b'than the maximum allowed size (1MB).\\nRequestId:c1c0f7e5\\nTime:2026-11-23T10:00:00Z"}}}\r\n'
    b"--changesetresponse_2--\r\n"
    b"--batchresponse_1--\r\n"
)


def test_an_entity_carries_the_annotations_the_payload_format_needs() -> None:
    body = json.loads(table_batch.entity_json({
        "PartitionKey": "p", "RowKey": "r", "name": "Zoë", "on": True, "small": 7, "wide": 2**40,
        "marked": Int64(5), "ratio": 1.0, "gone": None}))
    assert body == {"PartitionKey": "p", "RowKey": "r", "name": "Zoë", "on": True, "small": 7,
                    "wide@odata.type": "Edm.Int64", "wide": str(2**40),
                    "marked@odata.type": "Edm.Int64", "marked": "5",
                    "ratio@odata.type": "Edm.Double", "ratio": 1.0}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_number_json_cannot_hold_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        table_batch.entity_json({"PartitionKey": "p", "RowKey": "r", "x": value})


def test_a_transaction_is_one_changeset_of_insert_or_replace_operations() -> None:
    rows = [{"PartitionKey": "conn.001", "RowKey": f"it's {n}%", "n": n} for n in range(3)]
    [transaction] = table_batch.upsert_transactions(ACCOUNT, "users", rows)
    text = transaction.body.decode()
    batch = transaction.content_type.split("boundary=")[1]
    assert text.startswith(f"--{batch}\r\nContent-Type: multipart/mixed; boundary=changeset_")
    assert text.endswith(f"--{batch}--\r\n")
    assert transaction.rows == 3
    assert text.count("PUT ") == 3
    # Quotes doubled inside the key literal, then the literal percent-encoded.
    assert f"PUT {ACCOUNT}/users(PartitionKey='conn.001',RowKey='it%27%27s%200%25') HTTP/1.1" in text
    assert "If-Match" not in text


def test_transactions_split_at_100_rows_and_at_4_mib() -> None:
    many = [{"PartitionKey": "p", "RowKey": f"r{n:03d}"} for n in range(250)]
    assert [t.rows for t in table_batch.upsert_transactions(ACCOUNT, "users", many)] == [100, 100, 50]
    big = [{"PartitionKey": "p", "RowKey": f"r{n}", "a": "x" * 30_000, "b": "y" * 30_000} for n in range(80)]
    transactions = list(table_batch.upsert_transactions(ACCOUNT, "users", big))
    assert sum(t.rows for t in transactions) == 80
    assert len(transactions) == 2
    assert all(len(t.body) <= table_batch.MAX_PAYLOAD for t in transactions)


def test_a_row_larger_than_a_transaction_is_named() -> None:
    huge = {"PartitionKey": "p", "RowKey": "huge", **{f"c{n}": "z" * 32_000 for n in range(140)}}
    with pytest.raises(ValueError, match="'huge'"):
        list(table_batch.upsert_transactions(ACCOUNT, "users", [huge]))


def test_a_successful_answer_has_a_response_per_operation() -> None:
    answers = table_batch.parts(OK_ANSWER)
    assert [a.status for a in answers] == [204, 204]
    assert table_batch.failure(answers, 2) is None
    # Fewer answers than operations is not a success.
    missing = table_batch.failure(answers, 3)
    assert missing is not None
    assert missing.status == 502


def test_a_failed_answer_names_the_code_and_the_operation() -> None:
    answers = table_batch.parts(FAILED_ANSWER)
    assert [a.status for a in answers] == [400]
    failed = table_batch.failure(answers, 5)
    assert failed == table_batch.Failure(status=400, code="EntityTooLarge", index=1)


def test_an_unreadable_error_body_still_fails() -> None:
    failed = table_batch.failure([Part(status=500, body=b"<html>oops</html>")], 1)
    assert failed == table_batch.Failure(status=500, code="Unknown", index=None)


def test_rows_known_new_are_inserts_and_rows_known_stored_are_updates_of_any_version() -> None:
    rows = [{"PartitionKey": "p", "RowKey": key, "n": n} for n, key in enumerate(("a", "b", "c"))]
    kinds = [table_batch.INSERT, table_batch.UPDATE, table_batch.UPSERT]
    (transaction,) = table_batch.upsert_transactions(ACCOUNT, "users", rows, kinds)
    body = transaction.body.decode()
    # Insert Entity posts to the table; Update Entity and Insert Or Replace put to the entity's address,
    # and only the update carries If-Match (https://learn.microsoft.com/rest/api/storageservices/update-entity2).
    assert f"POST {ACCOUNT}/users HTTP/1.1\r\nContent-Type: application/json\r\n" in body
    assert f"PUT {ACCOUNT}/users(PartitionKey='p',RowKey='b') HTTP/1.1\r\nIf-Match: *\r\n" in body
    assert f"PUT {ACCOUNT}/users(PartitionKey='p',RowKey='c') HTTP/1.1\r\nContent-Type: application/json\r\n" in body
    assert body.count("If-Match") == 1
    assert '"RowKey":"a"' in body  # an insert names its keys in the body
