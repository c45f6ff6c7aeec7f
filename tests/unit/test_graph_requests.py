"""docs/architecture.md, Layers: Graph requests are built by msgraph-sdk's request builders in the Graph
adapters, and no service reads Graph's JSON.

The scans read string literals (docstrings left out): a Graph path written by hand anywhere in shared/
outside the gateway fails, as does a Graph annotation read in shared/services.
"""

from __future__ import annotations

import ast
from pathlib import Path

from shared.adapters.graph.gateway import request_builders, url_of

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "shared/adapters/graph/gateway.py"
#: Fragments of Graph paths (and their version roots) that only a request builder may write.
GRAPH_PATHS = ("/users/", "/users?", "/groups/", "/groups?", "/domains", "/organization", "/directoryRoles",
               "/subscribedSkus", "/subscriptions", "/servicePrincipals", "/directoryObjects", "/policies/",
               "/v1.0/", "/beta/", "/$batch", "/fido2Methods", "/$ref", "/delta")
#: Graph's wire shapes: annotations that only the Graph adapters read.
GRAPH_SHAPES = ("@removed", "members@delta", "@odata", "publicKeyCredential", "challengeTimeoutDateTime")
#: Not Graph requests: the bridge's own HTTP routes (functions/) named in messages, and Microsoft's pages.
NOT_REQUESTS = ("connections/", "learn.microsoft.com")
#: The permission table matches the paths of refused requests to name what they need (docs/architecture.md,
#: invariant 7); it sends nothing.
PERMISSION_TABLE = "shared/domain/permissions.py"


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a module, f-string parts joined, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _docstrings(tree)
    found: list[tuple[int, str]] = []
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                           for v in node.values)
            found.append((node.lineno, text))
            inside.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip | inside:
            found.append((node.lineno, node.value))
    return found


def _hand_built(folder: str, fragments: tuple[str, ...], *, skip: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if name in skip:
            continue
        for line, text in _strings(path):
            if any(marker in text for marker in NOT_REQUESTS):
                continue
            hits = [f for f in fragments if f in text]
            if hits:
                bad.append(f"{name}:{line}: {text[:80]!r} ({', '.join(hits)})")
    return bad


def test_no_graph_path_is_written_by_hand_outside_the_gateway() -> None:
    assert _hand_built("shared", GRAPH_PATHS, skip=(GATEWAY, PERMISSION_TABLE)) == []


def test_no_service_reads_graph_json() -> None:
    assert _hand_built("shared/services", GRAPH_SHAPES) == []


def test_the_scan_finds_a_hand_built_path(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""A module about /users/ (a docstring is prose)."""\n'
                      'def f(g, uid):\n    return g.get(f"/users/{uid}/authentication/fido2Methods")\n')
    assert [text for _, text in _strings(sample)] == ["/users/{}/authentication/fido2Methods"]


def test_request_builders_write_urls_under_the_given_root() -> None:
    requests = request_builders("https://graph.microsoft.us/")
    user = requests.users.by_user_id("u1").to_get_request_information()
    assert url_of(user, "https://graph.microsoft.us/v1.0") == "https://graph.microsoft.us/v1.0/users/u1"
    assert url_of(requests.groups.by_group_id("g1").members.ref.to_post_request_information(
        _reference("https://graph.microsoft.us/v1.0/directoryObjects/u1")), "") == "/groups/g1/members/$ref"


def _reference(url: str) -> object:
    from msgraph.generated.models.reference_create import ReferenceCreate

    return ReferenceCreate(odata_id=url)
