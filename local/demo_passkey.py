"""The passkey demo of `make run`: a device and its passkey, made and removed through the bridge's HTTP API.

    python -m local.demo_passkey --url http://127.0.0.1:7071 --key <function key> [--connection demo]

It does what a credential provider's back end does, with the function key as its only credential:

1. `PUT .../devices/{deviceId}` registers a demo device (a fresh P-256 public key) for an imported,
   active user of the connection (the first one the users list gives, unless one is named);
2. `POST .../devices/{deviceId}/passkeys/options` asks for creation options (Entra's challenge);
3. the software authenticator (local.authenticator) makes the credential, as a device would;
4. `POST .../devices/{deviceId}/passkeys` registers it: the bridge verifies it, then Entra records it;
5. `DELETE .../devices/{deviceId}` removes the device; the operation is polled until the device-work
   queue has revoked the passkey in Entra;
6. `GET /api/audit` shows the registration and the revocation.

Each step that fails raises DemoFailed naming the step and the bridge's problem detail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from local.authenticator import SoftwareAuthenticator

DEVICE_ID = "demo-laptop"
#: Audit actions the demo expects to find for its passkey and device.
EXPECTED = ("passkey.registered", "passkey.revoked", "device.removed")


class DemoFailed(Exception):
    """A step of the demo did not go as expected; the message names the step."""


@dataclass
class DemoResult:
    """What the demo did."""

    connection: str
    user_id: str
    upn: str
    device_id: str
    passkey_id: str
    operation: str
    audit: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the console."""
        return (f"passkey demo: registered passkey {self.passkey_id} for {self.upn} on device {self.device_id}, "
                f"revoked when the device was removed (operation {self.operation}); audit: "
                f"{', '.join(self.audit)}")


def _problem(response: httpx.Response) -> str:
    """The status and the problem detail of a failed answer (bodies carry no secret)."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"
    if isinstance(body, dict):
        return f"{response.status_code} {body.get('detail') or body.get('title') or json.dumps(body)[:200]}"
    return f"{response.status_code} {json.dumps(body)[:200]}"


def _expect(response: httpx.Response, status: int, step: str) -> Any:
    if response.status_code != status:
        raise DemoFailed(f"{step}: expected {status}, got {_problem(response)}")
    return response.json() if response.content else None


def _wait(check: Callable[[], dict[str, Any] | None], timeout: float, step: str,
          sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise DemoFailed(f"{step}: not done after {timeout:.0f} s")
        sleep(0.5)


def pick_user(http: httpx.Client, connection: str, user: str | None) -> dict[str, Any]:
    """The named user, or the first active user the bridge imported."""
    params = {"state": "active", "top": "1"} if user is None else {"state": "active", "q": user, "top": "1"}
    found = _expect(http.get(f"/api/connections/{connection}/users", params=params), 200, "list users")
    users = found.get("value") or []
    if not users:
        raise DemoFailed(f"no active user {'named ' + user + ' ' if user else ''}is imported in connection "
                         f"{connection!r}; run a sync first")
    return dict(users[0])


def put_device(http: httpx.Client, connection: str, device_id: str, upn: str) -> str:
    """Register the demo device; a fresh id when the usual one is taken (left removed by an earlier run)."""
    key = ec.generate_private_key(ec.SECP256R1())
    body = {"user": upn, "displayName": "Demo laptop", "publicKey": json.loads(ECAlgorithm.to_jwk(key.public_key()))}
    answer = http.put(f"/api/connections/{connection}/devices/{device_id}", json=body)
    if answer.status_code == 409:
        device_id = f"{device_id}-{secrets.token_hex(3)}"
        answer = http.put(f"/api/connections/{connection}/devices/{device_id}", json=body)
    _expect(answer, 201, f"register device {device_id}")
    return device_id


def audit_actions(http: httpx.Client, connection: str, user_id: str, day: dt.date, passkey_id: str,
                  device_id: str) -> list[str]:
    """Actions of the audit records that name the demo's passkey or device, in the log's order."""
    params: dict[str, str] = {"connection": connection, "from": day.isoformat(),
                              "to": dt.datetime.now(dt.UTC).date().isoformat(), "target": user_id, "top": "500"}
    actions: list[str] = []
    while True:
        page = _expect(http.get("/api/audit", params=params), 200, "read the audit log")
        for record in page.get("value") or []:
            detail = record.get("detail") or {}
            if detail.get("method") == passkey_id or (detail.get("device") == device_id
                                                      and record.get("action", "").startswith("device.")):
                actions.append(str(record.get("action")))
        token = page.get("continuationToken")
        if not token:
            return actions
        params["continuationToken"] = token


def run_demo(http: httpx.Client, *, connection: str = "demo", device_id: str = DEVICE_ID, user: str | None = None,
             timeout: float = 90.0) -> DemoResult:
    """Run the demo with `http` (base URL and function key set); DemoFailed names the step that failed."""
    day = dt.datetime.now(dt.UTC).date()
    chosen = pick_user(http, connection, user)
    upn, user_id = str(chosen["userPrincipalName"]), str(chosen["id"])
    device_id = put_device(http, connection, device_id, upn)
    base = f"/api/connections/{connection}/devices/{device_id}"
    options = _expect(http.post(f"{base}/passkeys/options"), 200, "passkey creation options")
    credential = SoftwareAuthenticator(fmt="packed-self").register(options)
    created = _expect(http.post(f"{base}/passkeys", json={"ceremonyId": options["ceremonyId"],
                                                          "displayName": "Demo laptop passkey",
                                                          "credential": credential}), 201, "register the passkey")
    passkey_id = str(created["id"])
    removal = _expect(http.delete(base), 202, f"remove device {device_id}")
    operation = str(removal["operationId"])

    def finished() -> dict[str, Any] | None:
        progress = _expect(http.get(f"/api/connections/{connection}/operations/{operation}"), 200,
                           "read the removal operation")
        if progress.get("status") == "failed":
            raise DemoFailed(f"removal operation {operation} failed: {progress.get('error') or progress}")
        return dict(progress) if progress.get("status") == "completed" else None

    _wait(finished, timeout, f"removal operation {operation} (device-work queue)")
    actions = audit_actions(http, connection, user_id, day, passkey_id, device_id)
    missing = [a for a in EXPECTED if a not in actions]
    if missing:
        raise DemoFailed(f"the audit log lacks {', '.join(missing)} for passkey {passkey_id}")
    return DemoResult(connection, user_id, upn, device_id, passkey_id, operation,
                      [a for a in dict.fromkeys(actions) if a in EXPECTED])


def demo_line(url: str, function_key: str, *, connection: str = "demo", timeout: float = 90.0) -> str:
    """Run the demo against a host; one line saying what happened, never an exception."""
    try:
        with httpx.Client(base_url=url, headers={"x-functions-key": function_key}, timeout=60) as http:
            return run_demo(http, connection=connection, timeout=timeout).line()
    except DemoFailed as exc:
        return f"passkey demo: failed: {exc}"
    except httpx.HTTPError as exc:
        return f"passkey demo: failed: the function host could not be reached ({type(exc).__name__})"


def main(argv: list[str] | None = None) -> int:
    """Run the demo against a running host."""
    parser = argparse.ArgumentParser(prog="python -m local.demo_passkey", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7071", help="the function host")
    parser.add_argument("--key", required=True, help="a function key (x-functions-key)")
    parser.add_argument("--connection", default="demo")
    args = parser.parse_args(argv)
    line = demo_line(args.url, args.key, connection=args.connection)
    print(line)
    return 1 if line.startswith("passkey demo: failed") else 0


if __name__ == "__main__":
    sys.exit(main())
