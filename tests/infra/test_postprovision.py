"""The post-provision hook assigns directory roles idempotently, waits out replication, and explains
what to do when the operator lacks the right to assign roles.

Graph is stood in for by a small in-memory directory that answers with the shapes documented for
List and Create unifiedRoleAssignment (value arrays, 201 with the object, error bodies).
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Mapping

import pytest

from infra.hooks.postprovision import ROLE_TEMPLATE_IDS, HookError, Outcome, parse_roles, run, urllib_transport
from tests.infra.bicep_files import INFRA

PRINCIPAL = "6f1c2b9e-3a54-4e0f-9d2a-1b7c8e9f0a12"
TOKEN = "eyJ0eXAiOiJKV1QifQ.test-token.signature"
GRAPH = "https://graph.example.test"


class FakeDirectory:
    """Role assignments of one tenant, answering like Graph's roleManagement/directory endpoints."""

    def __init__(self, *, deny: bool = False, unknown_for: int = 0) -> None:
        self.assignments: list[dict[str, object]] = []
        self.requests: list[tuple[str, str]] = []
        self.deny = deny
        self.unknown_for = unknown_for  # POSTs that fail as if the principal had not replicated yet

    def __call__(self, method: str, url: str, body: Mapping[str, object] | None,
                 headers: Mapping[str, str]) -> tuple[int, dict[str, object] | None]:
        self.requests.append((method, url))
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        parsed = urllib.parse.urlsplit(url)
        assert parsed.path == "/v1.0/roleManagement/directory/roleAssignments"
        if self.deny:
            return 403, {"error": {"code": "Authorization_RequestDenied",
                                   "message": "Insufficient privileges to complete the operation."}}
        if method == "GET":
            flt = urllib.parse.parse_qs(parsed.query)["$filter"][0]
            principal, role = re.fullmatch(r"principalId eq '(.+)' and roleDefinitionId eq '(.+)'", flt).groups()  # type: ignore[union-attr]
            value = [a for a in self.assignments if a["principalId"] == principal and a["roleDefinitionId"] == role]
            return 200, {"@odata.context": f"{GRAPH}/v1.0/$metadata#roleManagement/directory/roleAssignments",
                         "value": value}
        assert method == "POST"
        assert body is not None
        assert body["directoryScopeId"] == "/"
        if self.unknown_for:
            self.unknown_for -= 1
            return 400, {"error": {"code": "Request_BadRequest",
                                   "message": f"Resource '{body['principalId']}' does not exist or one of its "
                                              "queried reference-property objects are not present."}}
        created = {"id": str(uuid.uuid4()), "principalId": body["principalId"],
                   "roleDefinitionId": body["roleDefinitionId"], "directoryScopeId": "/"}
        self.assignments.append(created)
        return 201, {"@odata.context": f"{GRAPH}/v1.0/$metadata#roleManagement/directory/roleAssignments/$entity",
                     **created}


def _env(roles: str = "User Administrator") -> dict[str, str]:
    return {"BRIDGE_DIRECTORY_ROLES": roles, "BRIDGE_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
            "BRIDGE_GRAPH_URL": GRAPH, "BRIDGE_GRAPH_TOKEN": TOKEN}


def test_assigns_a_missing_role_then_leaves_it_alone() -> None:
    directory = FakeDirectory()
    lines: list[str] = []
    first = run(_env(), transport=directory, sleep=lambda _: None, out=lines.append)
    second = run(_env(), transport=directory, sleep=lambda _: None, out=lines.append)
    assert first == [Outcome("User Administrator", "assigned")]
    assert second == [Outcome("User Administrator", "present")]
    assert [m for m, _ in directory.requests].count("POST") == 1
    assert directory.assignments[0]["roleDefinitionId"] == ROLE_TEMPLATE_IDS["User Administrator"]
    assert "now holds" in lines[0]
    assert "already holds" in lines[1]


def test_several_roles_each_once() -> None:
    directory = FakeDirectory()
    roles = "User Administrator, Privileged Authentication Administrator, User Administrator"
    outcomes = run(_env(roles), transport=directory, sleep=lambda _: None, out=lambda _: None)
    assert [o.role for o in outcomes] == ["User Administrator", "Privileged Authentication Administrator"]
    assert len(directory.assignments) == 2


def test_waits_for_a_new_identity_to_replicate() -> None:
    directory = FakeDirectory(unknown_for=2)
    pauses: list[float] = []
    outcomes = run(_env(), transport=directory, sleep=pauses.append, out=lambda _: None)
    assert outcomes == [Outcome("User Administrator", "assigned")]
    assert pauses == [5.0, 10.0]


def test_gives_up_on_replication_with_a_clear_error() -> None:
    directory = FakeDirectory(unknown_for=100)
    with pytest.raises(HookError, match="does not exist"):
        run(_env(), transport=directory, sleep=lambda _: None, out=lambda _: None)


def test_without_the_right_to_assign_roles_the_manual_steps_are_given() -> None:
    with pytest.raises(HookError) as caught:
        run(_env(), transport=FakeDirectory(deny=True), sleep=lambda _: None, out=lambda _: None)
    text = str(caught.value)
    assert "Privileged Role Administrator" in text
    assert "Authorization_RequestDenied" in text
    assert TOKEN not in text


def test_nothing_to_do_needs_no_token() -> None:
    lines: list[str] = []
    assert run({"BRIDGE_DIRECTORY_ROLES": ""}, transport=FakeDirectory(), out=lines.append) == []
    assert "nothing to assign" in lines[0]


def test_unknown_role_and_missing_principal_are_named() -> None:
    with pytest.raises(HookError, match="'Global Reader'"):
        parse_roles("Global Reader")
    env = _env()
    del env["BRIDGE_IDENTITY_PRINCIPAL_ID"]
    with pytest.raises(HookError, match="BRIDGE_IDENTITY_PRINCIPAL_ID"):
        run(env, transport=FakeDirectory(), out=lambda _: None)


def test_tokens_are_only_sent_over_https() -> None:
    with pytest.raises(HookError, match="non-HTTPS"):
        urllib_transport("GET", "http://graph.example.test/v1.0/x", None, {"Authorization": f"Bearer {TOKEN}"})


def test_every_rotation_role_the_bicep_offers_is_known_to_the_hook() -> None:
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    block = main[main.index("@allowed", main.index("Directory role the post-provision hook")):]
    offered = re.findall(r"'([^']+)'", block[: block.index("])")])
    assert offered
    assert set(offered) <= set(ROLE_TEMPLATE_IDS)
    assert "output BRIDGE_DIRECTORY_ROLES string" in main
