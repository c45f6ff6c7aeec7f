"""Graph directory routes: users, groups, transitive membership, directory roles, organization.

Shapes and permissions follow each API page on learn.microsoft.com/graph/api: user-list, user-get,
user-update (passwordProfile; "Who can reset passwords" for the role rules), user-delete (204; the user
goes to deleted items, so delta reports it removed with reason "changed"), group-list, group-get,
group-list-transitivemembers, user-list-transitivememberof, serviceprincipal-list-transitivememberof,
organization-list.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.entra.core import (
    Caller,
    GraphError,
    Simulator,
    count_segment,
    graph_route,
    json_body,
    page,
    parse_filter,
    select_fields,
)
from local.entra.core import group_or_404 as core_group_or_404
from local.entra.state import PROFILE_FIELDS, User, now_iso

USER_READ = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
GROUP_READ = ("GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All",
              "GroupMember.ReadWrite.All")
ROLE_READ = ("RoleManagement.Read.Directory", "Directory.Read.All", "RoleManagement.ReadWrite.Directory",
             "GroupMember.Read.All")
ORG_READ = ("Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All", "User.Read.All")
PASSWORD_WRITE = ("User-PasswordProfile.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
USER_WRITE = ("User.ReadWrite.All", "Directory.ReadWrite.All", "User.EnableDisableAccount.All")
USER_DELETE = ("User.ReadWrite.All",)

# https://learn.microsoft.com/entra/identity/role-based-access-control/privileged-roles-permissions#who-can-reset-passwords
LIMITED_ROLES = {"Directory Readers", "Guest Inviter", "Helpdesk Administrator", "Message Center Reader",
                 "Password Administrator", "Reports Reader", "User Administrator", "Usage Summary Reports Reader"}
PASSWORD_SYMBOLS = set("@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ")
#: Most characters of the user properties the simulator keeps (user resource, properties).
PROPERTY_LENGTHS = {"displayName": 256, "givenName": 64, "surname": 64, "department": 64, "employeeId": 16,
                    **PROFILE_FIELDS}
#: passwordPolicies values (user resource): comma-separated.
PASSWORD_POLICIES = {"DisablePasswordExpiration", "DisableStrongPassword"}
COMPLEXITY_ERROR = ("The specified password does not comply with password complexity requirements. Please provide "
                    "a different password.")


def password_problem(password: str, banned: list[str]) -> bool:
    """Whether Entra's cloud password rules refuse it (8-256, 3 of 4 classes, allowed characters:
    https://learn.microsoft.com/entra/identity/authentication/concept-sspr-policy#microsoft-entra-password-policies)."""
    if not 8 <= len(password) <= 256:
        return True
    if any(not (c.isascii() and (c.isalnum() or c in PASSWORD_SYMBOLS)) for c in password):
        return True
    classes = sum([any(c.islower() for c in password), any(c.isupper() for c in password),
                   any(c.isdigit() for c in password), any(c in PASSWORD_SYMBOLS for c in password)])
    if classes < 3:
        return True
    lowered = password.lower()
    return any(term and len(term) >= 4 and term in lowered for term in banned)


def check_properties(body: dict[str, Any]) -> None:
    """Refuse values Graph refuses: too long, the wrong type, more than one business phone, a mail with
    characters outside ASCII ("This property can't contain accent characters", user resource)."""
    for name, most in PROPERTY_LENGTHS.items():
        value = body.get(name)
        if value is None:
            continue
        values = value if name == "businessPhones" and isinstance(value, list) and len(value) <= 1 else [value]
        if any(not isinstance(v, str) or len(v) > most for v in values):
            raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{name}' of resource "
                             "'User'.")
    mail = body.get("mail")
    if mail is not None and (not isinstance(mail, str) or not mail.isascii() or "@" not in mail):
        raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'mail' of resource 'User'.")


def set_properties(user: User, body: dict[str, Any]) -> None:
    """Store the properties of a create or update body (a profile property set to null is removed)."""
    for key in ("accountEnabled", "usageLocation", "displayName", "givenName", "surname", "department",
                "employeeId", "mail"):
        if key in body:
            setattr(user, key, body[key])
    profile = dict(user.profile or {})
    for key in PROFILE_FIELDS:
        if key in body:
            if body[key] in (None, []):
                profile.pop(key, None)
            else:
                profile[key] = body[key]
    user.profile = profile or None


def routes(sim: Simulator) -> list[Route]:
    """The directory routes, for /v1.0 and /beta."""
    tenant = sim.tenant

    def user_or_404(key: str) -> Any:
        user = tenant.user(key)
        if user is None:
            raise GraphError(404, "Request_ResourceNotFound",
                             f"Resource '{key}' does not exist or one of its queried reference-property objects are "
                             "not present.")
        return user

    def group_or_404(key: str) -> Any:
        found: Any = core_group_or_404(tenant, key)
        return found

    async def list_users(request: Request, caller: Caller) -> dict[str, Any]:
        expression = request.query_params.get("$filter")
        if not expression:
            users = list(tenant.users.values())
        else:
            name, values = parse_filter(expression, {"id", "userPrincipalName", "mail", "displayName", "employeeId"})
            wanted = {v.lower() for v in values}
            if name in ("id", "userPrincipalName"):
                # Looked up, not searched: a filter costs its (at most 15) values, not the tenant's size.
                found = {u.id: u for v in values if (u := tenant.user(v) or tenant.user(v.lower())) is not None
                         and str(getattr(u, name)).lower() in wanted}
                users = list(found.values())
            else:
                users = [u for u in tenant.users.values() if str(getattr(u, name) or "").lower() in wanted]
        select = select_fields(request)
        return page(request, users, context=f"{sim.base_url}/v1.0/$metadata#users",
                    render=lambda u: u.graph(select))

    async def get_user(request: Request, caller: Caller) -> dict[str, Any]:
        return dict(user_or_404(request.path_params["id"]).graph(select_fields(request)))

    async def patch_user(request: Request, caller: Caller) -> None:
        user = user_or_404(request.path_params["id"])
        body = await json_body(request)
        allowed = {"accountEnabled", "usageLocation", "displayName", "passwordProfile", "givenName", "surname",
                   "department", "employeeId", "mail", *PROFILE_FIELDS}
        unknown = set(body) - allowed - {"@odata.type"}
        if unknown:
            raise GraphError(400, "Request_BadRequest", f"Property '{sorted(unknown)[0]}' is read-only or unknown.")
        if body.get("displayName", "") is None:
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'displayName' of "
                             "resource 'User'.")
        check_properties(body)
        if "passwordProfile" in body:
            if not caller.roles & set(PASSWORD_WRITE):
                raise GraphError(403, "Authorization_RequestDenied",
                                 "Insufficient privileges to complete the operation.")
            app_roles = set(tenant.roles_of(caller.principal_id))
            target_roles = set(tenant.roles_of(user.id))
            full = app_roles & {"Privileged Authentication Administrator", "Global Administrator"}
            limited = app_roles & {"User Administrator", "Password Administrator", "Helpdesk Administrator"}
            if not full and (not limited or target_roles - LIMITED_ROLES):
                raise GraphError(403, "Authorization_RequestDenied",
                                 "Insufficient privileges to complete the operation.")
            profile = body["passwordProfile"] or {}
            password = profile.get("password")
            if password is not None:
                banned = [*re.split(r"[\s.@_-]+", f"{user.displayName} {user.userPrincipalName}".lower()),
                          tenant.displayName.lower()]
                if not isinstance(password, str) or password_problem(password, banned):
                    raise GraphError(400, "Request_BadRequest", COMPLEXITY_ERROR)
                tenant.passwords[user.id] = {"password": password, "setAt": now_iso(),
                                             "forceChange": str(bool(profile.get("forceChangePasswordNextSignIn")))}
        elif body.keys() - {"accountEnabled"} and not caller.roles & {"User.ReadWrite.All", "Directory.ReadWrite.All"}:
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        set_properties(user, body)
        if body.keys() - {"passwordProfile"}:
            tenant.record("user", user.id)
        return None

    async def create_user(request: Request, caller: Caller) -> JSONResponse:
        # https://learn.microsoft.com/graph/api/user-post-users: accountEnabled, displayName, mailNickname,
        # userPrincipalName and passwordProfile are required; the UPN's domain must be a verified domain
        # of the tenant; 201 with the user.
        body = await json_body(request)
        known = {"accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile",
                 "givenName", "surname", "usageLocation", "department", "employeeId", "mail", "passwordPolicies",
                 *PROFILE_FIELDS}
        unknown = set(body) - known - {"@odata.type"}
        if unknown:
            raise GraphError(400, "Request_BadRequest", f"Property '{sorted(unknown)[0]}' does not exist on type "
                             "'microsoft.graph.user'.")
        check_properties(body)
        policies = body.get("passwordPolicies")
        if policies is not None and (not isinstance(policies, str) or
                                     {p.strip() for p in policies.split(",")} - PASSWORD_POLICIES):
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'passwordPolicies' of "
                             "resource 'User'.")
        for name in ("displayName", "mailNickname", "userPrincipalName"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{name}' of "
                                 "resource 'User'.")
        if not isinstance(body.get("accountEnabled"), bool):
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'accountEnabled' of "
                             "resource 'User'.")
        profile = body.get("passwordProfile")
        if not isinstance(profile, dict) or not isinstance(profile.get("password"), str):
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'passwordProfile' of "
                             "resource 'User'.")
        upn = str(body["userPrincipalName"])
        domain = upn.rsplit("@", 1)[1].lower() if "@" in upn else ""
        if domain not in {str(d["id"]).lower() for d in tenant.domains if d.get("isVerified")}:
            raise GraphError(400, "Request_BadRequest", "The domain portion of the userPrincipalName property is "
                             "invalid. You must use one of the verified domain names in your organization.")
        if tenant.user(upn) is not None:
            raise GraphError(400, "Request_BadRequest", "Another object with the same value for property "
                             "userPrincipalName already exists.")
        if "DisableStrongPassword" not in (policies or "") and password_problem(str(profile["password"]), []):
            raise GraphError(400, "Request_BadRequest", COMPLEXITY_ERROR)
        user = User(id=str(uuid.uuid4()), userPrincipalName=upn, displayName=str(body["displayName"]))
        set_properties(user, body)
        tenant.users[user.id] = user
        tenant.reindex()
        tenant.passwords[user.id] = {"password": str(profile["password"]), "setAt": now_iso(),
                                     "forceChange": str(bool(profile.get("forceChangePasswordNextSignIn", True))),
                                     "policies": str(policies or "")}
        tenant.record("user", user.id)
        # The documented response: the user with its default properties (businessPhones empty, the rest null).
        created = {"@odata.context": f"{sim.base_url}/v1.0/$metadata#users/$entity", "businessPhones": [],
                   "jobTitle": None, "mobilePhone": None, "officeLocation": None, "preferredLanguage": None,
                   **user.graph(None)}
        return JSONResponse(created, status_code=201,
                            headers={"location": f"{sim.origin(request)}/v1.0/users/{user.id}"})

    async def delete_user(request: Request, caller: Caller) -> None:
        # https://learn.microsoft.com/graph/api/user-delete: 204 No Content.
        tenant.delete_user(user_or_404(request.path_params["id"]).id)
        return None

    async def get_manager(request: Request, caller: Caller) -> dict[str, Any]:
        # https://learn.microsoft.com/graph/api/user-list-manager: the manager, 404 when none.
        user = user_or_404(request.path_params["id"])
        manager = tenant.users.get(user.manager or "")
        if manager is None:
            raise GraphError(404, "Request_ResourceNotFound", "Resource 'manager' does not exist or one of its queried "
                             "reference-property objects are not present.")
        return {"@odata.type": "#microsoft.graph.user", **manager.graph(select_fields(request))}

    async def put_manager(request: Request, caller: Caller) -> None:
        # https://learn.microsoft.com/graph/api/user-post-manager: PUT manager/$ref with @odata.id of a user, 204.
        user = user_or_404(request.path_params["id"])
        reference = (await json_body(request)).get("@odata.id")
        origins = tuple(origin + "/" for origin in sim.graph_origins(request))
        if not isinstance(reference, str) or not reference.startswith(origins):
            raise GraphError(400, "Request_BadRequest", "Invalid URL format specified in @odata.id.")
        manager = user_or_404(reference.rstrip("/").rsplit("/", 1)[-1])
        if manager.id == user.id:
            raise GraphError(400, "Request_BadRequest", "A user cannot be their own manager.")
        user.manager = manager.id
        tenant.record("user", user.id)

    async def delete_manager(request: Request, caller: Caller) -> None:
        # https://learn.microsoft.com/graph/api/user-delete-manager: 204, 404 when none.
        user = user_or_404(request.path_params["id"])
        if not user.manager:
            raise GraphError(404, "Request_ResourceNotFound", "Resource 'manager' does not exist or one of its queried "
                             "reference-property objects are not present.")
        user.manager = None
        tenant.record("user", user.id)

    async def count_users(request: Request, caller: Caller) -> Response:
        return count_segment(request, len(tenant.users))

    async def count_groups(request: Request, caller: Caller) -> Response:
        return count_segment(request, len(tenant.groups))

    async def list_groups(request: Request, caller: Caller) -> dict[str, Any]:
        groups = list(tenant.groups.values())
        expression = request.query_params.get("$filter")
        if expression:
            name, values = parse_filter(expression, {"id", "displayName", "mailNickname"})
            groups = [g for g in groups if str(getattr(g, name)) in values]
        select = select_fields(request)
        items = []
        for g in groups:
            item = {"id": g.id, "displayName": g.displayName, "mailNickname": g.mailNickname, "mail": g.mail,
                    "securityEnabled": g.securityEnabled, "mailEnabled": g.mailEnabled, "groupTypes": g.groupTypes,
                    "description": g.description}
            items.append({k: v for k, v in item.items() if not select or k in select or k == "id"})
        return page(request, items, context=f"{sim.base_url}/v1.0/$metadata#groups")

    async def get_group(request: Request, caller: Caller) -> dict[str, Any]:
        g = group_or_404(request.path_params["id"])
        return {"id": g.id, "displayName": g.displayName, "mailNickname": g.mailNickname,
                "securityEnabled": g.securityEnabled, "mailEnabled": g.mailEnabled, "groupTypes": g.groupTypes,
                "description": g.description}

    async def transitive_users(request: Request, caller: Caller) -> dict[str, Any]:
        group = group_or_404(request.path_params["id"])
        select = select_fields(request)
        return page(request, tenant.transitive_users(group.id), context=f"{sim.base_url}/v1.0/$metadata#users",
                    render=lambda uid: tenant.users[uid].graph(select))

    async def count_transitive_users(request: Request, caller: Caller) -> Response:
        group = group_or_404(request.path_params["id"])
        return count_segment(request, len(tenant.transitive_users(group.id)))

    async def direct_members(request: Request, caller: Caller) -> dict[str, Any]:
        group = group_or_404(request.path_params["id"])
        items: list[dict[str, Any]] = []
        for member in group.members:
            if member in tenant.users:
                items.append(tenant.users[member].graph(select_fields(request)))
            elif member in tenant.groups:
                items.append({"@odata.type": "#microsoft.graph.group", "id": member,
                              "displayName": tenant.groups[member].displayName})
        return page(request, items)

    def _role(name: str) -> dict[str, Any]:
        return {"@odata.type": "#microsoft.graph.directoryRole", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                "displayName": name}

    def _roles_page(request: Request, object_id: str) -> dict[str, Any]:
        return page(request, [_role(name) for name in tenant.roles_of(object_id)])

    async def list_roles(request: Request, caller: Caller) -> dict[str, Any]:
        # https://learn.microsoft.com/graph/api/directoryrole-list (activated roles only)
        return page(request, [_role(name) for name, members in sorted(tenant.roles.items()) if members])

    async def role_members(request: Request, caller: Caller) -> dict[str, Any]:
        # https://learn.microsoft.com/graph/api/directoryrole-list-members
        role_id = request.path_params["id"]
        name = next((n for n in tenant.roles if str(uuid.uuid5(uuid.NAMESPACE_URL, n)) == role_id), None)
        if name is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{role_id}' does not exist.")
        # The documented response lists the members as full objects (users with their names and UPN).
        select = select_fields(request)
        items = []
        for member in tenant.roles[name]:
            if member in tenant.users:
                # A collection of directoryObjects names each member's type, $select or not.
                items.append({"@odata.type": "#microsoft.graph.user", **tenant.users[member].graph(select)})
                continue
            item: dict[str, Any]
            if member in tenant.groups:
                item = {"@odata.type": "#microsoft.graph.group", "id": member,
                        "displayName": tenant.groups[member].displayName}
            else:
                app = tenant.app_by_principal(member)
                item = {"@odata.type": "#microsoft.graph.servicePrincipal", "id": member,
                        "displayName": app.displayName if app else None, "appId": app.clientId if app else None}
            items.append({k: v for k, v in item.items() if not select or k in select or k in ("id", "@odata.type")})
        return page(request, items, context=f"{sim.base_url}/v1.0/$metadata#directoryObjects")

    async def user_roles(request: Request, caller: Caller) -> dict[str, Any]:
        return _roles_page(request, user_or_404(request.path_params["id"]).id)

    async def principal_roles(request: Request, caller: Caller) -> dict[str, Any]:
        principal = request.path_params["id"]
        if tenant.app_by_principal(principal) is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{principal}' does not exist.")
        return _roles_page(request, principal)

    async def organization(request: Request, caller: Caller) -> dict[str, Any]:
        org = {"id": tenant.tenantId, "displayName": tenant.displayName, "verifiedDomains": [
            {"name": d["id"], "isDefault": d.get("isDefault", False), "isInitial": d.get("isInitial", False),
             "type": d.get("authenticationType", "Managed")} for d in tenant.domains if d.get("isVerified", True)]}
        select = select_fields(request)
        if select:
            org = {k: v for k, v in org.items() if k in select or k == "id"}
        return {"@odata.context": f"{sim.base_url}/v1.0/$metadata#organization", "value": [org]}

    found: list[Route] = []
    for version in ("v1.0", "beta"):
        def add(path: str, handler: Any, methods: list[str], version: str = version, **options: Any) -> None:
            found.append(Route(f"/{version}{path}", graph_route(sim, handler, **options), methods=methods))

        add("/users", list_users, ["GET"], permissions=USER_READ, cost=2)
        add("/users/$count", count_users, ["GET"], permissions=USER_READ, cost=1)
        add("/users", create_user, ["POST"], permissions=USER_DELETE, write=True)
        add("/users/{id}", get_user, ["GET"], permissions=USER_READ, cost=1)
        add("/users/{id}", delete_user, ["DELETE"], permissions=USER_DELETE, write=True)
        add("/users/{id}", patch_user, ["PATCH"], permissions=(*PASSWORD_WRITE, *USER_WRITE), write=True)
        add("/users/{id}/manager", get_manager, ["GET"], permissions=USER_READ, cost=1)
        add("/users/{id}/manager/$ref", put_manager, ["PUT"], permissions=("User.ReadWrite.All",
                                                                          "Directory.ReadWrite.All"), write=True)
        add("/users/{id}/manager/$ref", delete_manager, ["DELETE"], permissions=("User.ReadWrite.All",
                                                                                "Directory.ReadWrite.All"), write=True)
        add("/users/{id}/transitiveMemberOf/microsoft.graph.directoryRole", user_roles, ["GET"],
            permissions=ROLE_READ, cost=1)
        add("/servicePrincipals/{id}/transitiveMemberOf/microsoft.graph.directoryRole", principal_roles, ["GET"],
            permissions=ROLE_READ, cost=1)
        add("/directoryRoles", list_roles, ["GET"], permissions=ROLE_READ, cost=1)
        add("/directoryRoles/{id}/members", role_members, ["GET"], permissions=ROLE_READ, cost=3)
        add("/groups", list_groups, ["GET"], permissions=GROUP_READ, cost=2)
        add("/groups/$count", count_groups, ["GET"], permissions=GROUP_READ, cost=1)
        add("/groups/{id}", get_group, ["GET"], permissions=GROUP_READ, cost=1)
        add("/groups/{id}/transitiveMembers/microsoft.graph.user", transitive_users, ["GET"],
            permissions=GROUP_READ, cost=5)
        add("/groups/{id}/transitiveMembers/microsoft.graph.user/$count", count_transitive_users, ["GET"],
            permissions=GROUP_READ, cost=1)
        add("/groups/{id}/members", direct_members, ["GET"], permissions=GROUP_READ, cost=3)
        add("/organization", organization, ["GET"], permissions=ORG_READ, cost=1)
    return found
