"""Schema-driven fuzzing of every operation of docs/openapi.json against the local stack.

The function app runs in the local host with its own Azurite, Entra simulator (demo tenant, synced
once) and Key Vault emulator, so what the run writes touches no other test. For each operation
schemathesis sends its coverage cases (bounds, missing and mistyped members, other methods), then
FUZZ_EXAMPLES (default 50) generated requests the description allows and half as many it forbids;
path parameters name the stack's own connection, users, device and domain three times in four. Every
answer must be: no server error, a described status, media type, headers and body; a 4xx in
problem+json, a 400 naming the `field` at fault (the SCIM service's: a SCIM error whose `status` is the
HTTP status and whose `detail` names the problem); a request the description forbids refused.

Refused requests write nothing: forbidden bodies and paths sent to every writing operation, and
allowed bodies the services refuse (unknown user, bad key, stale ceremony...), are compared with
snapshots of the tables, queues, the simulator's write counter and the vault's journal (audit records
aside: a refusal may be audited on purpose).

`make fuzz` runs it ten times longer (FUZZ_EXAMPLES=500).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from local.entra.demo import DEMO_DOMAIN, DEMO_TENANT_ID, IDENTITY_PRINCIPAL_ID
from local.entra.process import RunningEntra
from local.entra.process import running as running_entra
from local.host.process import RunningHost, write_settings
from local.host.process import running as running_host
from local.servers import azurite
from local.tls import TlsFiles
from local.vault.process import running as running_vault
from tests.contract import spec
from tests.e2e.waiting import wait_for

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
CONNECTION = {"name": "demo", "tenantId": DEMO_TENANT_ID, "cloud": "local", "auth": {"kind": "managedIdentity"},
              "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                           "rotation": {"enabled": True, "group": "Bridge Rotation", "minIntervalMinutes": 0},
                           "passkeys": {"enabled": True}, "federation": {"enabled": True},
                           "export": {"enabled": True, "usageLocation": "CH"}}}
DEVICE = "dev-fuzz"
SCIM_MEDIA = "application/scim+json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
OPERATIONS = sorted(op["operationId"] for item in spec()["paths"].values() for op in item.values())
WRITES = sorted(op["operationId"] for item in spec()["paths"].values() for method, op in item.items()
                if method in ("put", "post", "delete"))


@dataclass
class Stack:
    """The running stack and what the fuzzing learnt."""

    host: RunningHost
    entra: RunningEntra
    storage: str
    vault_dir: Path
    users: list[str]
    scim: dict[str, list[str]]
    findings: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fuzz")
    with (azurite(root / "azurite", root / "azurite.log") as storage,
          running_entra(data_dir=root / "entra", log_path=root / "entra.log",
                        identity_header=secrets.token_hex(16)) as entra,
          running_vault(data_dir=root / "vault", authority=entra.url, tenant=entra.tenant_id, admin=True,
                        tls=tls_files, log_path=root / "vault.log") as vault):
        vault.grant(IDENTITY_PRINCIPAL_ID, "Key Vault Secrets Officer")
        key = secrets.token_urlsafe(18)
        values = {"AzureWebJobsStorage": storage, "CONNECTIONS": json.dumps([CONNECTION]), "KEY_VAULT_URL": vault.url,
                  "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
                  "SSL_CERT_FILE": str(tls_files.bundle), "REQUESTS_CA_BUNDLE": str(tls_files.bundle),
                  "IDENTITY_ENDPOINT": f"{entra.url}/msi/token", "IDENTITY_HEADER": entra.identity_header or "",
                  "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *",
                  "FEDERATION_SCHEDULE": "0 0 0 1 1 *", "LOG_FORMAT": "json",
                  "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"}
        settings_file = write_settings(root / "local.settings.json", values, function_key=key)
        with running_host(settings_file=settings_file, function_key=key, log_path=root / "host.log") as host:
            with httpx.Client(base_url=f"{host.url}/api/connections/demo", headers={"x-functions-key": key},
                              timeout=60) as http:
                assert http.post("/sync").status_code == 202
                wait_for(lambda: (http.get("/status").json().get("lastSync") or {}).get("outcome") == "completed")
                users = [u["id"] for u in http.get("/users", params={"top": "5"}).json()["value"]]
                jwk = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
                put = http.put(f"/devices/{DEVICE}", json={"user": users[0], "displayName": "fuzz", "publicKey": jwk})
                assert put.status_code == 201, put.text
                scim = {"Users": [_scim_create(http, host, "Users", {"userName": f"fuzz{i}@{DEMO_DOMAIN}"})
                                  for i in range(3)],
                        "Groups": [_scim_create(http, host, "Groups", {"displayName": f"fuzz {i}"}) for i in range(2)]}
            yield Stack(host, entra, storage, root / "vault", users, scim)


def _scim_create(http: httpx.Client, host: RunningHost, kind: str, body: dict[str, Any]) -> str:
    """A resource of the stack's SCIM service, for path parameters to name."""
    created = http.post(f"{host.url}/api/scim/v2/demo/{kind}", json=body, headers={"content-type": SCIM_MEDIA})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _fuzz_description() -> dict[str, Any]:
    """The description without the IdP metadata URL: fetching one would reach out of the machine."""
    doc = copy.deepcopy(spec())
    for item in doc["paths"].values():
        for operation in item.values():
            operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "metadataUrl"]
    doc["components"]["schemas"]["FederationBody"]["properties"].pop("metadataUrl", None)
    return doc


@pytest.fixture(scope="module")
def api(stack: Stack) -> Any:
    # Any 4xx refuses a request the description forbids (a body over MAX_BODY_BYTES gets 413, for one).
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": ["4xx"]}}})
    return schemathesis.openapi.from_dict(_fuzz_description(), config=config)


def _scim(operation_id: str) -> bool:
    return operation_id.startswith("scim_")


def _problem_names_the_field(response: schemathesis.Response, operation_id: str) -> str | None:
    if not 400 <= response.status_code < 500:
        return None
    media = (response.headers.get("content-type") or [""])[0].split(";")[0]
    body = response.json()
    if _scim(operation_id) and media == "application/problem+json" and ":host-" in str(body.get("type")):
        return None  # the host's own refusal (no route for a malformed path), before the SCIM service
    if _scim(operation_id):
        # RFC 7644 section 3.12: a SCIM error whose status is the HTTP status and whose detail names the problem.
        if media != SCIM_MEDIA:
            return f"{response.status_code} is not a SCIM error: {media!r}"
        if body.get("status") != str(response.status_code) or not (body.get("detail") or body.get("scimType")):
            return f"{response.status_code}: a SCIM error naming nothing: {body}"
        return None
    if media != "application/problem+json":
        return f"{response.status_code} is not problem+json: {media!r}"
    if response.status_code == 400 and body.get("type", "").endswith(":invalid-input") and not body.get("field"):
        return f"400 names no field: {body.get('detail')}"
    return None


def _allowed(case: Any, location: str) -> bool:
    """Whether that part of the case is one the description allows (negative cases break only some parts)."""
    if case.meta is None:
        return True
    return all(info.mode is GenerationMode.POSITIVE for where, info in case.meta.components.items()
               if str(getattr(where, "value", where)) == location)


def _steer(stack: Stack, case: Any, pick: Callable[[list[str]], str | None]) -> None:
    """Path parameters (and the audit's connection) set to what the stack holds where `pick` gives one,
    in the parts of the case the description allows."""
    ids = next((stack.scim[kind] for kind in stack.scim if f"/scim/v2/{{c}}/{kind}/" in case.operation.path),
               stack.users)
    known = {"c": ["demo"], "id": ids, "deviceId": [DEVICE], "domain": [DEMO_DOMAIN]}
    if _allowed(case, "path"):
        for name in case.path_parameters or {}:
            value = pick(known[name]) if name in known else None
            if value is not None:
                case.path_parameters[name] = value
    if "connection" in (case.query or {}) and _allowed(case, "query") and pick(["demo"]):
        case.query["connection"] = "demo"


def _send(stack: Stack, case: Any, operation_id: str, mode: GenerationMode, session: requests.Session,
          on_answer: Callable[[Any, schemathesis.Response], None] | None = None) -> None:
    """Send the case and collect what is wrong with its answer in stack.findings."""
    response = case.call(base_url=f"{stack.host.url}/api", session=session,
                         headers={"x-functions-key": stack.host.function_key}, timeout=60)
    stack.statuses[f"{operation_id} {mode.value} {response.status_code}"] += 1
    found = []
    try:
        case.validate_response(response, checks=[*CHECKS, negative_data_rejection]
                               if mode is GenerationMode.NEGATIVE else CHECKS)
    except (Exception, BaseExceptionGroup) as exc:  # every failure is collected, then reported together
        found.append(" ".join(str(exc).split())[:600])
    problem = _problem_names_the_field(response, operation_id)
    if problem:
        found.append(problem)
    for finding in found:
        stack.findings.append(f"{operation_id} ({mode.value}): {finding}\n    {case.as_curl_command()}")
    if on_answer is not None:
        on_answer(case, response)


def _run(stack: Stack, api: Any, operation_id: str, mode: GenerationMode, examples: int,
         on_answer: Callable[[Any, schemathesis.Response], None] | None = None,
         keep: Callable[[Any], bool] | None = None) -> None:
    operation = api.find_operation_by_id(operation_id)
    described = next(op for item in spec()["paths"].values() for op in item.values()
                     if op["operationId"] == operation_id)
    if mode is GenerationMode.NEGATIVE and not (described["parameters"] or "requestBody" in described):
        return  # nothing in the request to make invalid
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception as exc:  # an operation with nothing to make invalid has no negative cases
        if mode is GenerationMode.NEGATIVE:
            return
        raise AssertionError(f"{operation_id}: no cases: {exc}") from exc
    session = requests.Session()

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(strategy)
        # Three times in four a path parameter names what the stack holds, so that requests get past "not
        # found" into the handlers.
        _steer(stack, case, lambda values: data.draw(st.sampled_from(values)) if data.draw(st.integers(0, 3))
               else None)
        if keep is None or keep(case):
            _send(stack, case, operation_id, mode, session, on_answer)

    fuzz()


def _coverage(stack: Stack, api: Any, operation_id: str) -> None:
    """Schemathesis' coverage cases: each parameter and member at its bounds, missing, of the wrong type..."""
    operation = api.find_operation_by_id(operation_id)
    session = requests.Session()
    for case in api.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                        generation_config=api.config.generation_for(operation=operation)):
        _steer(stack, case, lambda values: values[0])
        mode = case.meta.generation.mode if case.meta else GenerationMode.POSITIVE
        _send(stack, case, operation_id, mode, session)


def _snapshot(stack: Stack) -> dict[str, Any]:
    """What a write would change: table rows (audit aside), queued messages, Graph writes, vault journal."""
    tables = TableServiceClient.from_connection_string(stack.storage)
    rows = {}
    for table in tables.list_tables():
        if table.name.startswith("audit"):
            continue
        client = tables.get_table_client(table.name)
        rows[table.name] = sorted((e["PartitionKey"], e["RowKey"], e.metadata.get("etag"))
                                  for e in client.list_entities())
    queues = QueueServiceClient.from_connection_string(stack.storage)
    waiting = {q.name: queues.get_queue_client(q.name).get_queue_properties().approximate_message_count
               for q in queues.list_queues()}
    journal = stack.vault_dir / "secrets.jsonl"
    return {"tables": rows, "queues": waiting, "graphWrites": stack.entra.admin("GET", "/_sim/counters").get("writes"),
            "vault": journal.stat().st_size if journal.exists() else 0}


def _settled(stack: Stack) -> dict[str, Any]:
    """A snapshot once queued work is done and nothing moves for a while."""
    last: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        now = _snapshot(stack)
        if now == last and not any(now["queues"].get(q) for q in ("sync-work", "rotation-work", "device-work",
                                                                   "export-work")):
            return now
        last = now
        time.sleep(3)
    raise AssertionError("the stack did not settle in 300 s")


def test_refused_requests_write_nothing(stack: Stack, api: Any) -> None:
    before = _settled(stack)
    accepted: list[str] = []

    def refused(case: Any, response: schemathesis.Response) -> None:
        if response.status_code < 400:
            broken = sorted(str(getattr(w, "value", w)) for w, i in (case.meta.components.items() if case.meta else ())
                            if i.mode is GenerationMode.NEGATIVE)
            accepted.append(f"{case.operation.label} -> {response.status_code} (broken: {broken}): "
                            f"{case.as_curl_command()}")

    def forbidden(case: Any) -> bool:
        # A body or path the description forbids (an unknown query parameter is ignored, as by Azure).
        return not (_allowed(case, "body") and _allowed(case, "path"))

    for operation_id in WRITES:
        _run(stack, api, operation_id, GenerationMode.NEGATIVE, max(20, EXAMPLES // 2), on_answer=refused,
             keep=forbidden)
    after = _snapshot(stack)
    assert accepted == [], accepted
    assert sum(n for key, n in stack.statuses.items() if " negative 4" in key) >= len(WRITES)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert changed == {}, f"refused requests changed {sorted(changed)}: {changed}"


def test_requests_refused_by_the_handlers_write_nothing(stack: Stack, api: Any) -> None:
    """Bodies the description allows but the services refuse (unknown user, bad key, stale ceremony...):
    each refusal is compared with a snapshot taken just before it."""
    changed: list[str] = []
    state = {"before": _settled(stack)}

    def compare(case: Any, response: schemathesis.Response) -> None:
        if response.status_code < 400:
            state["before"] = _settled(stack)  # accepted: let its work finish before the next comparison
            return
        after = _snapshot(stack)
        if after != state["before"]:
            diff = sorted(k for k in after if after[k] != state["before"][k])
            changed.append(f"{case.operation.label} -> {response.status_code} changed {diff}: {case.as_curl_command()}")
            state["before"] = after

    for operation_id in ("put_device", "register_passkey", "federate_domain"):
        _run(stack, api, operation_id, GenerationMode.POSITIVE, max(10, EXAMPLES // 5), on_answer=compare)
    assert changed == [], "\n".join(changed)
    assert sum(n for key, n in stack.statuses.items() if " positive 4" in key) >= 10


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_every_operation_answers_as_described(stack: Stack, api: Any, operation_id: str) -> None:
    _coverage(stack, api, operation_id)
    _run(stack, api, operation_id, GenerationMode.POSITIVE, EXAMPLES)
    _run(stack, api, operation_id, GenerationMode.NEGATIVE, max(1, EXAMPLES // 2))
    mine = [f for f in stack.findings if f.startswith(f"{operation_id} ")]
    assert mine == [], "\n".join(dict.fromkeys(mine))


def test_the_description_is_served_without_a_key(stack: Stack) -> None:
    served = httpx.get(f"{stack.host.url}/api/openapi.json")
    assert served.status_code == 200
    assert served.json() == spec()


def test_summary(stack: Stack) -> None:
    """One line per operation and status, for the log (`pytest -s`)."""
    for key, count in sorted(stack.statuses.items()):
        print(f"fuzz: {key}: {count}")
    assert stack.statuses
