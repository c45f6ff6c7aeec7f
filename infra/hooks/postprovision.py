"""Give the app's managed identity the Entra directory roles its enabled features need.

The Microsoft Graph Bicep extension grants application permissions but cannot assign directory
roles, so azd runs this after provisioning. It is idempotent: a role the identity already holds is
left alone, so it can run on every `azd provision`. Standard library only, because it runs with
whatever Python the operator has.

Reads (from the azd environment): BRIDGE_IDENTITY_PRINCIPAL_ID, BRIDGE_DIRECTORY_ROLES
(comma-separated role names, from main.bicep's outputs), and optionally BRIDGE_GRAPH_URL
(default https://graph.microsoft.com) and BRIDGE_GRAPH_TOKEN (otherwise `azd auth token`, then
`az account get-access-token`, gives one for the signed-in operator, who needs Privileged Role
Administrator).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Built-in role template IDs; a built-in role's definition id is its template id.
# https://learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference
ROLE_TEMPLATE_IDS: dict[str, str] = {
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "Privileged Authentication Administrator": "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    "Authentication Administrator": "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    "Authentication Policy Administrator": "0526716b-113d-4c15-b2c8-68e3c22b9f80",
    "Groups Administrator": "fdd7a751-b60b-444a-984c-02652fe8fa1c",
    "Domain Name Administrator": "8329153b-31d0-4727-b945-745eb3bc5f31",
    "Hybrid Identity Administrator": "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
    "External Identity Provider Administrator": "be2f45a1-457d-42af-a067-6ec1fa63bc45",
    "License Administrator": "4d6ac14f-3453-41d0-bef9-a3e0c569773a",
}

MANUAL_STEPS = """\
To assign the role by hand: Microsoft Entra admin center > Identity > Roles & admins > Roles &
admins > '{role}' > Add assignments > select member(s) > search for the managed identity
'{principal}' (object ID) > Next > Assignment type Active, Permanently assigned > Assign.
Only a Privileged Role Administrator (or Global Administrator) can do this."""

#: (method, url, json body or None, headers) -> (status, parsed JSON body or None)
Transport = Callable[[str, str, Mapping[str, object] | None, Mapping[str, str]], tuple[int, dict[str, object] | None]]


class HookError(Exception):
    """A problem the operator must fix; the message says what and how."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one role."""

    role: str
    action: str  # "present" | "assigned"


def parse_roles(value: str) -> list[str]:
    """Role names from BRIDGE_DIRECTORY_ROLES, checked against the known roles, without repeats."""
    roles: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        if name not in ROLE_TEMPLATE_IDS:
            known = ", ".join(sorted(ROLE_TEMPLATE_IDS))
            raise HookError(f"BRIDGE_DIRECTORY_ROLES names an unknown directory role {name!r}; known roles: {known}")
        if name not in roles:
            roles.append(name)
    return roles


def _odata_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class RoleAssigner:
    """Assigns tenant-wide directory roles to one principal through Graph, idempotently."""

    def __init__(self, transport: Transport, *, graph_url: str, token: str,
                 sleep: Callable[[float], None] = time.sleep, attempts: int = 12) -> None:
        self._send = transport
        self._base = graph_url.rstrip("/") + "/v1.0/roleManagement/directory/roleAssignments"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._sleep = sleep
        self._attempts = attempts

    def holds(self, principal_id: str, role_id: str) -> bool:
        """Whether the principal already holds the role tenant-wide."""
        # https://learn.microsoft.com/graph/api/rbacapplication-list-roleassignments
        query = urllib.parse.urlencode({
            "$filter": f"principalId eq {_odata_quote(principal_id)} and roleDefinitionId eq {_odata_quote(role_id)}",
        })
        status, body = self._send("GET", f"{self._base}?{query}", None, self._headers)
        self._raise_for(status, body, "list role assignments")
        values = (body or {}).get("value")
        if not isinstance(values, list):
            raise HookError("Graph answered the role assignment list without a 'value' array")
        return any(isinstance(v, dict) and v.get("directoryScopeId") in ("/", None) for v in values)

    def ensure(self, principal_id: str, role: str) -> Outcome:
        """Make sure the principal holds `role`; retried while a new identity replicates."""
        role_id = ROLE_TEMPLATE_IDS[role]
        if self.holds(principal_id, role_id):
            return Outcome(role, "present")
        body = {
            "@odata.type": "#microsoft.graph.unifiedRoleAssignment",
            "roleDefinitionId": role_id,
            "principalId": principal_id,
            "directoryScopeId": "/",
        }
        delay = 5.0
        for attempt in range(1, self._attempts + 1):
            # https://learn.microsoft.com/graph/api/rbacapplication-post-roleassignments (201 Created)
            status, answer = self._send("POST", self._base, body, self._headers)
            if status in (200, 201):
                return Outcome(role, "assigned")
            if status == 409 or (status == 400 and _mentions(answer, "conflict", "already exists")):
                return Outcome(role, "present")
            # A managed identity made minutes ago may not have reached every directory replica yet.
            retriable = status in (429, 500, 502, 503, 504) or (
                status in (400, 404) and _mentions(answer, "does not exist", "not found", "invalid principal"))
            if not retriable or attempt == self._attempts:
                self._raise_for(status, answer, f"assign '{role}'", role=role, principal=principal_id)
            self._sleep(delay)
            delay = min(delay * 2, 30.0)
        raise HookError(f"could not assign '{role}'")  # pragma: no cover - the loop raises first

    @staticmethod
    def _raise_for(status: int, body: dict[str, object] | None, what: str, *, role: str = "",
                   principal: str = "") -> None:
        if 200 <= status < 300:
            return
        error = (body or {}).get("error")
        code = error.get("code", "") if isinstance(error, dict) else ""
        message = error.get("message", "") if isinstance(error, dict) else ""
        detail = f"Graph answered {status} {code}: {message}".rstrip(": ")
        if status in (401, 403):
            steps = "\n" + MANUAL_STEPS.format(role=role, principal=principal) if role else ""
            raise HookError(f"cannot {what}: {detail}. The signed-in account needs the Privileged Role "
                            f"Administrator role (or RoleManagement.ReadWrite.Directory).{steps}")
        raise HookError(f"cannot {what}: {detail}")


def _mentions(body: dict[str, object] | None, *needles: str) -> bool:
    text = json.dumps(body or {}).lower()
    return any(n in text for n in needles)


def urllib_transport(method: str, url: str, body: Mapping[str, object] | None,
                     headers: Mapping[str, str]) -> tuple[int, dict[str, object] | None]:
    """Send one HTTPS request with the standard library; errors come back as their status."""
    if not url.startswith("https://"):
        raise HookError(f"refusing to send a token over a non-HTTPS URL: {url}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))  # noqa: S310 - https only, checked above
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - https only, checked above
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return exc.code, parsed if isinstance(parsed, dict) else None


def operator_token(graph_url: str, environ: Mapping[str, str]) -> str:
    """A Graph token for the signed-in operator: BRIDGE_GRAPH_TOKEN, else azd, else the Azure CLI."""
    if environ.get("BRIDGE_GRAPH_TOKEN"):
        return environ["BRIDGE_GRAPH_TOKEN"]
    scope = graph_url.rstrip("/") + "/.default"
    azd = shutil.which("azd")
    if azd:
        done = subprocess.run([azd, "auth", "token", "--scope", scope, "--output", "json"],  # noqa: S603
                              capture_output=True, text=True, check=False, timeout=120)
        if done.returncode == 0:
            token = json.loads(done.stdout).get("token")
            if isinstance(token, str) and token:
                return token
    az = shutil.which("az")
    if az:
        done = subprocess.run([az, "account", "get-access-token", "--scope", scope,  # noqa: S603
                               "--query", "accessToken", "--output", "tsv"],
                              capture_output=True, text=True, check=False, timeout=120)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    raise HookError("no Graph token: sign in with `azd auth login` (or `az login`), or set BRIDGE_GRAPH_TOKEN")


def run(environ: Mapping[str, str], transport: Transport = urllib_transport,
        sleep: Callable[[float], None] = time.sleep, out: Callable[[str], None] = print) -> list[Outcome]:
    """Assign every role named in the environment; returns what happened to each."""
    roles = parse_roles(environ.get("BRIDGE_DIRECTORY_ROLES", ""))
    if not roles:
        out("No enabled feature needs a directory role; nothing to assign.")
        return []
    principal = environ.get("BRIDGE_IDENTITY_PRINCIPAL_ID", "").strip()
    if not principal:
        raise HookError("BRIDGE_IDENTITY_PRINCIPAL_ID is not set: run `azd provision` first (main.bicep outputs it)")
    graph_url = environ.get("BRIDGE_GRAPH_URL", "https://graph.microsoft.com")
    token = operator_token(graph_url, environ)
    assigner = RoleAssigner(transport, graph_url=graph_url, token=token, sleep=sleep)
    outcomes = []
    for role in roles:
        outcome = assigner.ensure(principal, role)
        verb = "already holds" if outcome.action == "present" else "now holds"
        out(f"The bridge's managed identity {principal} {verb} the directory role '{role}'.")
        outcomes.append(outcome)
    return outcomes


def main() -> int:
    """Entry point for the azd hook."""
    try:
        run(os.environ)
    except HookError as exc:
        print(f"postprovision: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
