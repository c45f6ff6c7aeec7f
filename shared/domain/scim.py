"""SCIM 2.0 resources as the bridge's SCIM service reads and writes them (RFC 7643, RFC 7644), without I/O.

The schemas, filters and PATCH semantics come from scim2-models (pydantic models of RFC 7643 and the
RFC 7644 filter and path grammar); this module adds what the service decides on top of them: which
resource types are served, how a validation failure becomes a SCIM error naming the attribute, the
`meta` of a stored resource, and the refusals the protocol leaves to the service provider (a group
that is its own member). Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import ValidationError
from scim2_models import (
    URN,
    Context,
    EnterpriseUser,
    Extension,
    Group,
    PatchOp,
    ResourceType,
    SCIMException,
    SearchRequest,
    ServiceProviderConfig,
    User,
)

Kind = Literal["Users", "Groups"]
KINDS: tuple[Kind, ...] = ("Users", "Groups")
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
#: The bridge's Group extension: what Entra keeps of a group that the core Group schema has no attribute for.
GROUP_EXTENSION_SCHEMA = "urn:entra-bridge:params:scim:schemas:extension:2.0:Group"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
#: RFC 7644 section 3.4.2.4: the service provider may cap `count`.
MAX_COUNT = 200
#: Operations of one Bulk request the service accepts (advertised in ServiceProviderConfig).
MAX_BULK_OPERATIONS = 100
MAX_BULK_BYTES = 1_048_576



class BridgeGroup(Extension):
    """The group's Entra `description` (RFC 7643 section 3.3 lets a service provider extend a resource)."""

    __schema__ = URN(GROUP_EXTENSION_SCHEMA)

    description: str | None = None
    """The Entra group's description (docs/export.md)."""


UserModel = User[EnterpriseUser]
# scim2-models takes extensions on any resource; its Group is not declared generic, hence the cast.
GroupModel: Any = cast(Any, Group)[BridgeGroup]
_MODELS: dict[Kind, Any] = {"Users": UserModel, "Groups": GroupModel}
_RESOURCE_NAMES: dict[Kind, str] = {"Users": "User", "Groups": "Group"}


class ScimError(Exception):
    """A request the SCIM service refuses: HTTP status, RFC 7644 `scimType` and a detail naming the problem."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def body(self) -> dict[str, Any]:
        """The SCIM error response (RFC 7644 section 3.12)."""
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


@dataclass(frozen=True)
class Stored:
    """A resource as the service keeps it: its SCIM attributes (no `id`, no `meta`) and version."""

    kind: Kind
    id: str
    attributes: dict[str, Any]
    version: int
    created: str
    modified: str

    @property
    def etag(self) -> str:
        """The resource's weak ETag, also its `meta.version` (RFC 7644 section 3.14)."""
        return f'W/"{self.version}"'

    def render(self, base_url: str) -> dict[str, Any]:
        """The resource as the service answers it, with `id` and `meta`."""
        return {**self.attributes, "id": self.id,
                "meta": {"resourceType": _RESOURCE_NAMES[self.kind], "created": self.created,
                         "lastModified": self.modified, "version": self.etag,
                         "location": f"{base_url}/{self.kind}/{self.id}"}}


def _describe(exc: ValidationError) -> ScimError:
    """The first problem of a pydantic validation, as a SCIM error naming the attribute."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    kind = str(first["type"])
    if kind.startswith("scim_"):
        return ScimError(400, f"{where}: {first['msg']}" if first["loc"] else str(first["msg"]), kind[5:])
    if kind == "extra_forbidden":
        return ScimError(400, f"attribute '{where}' is not defined by the resource's schemas", "invalidSyntax")
    return ScimError(400, f"{where}: {first['msg']}", "invalidValue")


def _fill_manager_reference(payload: dict[str, Any]) -> dict[str, Any]:
    """Identity providers send the manager as {"value": id}; RFC 7643 section 4.3 adds `$ref`, which the
    model requires: the service fills it from the id so the two stay equal."""
    extension = payload.get(ENTERPRISE_SCHEMA)
    if isinstance(extension, dict) and isinstance(extension.get("manager"), dict):
        manager = dict(extension["manager"])
        if manager.get("value") and not manager.get("$ref"):
            manager["$ref"] = f"../Users/{manager['value']}"
        payload = {**payload, ENTERPRISE_SCHEMA: {**extension, "manager": manager}}
    return payload


def _dump(model: Any) -> dict[str, Any]:
    """Attributes to keep and answer: write-only ones (a password) are dropped here, never stored."""
    data: dict[str, Any] = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    data.pop("id", None)
    data.pop("meta", None)
    return data


def validate(kind: Kind, payload: Any, *, resource_id: str | None = None) -> dict[str, Any]:
    """A POST or PUT body checked against the core schema (and the enterprise extension for users).

    Unknown attributes and values of the wrong type are refused, naming the attribute; `id` and
    `meta` sent by the client are ignored (RFC 7643 section 3.1: they are the service's).
    """
    if not isinstance(payload, dict):
        raise ScimError(400, "the request body must be a JSON object", "invalidSyntax")
    body = _fill_manager_reference({k: v for k, v in payload.items() if k not in ("id", "meta")})
    context = Context.RESOURCE_CREATION_REQUEST if resource_id is None else Context.RESOURCE_REPLACEMENT_REQUEST
    try:
        model = _MODELS[kind].model_validate(body, scim_ctx=context)
    except ValidationError as exc:
        raise _describe(exc) from None
    except SCIMException as exc:
        raise ScimError(exc.status, str(exc.detail), exc.scim_type) from None
    data = _dump(model)
    if kind == "Groups":
        _check_members(data, resource_id)
    elif not str(data.get("userName") or "").strip():
        raise ScimError(400, "userName is required", "invalidValue")
    return data


def _check_members(data: Mapping[str, Any], resource_id: str | None) -> None:
    for member in data.get("members") or []:
        if not isinstance(member, dict) or not member.get("value"):
            raise ScimError(400, "members: every member needs a value (the id of a User or Group)", "invalidValue")
        if resource_id is not None and member["value"] == resource_id:
            raise ScimError(400, f"members: group {resource_id} cannot be a member of itself", "invalidValue")


_MEMBER_PATH = re.compile(r'^members\[value eq "([^"]*)"\]$')


def _member_operations(operations: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """The operations on `members` and the others, when every member operation is one the service applies itself
    (add, replace or remove on `members`, remove of `members[value eq "..."]`); None otherwise."""
    members, others = [], []
    for operation in operations:
        path = operation.path or ""
        if path == "members" or _MEMBER_PATH.match(path):
            if path != "members" and operation.op.value != "remove":
                return None
            members.append(operation)
        elif not path and isinstance(operation.value, dict) and "members" in operation.value:
            return None
        else:
            others.append(operation)
    return members, others


def _patch_members(current: list[Any], operations: list[Any]) -> list[Any]:
    """RFC 7644 section 3.5.2 on the members list: add appends the values not there yet, replace sets them all,
    remove drops all or the one the filter names. New values are checked against the Group schema."""
    members = list(current)
    for operation in operations:
        if operation.op.value == "remove":
            # members[value eq "x"] removes one, `members` all (scim2-models refuses a remove that carries a value).
            matched = _MEMBER_PATH.match(operation.path or "")
            members = [m for m in members if matched and m.get("value") != matched.group(1)]
            continue
        values = operation.value if isinstance(operation.value, list) else [operation.value]
        checked = _dump(GroupModel.model_validate({"schemas": [GROUP_SCHEMA], "displayName": "-",
                                                   "members": values}, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST))
        added = checked.get("members") or []
        if operation.op.value == "replace":
            members = added
        else:
            present = {m.get("value") for m in members}
            members.extend(m for m in added if m.get("value") not in present)
    return members


def patch(kind: Kind, current: Stored, payload: Any) -> dict[str, Any]:
    """Apply a PatchOp (RFC 7644 section 3.5.2: add, replace, remove, with or without a path) to a copy
    of the resource; a path that names no attribute is refused (`invalidPath`), nothing changes.

    A group's member operations are applied to its members list here, and the rest by scim2-models on the group
    without its members: patching a 50,000-member group through the model re-validates every member, which takes
    seconds (docs/export.md, Limits)."""
    model: Any = _MODELS[kind]
    if not isinstance(payload, dict):
        raise ScimError(400, "the request body must be a PatchOp JSON object", "invalidSyntax")
    try:
        operation = PatchOp[model].model_validate(payload, scim_ctx=Context.RESOURCE_PATCH_REQUEST)
        split = _member_operations(list(operation.operations or [])) if kind == "Groups" else None
        attributes = current.attributes
        if split is not None:
            attributes = {k: v for k, v in attributes.items() if k != "members"}
            operation = operation.model_copy(update={"operations": split[1]})
        resource = model.model_validate(_fill_manager_reference(attributes),
                                        scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        operation.patch(resource)
        # Validate the result as a whole: a patch may not leave a resource its schema refuses.
        data = _dump(model.model_validate(_dump(resource), scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST))
        if split is not None:
            members = _patch_members(current.attributes.get("members") or [], split[0])
            data.pop("members", None)
            if members:
                data["members"] = members
    except ValidationError as exc:
        raise _describe(exc) from None
    except SCIMException as exc:
        raise ScimError(exc.status, str(exc.detail), exc.scim_type) from None
    if kind == "Groups":
        _check_members(data, current.id)
    return data


def matcher(kind: Kind, expression: str | None) -> Callable[[Stored], bool]:
    """A predicate for the `filter` query parameter (RFC 7644 section 3.4.2.2); an unknown attribute or
    bad syntax is an `invalidFilter` error naming it."""
    if not expression:
        return lambda _: True
    model: Any = _MODELS[kind]
    try:
        request = SearchRequest[model].model_validate({"filter": expression}, scim_ctx=Context.SEARCH_REQUEST)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise ScimError(400, f"filter {expression!r}: {first['msg']}", "invalidFilter") from None
    compiled = request.filter
    if compiled is None:
        return lambda _: True

    def matches(stored: Stored) -> bool:
        resource = model.model_validate({**_fill_manager_reference(stored.attributes), "id": stored.id})
        return bool(compiled.match(resource))

    return matches


def page_bounds(start_index: str | None, count: str | None) -> tuple[int, int]:
    """`startIndex` (1-based, below 1 read as 1) and `count` (negative read as 0, capped at MAX_COUNT),
    RFC 7644 section 3.4.2.4."""
    try:
        start = int(start_index) if start_index else 1
        size = int(count) if count else MAX_COUNT
    except ValueError:
        raise ScimError(400, "startIndex and count must be integers", "invalidValue") from None
    return max(start, 1), min(max(size, 0), MAX_COUNT)


def list_response(resources: list[dict[str, Any]], total: int, start: int) -> dict[str, Any]:
    """A ListResponse (RFC 7644 section 3.4.2)."""
    return {"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start,
            "itemsPerPage": len(resources), "Resources": resources}


def service_provider_config(documentation: str, max_payload: int = MAX_BULK_BYTES) -> dict[str, Any]:
    """What the service supports (RFC 7643 section 5); `max_payload` is the largest body the host accepts."""
    config = ServiceProviderConfig.model_validate({
        "documentationUri": documentation,
        "patch": {"supported": True},
        "bulk": {"supported": True, "maxOperations": MAX_BULK_OPERATIONS,
                 "maxPayloadSize": min(max_payload, MAX_BULK_BYTES)},
        "filter": {"supported": True, "maxResults": MAX_COUNT},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "OAuth Bearer Token", "primary": True,
            "description": "An Entra access token for the bridge's API with the app role Bridge.Export, or the "
                           "function key"}],
    })
    data: dict[str, Any] = config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    return data


def resource_types(base_url: str) -> list[dict[str, Any]]:
    """The User (with the enterprise extension) and Group resource types (RFC 7643 section 6)."""
    found = []
    for kind in KINDS:
        data: dict[str, Any] = ResourceType.from_resource(_MODELS[kind]).model_dump(
            scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        data["meta"] = {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{data['id']}"}
        found.append(data)
    return found


def schemas(base_url: str) -> list[dict[str, Any]]:
    """The User, enterprise User, Group and the bridge's Group extension schemas (RFC 7643 section 7)."""
    found = []
    for model in (UserModel, EnterpriseUser, GroupModel, BridgeGroup):
        data: dict[str, Any] = model.to_schema().model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        data["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{data['id']}"}
        found.append(data)
    return found


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A ListResponse of every item (discovery endpoints do not page)."""
    return list_response(items, len(items), 1)
