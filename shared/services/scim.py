"""The SCIM 2.0 service of a connection (RFC 7644): resources kept through the repository port, each
accepted change stored as pending and queued for the export engine (`export-work`, docs/export.md).

Every refusal is a ScimError naming the attribute, filter or path at fault, raised before anything is
written. `If-Match` is honoured on PUT, PATCH and DELETE (RFC 7644 section 3.14).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from shared.config import Connection
from shared.domain import scim
from shared.domain.export import check_group, check_user, domain_of, manager_of, upn_for, upn_problem
from shared.domain.scim import Kind, ScimError, Stored
from shared.errors import Conflict
from shared.messages import WorkMessage
from shared.services.ports import Clock, ExportChange, ScimRepository, WorkQueue
from shared.topology import Queue

Domains = Callable[[], Awaitable[list[str]]]
#: Member ids looked up at once when a change adds members.
MEMBER_LOOKUPS = 32


def unique_name(kind: Kind, attributes: Mapping[str, Any]) -> str:
    """The name that must be unique within a connection: a user's userName (case-insensitive,
    RFC 7643 section 4.1.1); groups have none."""
    return str(attributes.get("userName") or "").lower() if kind == "Users" else ""


class ScimService:
    """SCIM requests of the connections with export enabled."""

    def __init__(self, repository: ScimRepository, queue: WorkQueue, clock: Clock) -> None:
        self._repo = repository
        self._queue = queue
        self._clock = clock

    @staticmethod
    def enabled(conn: Connection) -> None:
        """Refuse requests of a connection whose export is off."""
        if not conn.features.export.enabled:
            raise ScimError(404, f"the SCIM service of connection {conn.name!r} is off: set "
                                 "features.export.enabled to true")

    async def get(self, conn: Connection, kind: Kind, resource_id: str) -> Stored:
        """One resource; 404 names it."""
        self.enabled(conn)
        found = await self._repo.get(conn.name, kind, resource_id)
        if found is None:
            raise ScimError(404, f"{kind} {resource_id!r} not found")
        return found

    async def query(self, conn: Connection, kind: Kind, *, filter_text: str | None, start_index: str | None,
                    count: str | None) -> tuple[list[Stored], int, int]:
        """Resources matching the filter, the page asked for, the total and the start index."""
        self.enabled(conn)
        matches = scim.matcher(kind, filter_text)
        start, size = scim.page_bounds(start_index, count)
        found = [s async for s in self._repo.all(conn.name, kind) if matches(s)]
        found.sort(key=lambda s: (s.created, s.id))
        return found[start - 1:start - 1 + size], len(found), start

    async def create(self, conn: Connection, kind: Kind, payload: Any, *, request_id: str,
                     domains: Domains) -> Stored:
        """Validate and store a new resource, then queue its export."""
        self.enabled(conn)
        attributes = scim.validate(kind, payload)
        await self._check_references(conn, kind, attributes, domains)
        now = self._now()
        stored = Stored(kind, str(uuid.uuid4()), attributes, 1, now, now)
        try:
            await self._repo.create(conn.name, stored, unique_name(kind, attributes))
        except Conflict:
            raise ScimError(409, f"userName {attributes.get('userName')!r} is already used by another User",
                            "uniqueness") from None
        await self._queue_change(conn, stored, "create", request_id)
        return stored

    async def replace(self, conn: Connection, kind: Kind, resource_id: str, payload: Any, *, if_match: str | None,
                      request_id: str, domains: Domains) -> Stored:
        """PUT: replace every attribute of a resource."""
        current = await self._current(conn, kind, resource_id, if_match)
        attributes = scim.validate(kind, payload, resource_id=resource_id)
        return await self._write(conn, current, attributes, "replace", request_id, domains)

    async def patch(self, conn: Connection, kind: Kind, resource_id: str, payload: Any, *, if_match: str | None,
                    request_id: str, domains: Domains) -> Stored:
        """PATCH: apply add, replace and remove operations."""
        current = await self._current(conn, kind, resource_id, if_match)
        attributes = scim.patch(kind, current, payload)
        return await self._write(conn, current, attributes, "patch", request_id, domains)

    async def delete(self, conn: Connection, kind: Kind, resource_id: str, *, if_match: str | None,
                     request_id: str) -> None:
        """DELETE: forget the resource; the export engine applies the deletion rules in Entra."""
        current = await self._current(conn, kind, resource_id, if_match)
        await self._repo.delete(conn.name, kind, resource_id, unique_name(kind, current.attributes))
        tombstone = Stored(kind, resource_id, {}, current.version + 1, current.created, self._now())
        await self._queue_change(conn, tombstone, "delete", request_id)

    async def _current(self, conn: Connection, kind: Kind, resource_id: str, if_match: str | None) -> Stored:
        current = await self.get(conn, kind, resource_id)
        if if_match and if_match.strip() != "*" and current.etag not in {t.strip() for t in if_match.split(",")}:
            raise ScimError(412, f"If-Match {if_match} does not match the current version {current.etag}")
        return current

    async def _write(self, conn: Connection, current: Stored, attributes: dict[str, Any], operation: str,
                     request_id: str, domains: Domains) -> Stored:
        await self._check_references(conn, current.kind, attributes, domains, current=current)
        updated = Stored(current.kind, current.id, attributes, current.version + 1, current.created, self._now())
        try:
            await self._repo.replace(conn.name, updated, old_unique=unique_name(current.kind, current.attributes),
                                     unique=unique_name(current.kind, attributes))
        except Conflict as exc:
            raise ScimError(409, f"{current.kind} {current.id!r} changed meanwhile or its userName is taken: "
                                 f"{exc.detail}", "uniqueness") from None
        await self._queue_change(conn, updated, operation, request_id)
        return updated

    async def _check_references(self, conn: Connection, kind: Kind, attributes: Mapping[str, Any], domains: Domains,
                                *, current: Stored | None = None) -> None:
        """Members must be this service's Users or Groups; a user's values must be ones Entra takes, its manager a
        User of this service and its UPN on a verified domain."""
        if kind == "Groups":
            check_group(attributes)
            # Only members the change adds are looked up (a PATCH of a 50,000-member group adds a few), a few at once.
            known = {str(m.get("value")) for m in (current.attributes.get("members") or [])} if current else set()
            added = list(dict.fromkeys(str(m["value"]) for m in attributes.get("members") or []
                                       if str(m["value"]) not in known))
            for start in range(0, len(added), MEMBER_LOOKUPS):
                chunk = added[start:start + MEMBER_LOOKUPS]
                for value, exists in zip(chunk, await asyncio.gather(*(self._exists(conn, v) for v in chunk)),
                                         strict=True):
                    if not exists:
                        raise ScimError(400, f"members: {value!r} is not a User or Group of this service",
                                        "invalidValue")
            return
        check_user(attributes, current.id if current is not None else None)
        manager = manager_of(attributes)
        # Checked when it changes: a manager deleted since must not block the user's other changes.
        if manager is not None and (current is None or manager != manager_of(current.attributes)) and \
                await self._repo.get(conn.name, "Users", manager) is None:
            raise ScimError(400, f"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager: {manager!r} is "
                                 "not a User of this service", "invalidValue")
        rules = conn.features.export
        if rules.username_mapping not in ("upn", "userNameAtDomain"):
            return
        upn = upn_for(attributes, rules)
        if current is not None and upn.lower() == upn_for(current.attributes, rules).lower():
            return
        problem = upn_problem(upn, await domains(), rules)
        if problem:
            raise ScimError(400, f"userName: {problem}" if domain_of(upn) else problem, "invalidValue")

    async def _exists(self, conn: Connection, value: str) -> bool:
        """Whether a User or Group of this id exists."""
        return await self._repo.get(conn.name, "Users", value) is not None or \
            await self._repo.get(conn.name, "Groups", value) is not None

    async def _queue_change(self, conn: Connection, stored: Stored, operation: str, request_id: str) -> None:
        change = ExportChange(id=f"{self._now()}-{uuid.uuid4().hex[:8]}", kind=stored.kind, scim_id=stored.id,
                              operation=operation, request_id=request_id, received=self._now())
        await self._repo.add_change(conn.name, change)
        message = WorkMessage(connection=conn.name, kind=f"export.{stored.kind.lower()}", target=stored.id,
                              idempotency_key=change.id, correlation_id=request_id,
                              args={"resourceType": stored.kind, "change": change.id})
        await self._queue.send(Queue.EXPORT, message.model_dump(mode="json", by_alias=True))

    def _now(self) -> str:
        return self._clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


BULK_ID = re.compile(r"bulkId:([A-Za-z0-9._~-]+)")


class BulkRunner:
    """RFC 7644 section 3.7: operations in order, `bulkId:` references resolved to the ids created earlier in
    the request, stopping once `failOnErrors` operations have failed."""

    def __init__(self, service: ScimService) -> None:
        self._service = service

    async def run(self, conn: Connection, payload: Any, *, request_id: str, domains: Domains,
                  base_url: str) -> dict[str, Any]:
        """The BulkResponse of a BulkRequest."""
        self._service.enabled(conn)
        if not isinstance(payload, dict) or not isinstance(payload.get("Operations"), list):
            raise ScimError(400, "a BulkRequest needs an Operations list", "invalidSyntax")
        operations = payload["Operations"]
        if len(operations) > scim.MAX_BULK_OPERATIONS:
            raise ScimError(413, f"{len(operations)} operations; at most {scim.MAX_BULK_OPERATIONS} per request")
        fail_on = payload.get("failOnErrors")
        if fail_on is not None and (isinstance(fail_on, bool) or not isinstance(fail_on, int) or fail_on < 1):
            raise ScimError(400, "failOnErrors must be a positive integer", "invalidValue")
        self._check_syntax(payload)
        ids: dict[str, str] = {}
        results: list[dict[str, Any]] = []
        errors = 0
        for index, operation in enumerate(operations):
            if fail_on is not None and errors >= fail_on:
                break
            result = await self._one(conn, operation, ids, index, request_id, domains, base_url)
            errors += int(result["status"]) >= 400
            results.append(result)
        return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"], "Operations": results}

    async def _one(self, conn: Connection, operation: Any, ids: dict[str, str], index: int, request_id: str,
                   domains: Domains, base_url: str) -> dict[str, Any]:
        method = str(operation.get("method") or "").upper() if isinstance(operation, dict) else ""
        bulk_id = operation.get("bulkId") if isinstance(operation, dict) else None
        answer: dict[str, Any] = {"method": method or "?", **({"bulkId": bulk_id} if bulk_id else {})}
        try:
            if not isinstance(operation, dict) or method not in ("POST", "PUT", "PATCH", "DELETE"):
                raise ScimError(400, f"Operations[{index}].method must be POST, PUT, PATCH or DELETE", "invalidSyntax")
            path = self._resolve(str(operation.get("path") or ""), ids)
            data = json.loads(self._resolve(json.dumps(operation.get("data")), ids))
            parts = [p for p in path.split("/") if p]
            if not parts or parts[0] not in scim.KINDS or len(parts) > 2 or (method == "POST") != (len(parts) == 1):
                raise ScimError(400, f"Operations[{index}].path {path!r} is not /Users, /Groups or /<type>/<id> as "
                                     "the method needs", "invalidPath")
            kind: Kind = "Users" if parts[0] == "Users" else "Groups"
            op_request = f"{request_id}:{index}"
            version = operation.get("version")
            if method == "POST":
                if not bulk_id:
                    raise ScimError(400, f"Operations[{index}].bulkId is required for POST", "invalidValue")
                stored = await self._service.create(conn, kind, data, request_id=op_request, domains=domains)
                ids[str(bulk_id)] = stored.id
            elif method == "DELETE":
                await self._service.delete(conn, kind, parts[1], if_match=version, request_id=op_request)
                return {**answer, "status": "204"}
            elif method == "PUT":
                stored = await self._service.replace(conn, kind, parts[1], data, if_match=version,
                                                     request_id=op_request, domains=domains)
            else:
                stored = await self._service.patch(conn, kind, parts[1], data, if_match=version,
                                                   request_id=op_request, domains=domains)
            return {**answer, "status": "201" if method == "POST" else "200", "version": stored.etag,
                    "location": f"{base_url}/{kind}/{stored.id}"}
        except ScimError as err:
            return {**answer, "status": str(err.status), "response": err.body()}

    @staticmethod
    def _check_syntax(payload: dict[str, Any]) -> None:
        """A BulkRequest that is not one (an operation that is no object, a member of the wrong type) is
        refused whole, before any operation runs."""
        schemas = payload.get("schemas")
        if schemas is not None and not (isinstance(schemas, list) and all(isinstance(s, str) for s in schemas)):
            raise ScimError(400, "schemas must be a list of schema URNs", "invalidSyntax")
        for index, operation in enumerate(payload["Operations"]):
            if not isinstance(operation, dict):
                raise ScimError(400, f"Operations[{index}] must be an object", "invalidSyntax")
            for name in ("method", "path"):
                if not isinstance(operation.get(name), str):
                    raise ScimError(400, f"Operations[{index}].{name} must be a string", "invalidSyntax")
            for name in ("bulkId", "version"):
                if operation.get(name) is not None and not isinstance(operation[name], str):
                    raise ScimError(400, f"Operations[{index}].{name} must be a string", "invalidSyntax")

    @staticmethod
    def _resolve(text: str, ids: Mapping[str, str]) -> str:
        def swap(match: re.Match[str]) -> str:
            if match.group(1) not in ids:
                raise ScimError(409, f"bulkId {match.group(1)!r} is not defined by an earlier operation",
                                "invalidValue")
            return ids[match.group(1)]
        return BULK_ID.sub(swap, text)
