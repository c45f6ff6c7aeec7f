"""The simulator's tenant state at scale: compact users, a file written and read a user at a time."""

from __future__ import annotations

import io
import json
from pathlib import Path

from local.entra.demo import demo_tenant, generated_tenant
from local.entra.state import USERS_LINE, Store, Tenant, User, load_tenant


def _with_extras(tenant: Tenant) -> Tenant:
    tenant.deletedUsers["gone-1"] = User(id="gone-1", userPrincipalName="Gone@generated.example")
    tenant.extra["addedByARoute"] = {"kept": [1, 2]}
    return tenant


def test_the_file_is_json_and_reads_back_the_same_tenant(tmp_path: Path) -> None:
    for tenant in (_with_extras(demo_tenant()), _with_extras(generated_tenant(300, 4, 3, seed=2)),
                   Tenant(tenantId="empty", displayName="Empty")):
        out = io.StringIO()
        tenant.write(out)
        text = out.getvalue()
        assert json.loads(text) == json.loads(json.dumps(tenant.to_json()))
        assert text.splitlines()[0].endswith(USERS_LINE.rstrip("\n"))
        path = tmp_path / "tenant.json"
        path.write_text(text, encoding="utf-8")
        assert load_tenant(path).to_json() == tenant.to_json()
        # A tenant file written by hand (or by json.dumps) is read too.
        path.write_text(json.dumps(tenant.to_json(), indent=1), encoding="utf-8")
        assert load_tenant(path).to_json() == tenant.to_json()


def test_loaded_users_share_equal_strings_and_members_are_the_users_ids(tmp_path: Path) -> None:
    path = tmp_path / "tenant.json"
    with path.open("w", encoding="utf-8") as out:
        generated_tenant(200, 2, 2, seed=3).write(out)
    tenant = load_tenant(path)
    users = list(tenant.users.values())
    assert all(u.mail is u.userPrincipalName for u in users)
    same_name = [u for u in users if u.givenName == users[0].givenName]
    assert len(same_name) > 1
    assert all(u.givenName is users[0].givenName for u in same_name)
    group = next(g for g in tenant.groups.values() if any(m in tenant.users for m in g.members))
    assert all(m is tenant.users[m].id for m in group.members if m in tenant.users)


def test_users_added_and_deleted_keep_the_upn_index_without_a_rebuild() -> None:
    tenant = generated_tenant(50, 2, 2, seed=4)
    fresh = User(id="new-1", userPrincipalName="New.Person@generated.example")
    tenant.add_user(fresh)
    assert tenant.user("new.person@GENERATED.example") is fresh
    victim = next(iter(tenant.users.values()))
    assert tenant.delete_user(victim.id) is victim
    assert tenant.user(victim.userPrincipalName) is None
    assert tenant.user(victim.id) is None
    assert victim.id in tenant.deletedUsers
    tenant.add_user(tenant.deletedUsers.pop(victim.id))  # restored
    assert tenant.user(victim.userPrincipalName) is victim


def test_store_saves_atomically_and_times_the_save(tmp_path: Path) -> None:
    store = Store.open(tmp_path, generated_tenant(100, 2, 2, seed=5))
    assert store.last_save_seconds > 0
    again = Store.open(tmp_path, demo_tenant())
    assert again.tenant.to_json() == store.tenant.to_json()
    assert [p.name for p in tmp_path.iterdir()] == ["tenant.json"]


def test_generated_users_render_as_graph_does() -> None:
    user = next(iter(generated_tenant(5, 1, 1, seed=6).users.values()))
    body = user.graph()
    assert body["@odata.type"] == "#microsoft.graph.user"
    assert "assignedLicenses" not in body
    assert set(body) == {"@odata.type", "id", "userPrincipalName", "displayName", "mail", "accountEnabled",
                         "onPremisesSyncEnabled", "usageLocation", "givenName", "surname"}
    assert user.graph(["mail", "assignedLicenses"]) == {"id": user.id, "mail": user.mail, "assignedLicenses": []}
