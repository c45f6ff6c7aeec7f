"""The local host through real HTTP and Azurite queues."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import datetime as dt
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from local.host.process import RunningHost
from tests.e2e.waiting import wait_for


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def host(function_host: Any, azurite_connection_string: str, tmp_path: Path) -> RunningHost:
    started: RunningHost = function_host(app="tests.e2e.host_app", values={
        "AzureWebJobsStorage": azurite_connection_string, "TEST_SCHEDULE": "*/2 * * * * *",
        "HOST_TEST_OUT": str(tmp_path), "MAX_BODY_BYTES": "2048",
        # Azure's way to override host.json from app settings; keeps the retry test short.
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"})
    return started


def test_routes_templates_and_auth_levels(host: RunningHost) -> None:
    with httpx.Client(base_url=host.url) as client:
        assert client.get("/api/health").status_code == 200
        anonymous = client.get("/api/items/7")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        assert client.get("/api/items/7", params={"code": host.function_key}).json()["id"] == "7"
        keyed = client.get("/api/items/7", headers={"x-functions-key": host.function_key})
        assert keyed.status_code == 200
        assert client.get("/api/items/seven", headers={"x-functions-key": host.function_key}).status_code == 404
        assert client.get("/api/files/a/b/c.txt").json()["rest"] == "a/b/c.txt"
        assert client.get("/api/maybe").json()["name"] is None
        assert client.get("/api/maybe/x").json()["name"] == "x"
        wrong = client.delete("/api/files/x")
        assert wrong.status_code == 405
        assert "GET" in wrong.headers["allow"]
        assert client.get("/api/nothing-here").status_code == 404
        assert client.get("/api/admin-only", headers={"x-functions-key": host.function_key}).status_code == 401
        spoofed = client.get("/api/items/1", headers={"x-functions-key": host.function_key,
                                                      "x-ms-client-principal-id": "forged"})
        assert spoofed.json()["principal"] is None


def test_oversized_bodies_get_413_and_bad_paths_a_problem_over_real_http(host: RunningHost) -> None:
    def chunked() -> Any:
        yield from (b"x" * 1024 for _ in range(4))

    with httpx.Client(base_url=host.url) as client:
        for method, path in [("POST", "/api/enqueue"), ("GET", "/api/health"), ("POST", "/api/files/a"),
                             ("GET", "/api/items/7")]:
            for body in (b"x" * 2049, chunked()):
                answer = client.request(method, path, content=body)
                assert answer.status_code == 413, (method, path, answer.text)
                assert answer.headers["content-type"].startswith("application/problem+json")
        assert client.post("/api/files/a", content=b"x" * 2048).status_code == 200
        crlf = client.get("/api/files/a%0D%0Ab")
        assert crlf.headers["content-type"].startswith("application/problem+json")
        assert client.get("/api/health%0D%0A").headers["content-type"].startswith("application/problem+json")


def test_timer_runs_on_startup_and_on_schedule(host: RunningHost, tmp_path: Path) -> None:
    ticks = wait_for(lambda: len(lines(tmp_path / "ticks.jsonl")) >= 2 and lines(tmp_path / "ticks.jsonl"))
    assert ticks[0]["pastDue"] is False


def test_warmup_runs_once_at_start(host: RunningHost, tmp_path: Path) -> None:
    assert wait_for(lambda: lines(tmp_path / "warmups.jsonl")) == [{"warmed": True}]


def test_queue_delivery_retries_then_poisons(host: RunningHost, azurite_connection_string: str,
                                             tmp_path: Path) -> None:
    queue = QueueClient.from_connection_string(azurite_connection_string, "host-test")
    wait_for(lambda: _exists(queue))
    encode = lambda body: base64.b64encode(json.dumps(body).encode()).decode()  # noqa: E731
    assert httpx.post(f"{host.url}/api/enqueue", json={"n": 1}).status_code == 202
    queue.send_message(encode({"fail": True}))
    deliveries = wait_for(lambda: [d for d in lines(tmp_path / "deliveries.jsonl") if d["body"].get("fail")][4:]
                          and lines(tmp_path / "deliveries.jsonl"), timeout=60)
    good = [d for d in deliveries if d["body"].get("n") == 1]
    assert [d["dequeueCount"] for d in good] == [1]
    failed = [d["dequeueCount"] for d in deliveries if d["body"].get("fail")]
    assert failed == [1, 2, 3, 4, 5]
    poison = QueueClient.from_connection_string(azurite_connection_string, "host-test-poison")
    messages = wait_for(lambda: list(poison.peek_messages(max_messages=5)))
    assert json.loads(base64.b64decode(messages[0].content)) == {"fail": True}
    # Only the successful invocation sent its output message.
    out = QueueClient.from_connection_string(azurite_connection_string, "host-test-out")
    sent = wait_for(lambda: list(out.peek_messages(max_messages=10)))
    assert [json.loads(base64.b64decode(m.content)) for m in sent] == [{"done": {"n": 1}}]


def test_a_message_outliving_its_lease_is_renewed_not_delivered_twice(function_host: Any,
                                                                      azurite_connection_string: str,
                                                                      tmp_path: Path) -> None:
    # A lease of 2 s, renewed every second, under a function that runs 5 s: no other delivery meanwhile.
    host = function_host(app="tests.e2e.host_app", values={
        "AzureWebJobsStorage": azurite_connection_string, "TEST_SCHEDULE": "0 0 0 1 1 *",
        "HOST_TEST_OUT": str(tmp_path), "LOCAL_HOST_MESSAGE_LEASE_SECONDS": "2"})
    assert httpx.post(f"{host.url}/api/enqueue", json={"sleep": 5, "slow": True}).status_code == 202
    wait_for(lambda: lines(tmp_path / "slept.jsonl"), timeout=60)
    slow = [d for d in lines(tmp_path / "deliveries.jsonl") if d["body"].get("slow")]
    assert [d["dequeueCount"] for d in slow] == [1]
    queue = QueueClient.from_connection_string(azurite_connection_string, "host-test")
    wait_for(lambda: queue.get_queue_properties().approximate_message_count == 0, timeout=10)


def _exists(queue: QueueClient) -> bool:
    try:
        queue.get_queue_properties()
    except Exception:  # not created yet
        return False
    return True


def _drain(connection_string: str, *queues: str) -> None:
    for name in queues:
        client = QueueClient.from_connection_string(connection_string, name)
        if _exists(client):
            client.clear_messages()


def test_admin_endpoint_runs_timers_and_queue_functions_and_disabled_is_honoured(
        function_host: Any, azurite_connection_string: str, tmp_path: Path) -> None:
    started: RunningHost = function_host(app="tests.e2e.host_app", values={
        "AzureWebJobsStorage": azurite_connection_string, "HOST_TEST_OUT": str(tmp_path),
        "TEST_SCHEDULE": "*/1 * * * * *", "AzureWebJobs.ticker.Disabled": "true",
        "AzureWebJobs__item__Disabled": "1", "AzureWebJobs.worker.Disabled": "true"})
    master = {"x-functions-key": str(started.master_key)}
    try:
        with httpx.Client(base_url=started.url) as client:
            # Disabled: the every-second timer (with runOnStartup) never fired; the HTTP function is a 404.
            time.sleep(2)
            assert lines(tmp_path / "ticks.jsonl") == []
            gone = client.get("/api/items/7", headers={"x-functions-key": started.function_key})
            assert gone.status_code == 404
            assert "AzureWebJobs.item.Disabled" in gone.json()["detail"]
            assert client.get("/api/items/7", headers=master).status_code == 200
            # Run on demand, as the Functions host's admin API does (a disabled function runs too).
            ran = client.post("/admin/functions/ticker", json={"input": ""}, headers=master)
            assert (ran.status_code, ran.content) == (202, b"")
            assert wait_for(lambda: lines(tmp_path / "ticks.jsonl")) == [{"pastDue": False}]
            sent = client.post("/admin/functions/Worker", json={"input": json.dumps({"n": 5})}, headers=master)
            assert sent.status_code == 202
            delivered = wait_for(lambda: lines(tmp_path / "deliveries.jsonl"))
            assert delivered == [{"body": {"n": 5}, "dequeueCount": 1}]
            # Refusals, each a problem naming what to fix.
            refusals = {
                "function key": client.post("/admin/functions/ticker", json={"input": ""},
                                            headers={"x-functions-key": started.function_key}),
                "unknown": client.post("/admin/functions/nothing", json={"input": ""}, headers=master),
                "http": client.post("/admin/functions/health", json={"input": ""}, headers=master),
                "not an object": client.post("/admin/functions/ticker", content=b"[1]", headers=master),
                "input not text": client.post("/admin/functions/worker", json={"input": 3}, headers=master),
                "GET": client.get("/admin/functions/ticker", headers=master),
                "too large": client.post("/admin/functions/worker", content=b"{" * 70000, headers=master),
            }
            assert {k: v.status_code for k, v in refusals.items()} == {
                "function key": 401, "unknown": 404, "http": 400, "not an object": 400, "input not text": 400,
                "GET": 405, "too large": 413}
            for answer in refusals.values():
                assert answer.headers["content-type"].startswith("application/problem+json")
            assert "master key" in refusals["function key"].json()["detail"]
            assert "ticker" in refusals["unknown"].json()["detail"]
            time.sleep(1)
            assert len(lines(tmp_path / "ticks.jsonl")) == 1
    finally:
        _drain(azurite_connection_string, "host-test-out")


def test_message_encoding_none_is_read_from_host_json_settings(function_host: Any, azurite_connection_string: str,
                                                               tmp_path: Path) -> None:
    function_host(app="tests.e2e.host_app", values={
        "AzureWebJobsStorage": azurite_connection_string, "HOST_TEST_OUT": str(tmp_path),
        "TEST_SCHEDULE": "0 0 0 1 1 *", "AzureFunctionsJobHost__extensions__queues__messageEncoding": "none"})
    queue = QueueClient.from_connection_string(azurite_connection_string, "host-test")
    wait_for(lambda: _exists(queue))
    try:
        queue.send_message(json.dumps({"n": 9}))
        assert wait_for(lambda: lines(tmp_path / "deliveries.jsonl")) == [{"body": {"n": 9}, "dequeueCount": 1}]
        out = QueueClient.from_connection_string(azurite_connection_string, "host-test-out")
        sent = wait_for(lambda: list(out.peek_messages(max_messages=5)))
        assert [json.loads(m.content) for m in sent] == [{"done": {"n": 9}}]
    finally:
        _drain(azurite_connection_string, "host-test-out")


def test_a_missed_run_is_caught_up_once_from_the_stored_schedule_status(
        function_host: Any, azurite_connection_string: str, tmp_path: Path) -> None:
    host_id = f"test-{uuid.uuid4().hex[:12]}"
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    missed = hour - dt.timedelta(hours=1)
    table = TableClient.from_connection_string(azurite_connection_string, "AzureWebJobsHostTimers")
    with contextlib.suppress(ResourceExistsError):
        table.create_table()
    table.upsert_entity({"PartitionKey": host_id, "RowKey": "Host.Functions.hourly",
                         "Last": (missed - dt.timedelta(hours=1)).isoformat(), "Next": missed.isoformat(),
                         "LastUpdated": (missed - dt.timedelta(hours=1)).isoformat()})
    values = {"AzureWebJobsStorage": azurite_connection_string, "HOST_TEST_OUT": str(tmp_path),
              "TEST_SCHEDULE": "0 0 0 1 1 *", "MONITORED_SCHEDULE": "0 0 * * * *",
              "AzureFunctionsWebHost__hostid": host_id}
    first: RunningHost = function_host(app="tests.e2e.host_app", values=values)
    runs = wait_for(lambda: lines(tmp_path / "hourly.jsonl"))
    assert len(runs) == 1
    assert runs[0]["pastDue"] is True
    assert dt.datetime.fromisoformat(runs[0]["status"]["Next"]) == missed
    row = wait_for(lambda: (r := table.get_entity(host_id, "Host.Functions.hourly"))["Next"] != missed.isoformat()
                   and r)
    assert dt.datetime.fromisoformat(row["Next"]) == hour + dt.timedelta(hours=1)
    assert dt.datetime.fromisoformat(row["Last"]) > missed
    first.process.stop(timeout=30)
    # Started again: the status says the next run is ahead, so nothing is caught up twice.
    function_host(app="tests.e2e.host_app", values=values)
    time.sleep(2)
    assert len(lines(tmp_path / "hourly.jsonl")) == 1


def test_app_service_authentication_from_simulator_tokens(function_host: Any, entra: Any, tls_files: Any,
                                                         tmp_path: Path) -> None:
    started: RunningHost = function_host(app="tests.e2e.host_app", values={"HOST_TEST_OUT": str(tmp_path)}, env={
        "WEBSITE_AUTH_ENABLED": "true", "LOCAL_AUTH_ISSUER": f"{entra.url}/{entra.tenant_id}/v2.0",
        "LOCAL_AUTH_AUDIENCE": entra.client_id, "LOCAL_CA_FILE": str(tls_files.ca), "TEST_SCHEDULE": "0 0 0 1 1 *"})
    login = f"{entra.url}/{entra.tenant_id}/oauth2/v2.0/token"

    def token(scope: str) -> str:
        with httpx.Client(verify=tls_files.client_context()) as client:
            answer = client.post(login, data={"grant_type": "client_credentials", "client_id": entra.client_id,
                                              "client_secret": entra.client_secret, "scope": scope})
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    key = {"x-functions-key": started.function_key}
    with httpx.Client(base_url=started.url, headers=key) as client:
        mine = client.get("/api/items/1", headers={"authorization": f"Bearer {token(entra.client_id + '/.default')}"})
        assert mine.status_code == 200
        assert mine.json()["principal"] == entra.principal_id
        graph = token("https://graph.microsoft.com/.default")
        refused = client.get("/api/items/1", headers={"authorization": f"Bearer {graph}"})
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert graph not in refused.text
        assert client.get("/api/items/1", headers={"authorization": "Bearer not.a.jwt"}).status_code == 401


def test_shutdown_finishes_work_in_flight(function_host: Any, tmp_path: Path) -> None:
    started: RunningHost = function_host(app="tests.e2e.host_app", values={
        "HOST_TEST_OUT": str(tmp_path), "TEST_SCHEDULE": "0 0 0 1 1 *"})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.get, f"{started.url}/api/slow", timeout=30)
        time.sleep(0.5)
        started.process.stop(timeout=30)
        assert answer.result().text == "finished"
    assert started.process.proc is not None
    # uvicorn re-raises SIGTERM once it has shut down gracefully, so -SIGTERM is a clean exit too.
    assert started.process.proc.returncode in (0, -signal.SIGTERM)
