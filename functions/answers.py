"""The answers and query strings of the HTTP routes as pydantic models, for the API description.

Handlers build their JSON as before; these models say what that JSON is (docs/openapi.json is
generated from them by functions/openapi.py) and the tests check every answer against them. Field
names are the JSON names. Where a member is open (a Graph object, a report of checks whose members
grow), the model says so with `extra="allow"` or `dict[str, Any]`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from shared.domain.audit import AuditRecord
from shared.domain.devices import DevicePasskey as PasskeyEnrollment
from shared.domain.devices import DeviceRow, PasskeyState
from shared.domain.directory import Enrollment, UserRow, UserState
from shared.domain.enrollment import GroupRecord
from shared.domain.scim import MAX_BULK_OPERATIONS
from shared.services.rotation import Status


class Answer(BaseModel):
    """An answer body: JSON names as written, unknown members allowed only where a model says so."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OpenAnswer(Answer):
    """An answer whose members may grow (reports): the listed ones are described, others allowed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# ---------------------------------------------------------------- query strings


def _query_bool(value: object) -> object:
    """`true` or `false` in any case, as the handlers read them; anything else is refused."""
    if isinstance(value, str):
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("must be true or false")
    return value


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
Day = Annotated[dt.date, Field(description="a UTC day, e.g. 2026-11-23; today when absent")]


class Query(BaseModel):
    """A query string: names as sent; unknown names (such as the function key's `code`) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AuditQuery(Query):
    """GET audit and audit/verify: one connection and an inclusive range of UTC days."""

    connection: Annotated[str, Field(min_length=1, description="the connection's name")]
    first: Annotated[Day | None, Field(alias="from")] = None
    to: Day | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None
    top: Annotated[int | None, Field(ge=1, le=1000, description="records per page (default 200)")] = None
    continuation_token: Annotated[str | None, Field(alias="continuationToken",
                                                    description="from the previous page's answer")] = None


class UsersQuery(Query):
    """GET connections/{c}/users: filters and paging."""

    state: UserState | None = None
    enrollment: Enrollment | None = None
    in_rotation_group: Annotated[QueryBool | None, Field(alias="inRotationGroup")] = None
    q: Annotated[str | None, Field(description="prefix of the user principal name (any case)")] = None
    top: Annotated[int | None, Field(ge=1, description="page size (default 100, at most 500)")] = None
    skip: Annotated[int | None, Field(ge=0, description="users to skip (nextSkip of the previous page)")] = None


class SyncQuery(Query):
    """POST connections/{c}/sync."""

    dry_run: Annotated[QueryBool | None, Field(alias="dryRun", description="plan without writing")] = None


class CompatibilityQuery(Query):
    """GET .../federation/compatibility: IdP values to check with the domain (all optional)."""

    metadata_url: Annotated[str | None, Field(alias="metadataUrl", pattern="^https://")] = None
    issuer_uri: Annotated[str | None, Field(alias="issuerUri")] = None
    passive_sign_in_uri: Annotated[str | None, Field(alias="passiveSignInUri")] = None
    signing_certificate: Annotated[str | None, Field(alias="signingCertificate")] = None
    next_signing_certificate: Annotated[str | None, Field(alias="nextSigningCertificate")] = None


# ---------------------------------------------------------------- answers


class Health(Answer):
    """GET health."""

    status: Literal["ok"]
    version: str


class AuditPage(Answer):
    """A page of audit records in time order; the token and link are there while more records follow."""

    value: list[AuditRecord]
    continuation_token: Annotated[str | None, Field(alias="continuationToken")] = None
    next_link: Annotated[str | None, Field(alias="@odata.nextLink")] = None


class BrokenLink(OpenAnswer):
    """The first record whose hash or sequence does not follow."""

    chain: str
    seq: int
    reason: str


class AuditFinding(Answer):
    """One thing verification found: edited, missing, reordered, truncated, chain missing, key unknown."""

    kind: str
    chain: str
    seq: int | None
    last_seq: Annotated[int | None, Field(alias="lastSeq")]
    detail: str


class UnanchoredWindow(Answer):
    """Records written since the last anchor: what an attacker with storage access could still cut."""

    seconds: int
    first: Annotated[str | None, Field(alias="from")]
    to: str | None


class AuditVerification(OpenAnswer):
    """The keyed chains of a day range checked against their anchors in Key Vault."""

    connection: str
    first: Annotated[str, Field(alias="from")]
    to: str
    chains: int
    checked: int
    intact: bool
    findings: list[AuditFinding]
    first_broken_link: Annotated[BrokenLink | None, Field(alias="firstBrokenLink")]
    last_anchor_at: Annotated[str | None, Field(alias="lastAnchorAt")]
    unanchored_window: Annotated[UnanchoredWindow, Field(alias="unanchoredWindow")]


class ConnectionReport(Answer):
    """The connection test: token, one read, permissions per feature with remediation."""

    connection: str
    tenant_id: str
    ok: bool
    token: dict[str, Any]
    read: dict[str, Any]
    features: list[dict[str, Any]]
    tenant_settings: dict[str, Any]
    problems: list[str]


class CertificateCheck(OpenAnswer):
    """One check of a certificate credential."""

    name: str
    status: str
    detail: str


class CertificateReport(Answer):
    """The checks of a PEM certificate and key (200 when none failed, else 422)."""

    ok: bool
    source: str
    subject: str | None = None
    thumbprint_sha1: Annotated[str | None, Field(alias="thumbprintSha1")] = None
    thumbprint_sha256: Annotated[str | None, Field(alias="thumbprintSha256")] = None
    x5t: str | None = None
    not_before: Annotated[str | None, Field(alias="notBefore")] = None
    not_after: Annotated[str | None, Field(alias="notAfter")] = None
    checks: list[CertificateCheck]


class Device(DeviceRow):
    """A registered device."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DevicePasskey(OpenAnswer):
    """A passkey the bridge registered for the device (`id` is its Entra method id)."""

    id: str
    user_id: Annotated[str, Field(alias="userId")]
    device_id: Annotated[str, Field(alias="deviceId")]
    credential_id: Annotated[str | None, Field(alias="credentialId")] = None
    aaguid: str | None = None
    display_name: Annotated[str | None, Field(alias="displayName")] = None
    registered_at: Annotated[str | None, Field(alias="registeredAt")] = None
    state: PasskeyState | None = None
    duplicate: bool | None = None


class DeviceWithPasskeys(Device):
    """A device with its state, its passkey enrollment under the policy, and the passkeys the bridge registered."""

    passkey: PasskeyEnrollment
    passkeys: list[DevicePasskey]


class Queued(Answer):
    """Accepted: the work is queued."""

    status: Literal["queued"]


class RemovalQueued(Queued):
    """The device removal's operation (also in the Location header)."""

    operation_id: Annotated[str, Field(alias="operationId")]


class Operation(OpenAnswer):
    """Progress of a long operation."""

    id: str
    kind: str | None = None
    target: str | None = None
    status: str
    total: int | None = None
    done: int | None = None


class PasskeyOptions(Answer):
    """WebAuthn creation options (PublicKeyCredentialCreationOptions as JSON) and the ceremony to answer."""

    ceremony_id: Annotated[str, Field(alias="ceremonyId")]
    expires_at: Annotated[str, Field(alias="expiresAt")]
    policy: str
    public_key: Annotated[dict[str, Any], Field(alias="publicKey")]


class PasskeyRegistered(Answer):
    """The passkey as Entra registered it."""

    id: str
    device_id: Annotated[str, Field(alias="deviceId")]
    aaguid: str
    display_name: Annotated[str, Field(alias="displayName")]
    credential_id: Annotated[str, Field(alias="credentialId")]
    attestation: str
    attestation_trust: Annotated[Literal["trusted", "not-checked"], Field(alias="attestationTrust")]
    model: str | None
    created_date_time: Annotated[str | None, Field(alias="createdDateTime")]
    passkey: Literal["registered"]


class FederationCheck(OpenAnswer):
    """One compatibility check, with what to do when it fails."""

    name: str
    status: str
    detail: str
    remediation: str = ""


class Compatibility(Answer):
    """The checks for federating a domain; `proposed` is the configuration the IdP values would give."""

    domain: str
    compatible: bool
    checks: list[FederationCheck]
    proposed: dict[str, Any] | None = None


class Federated(Answer):
    """The domain's federation as read back from Graph, with the checks that did not pass."""

    domain: str
    authentication_type: Annotated[str | None, Field(alias="authenticationType")]
    federation_configuration: Annotated[dict[str, Any] | None, Field(alias="federationConfiguration")]
    checks: list[FederationCheck]
    note: str


class Defederated(Answer):
    """The domain after its federation was removed."""

    domain: str
    authentication_type: Annotated[str | None, Field(alias="authenticationType")]
    note: str


class RotationQueued(Queued):
    """A manual rotation was queued."""

    rotation_id: Annotated[str, Field(alias="rotationId")]


class CandidatePassword(Answer):
    """A password Entra might hold instead of the current one (a rotation whose outcome is unknown)."""

    version: str
    password: str


class DeliveredPassword(Answer):
    """The device user's current password (Cache-Control: no-store)."""

    password: str | None
    version: str | None
    rotated_at: Annotated[str | None, Field(alias="rotatedAt")]
    possibly_current: Annotated[list[CandidatePassword], Field(alias="possiblyCurrent")]


class Throttle(OpenAnswer):
    """Graph write throttling of the connection's tenant."""

    writes_paused_until: Annotated[str | None, Field(alias="writesPausedUntil")]


class StatusProblem(Answer):
    """Something an operator should act on: where, what, and the fix."""

    area: str
    detail: str
    fix: str


class SyncRun(OpenAnswer):
    """A kept sync run: outcome and counts (camelCase); `details` is where its planned ids are."""

    run_id: Annotated[str, Field(alias="runId")]
    outcome: str
    planned: dict[str, int] = {}
    details: str | None = None


class SyncRunDetails(SyncRun):
    """A kept run with the ids it planned (the first 100 of each kind)."""

    planned_ids: Annotated[dict[str, list[str]], Field(alias="plannedIds")]


class PasskeyEnrollmentStatus(Answer):
    """Devices by passkey enrollment under the connection's policy, naming those pending their passkey."""

    policy: str
    withhold_passwords_until_passkey: Annotated[bool, Field(alias="withholdPasswordsUntilPasskey")]
    devices: dict[str, int]
    pending_passkey: Annotated[list[dict[str, Any]], Field(alias="pendingPasskey")]


class ExportProblem(Answer):
    """A SCIM resource the export could not fully apply to Entra, and why."""

    resource_type: Annotated[Literal["Users", "Groups"], Field(alias="resourceType")]
    id: str
    problem: str


class ExportStatus(Answer):
    """The export of a connection whose export is on (docs/export.md): resources linked in Entra, created by
    the bridge, changes still pending, problems."""

    users: int
    groups: int
    created: int
    pending: int
    problems: list[ExportProblem]


class ConnectionStatus(Answer):
    """What an operator checks first: counts, the last run and dry run, problems with their fixes."""

    connection: str
    tenant_id: Annotated[str, Field(alias="tenantId")]
    dry_run: Annotated[bool, Field(alias="dryRun")]
    export: ExportStatus | None
    features: dict[str, bool]
    users: dict[str, int]
    last_sync: Annotated[SyncRun | None, Field(alias="lastSync")]
    sync_running: Annotated[dict[str, str] | None, Field(alias="syncRunning")]
    last_dry_run: Annotated[SyncRun | None, Field(alias="lastDryRun")]
    rotation: dict[str, int] | None
    federation: list[dict[str, Any]] | None
    passkeys: PasskeyEnrollmentStatus | None
    throttle: Throttle
    problems: list[StatusProblem]


class SyncQueued(Queued):
    """A sync run was queued."""

    run_id: Annotated[str, Field(alias="runId")]
    dry_run: Annotated[bool, Field(alias="dryRun")]


class UninstalledGroup(GroupRecord):
    """A recorded enrollment-state group; `configuredName` when the setting names it otherwise now."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    configured_name: Annotated[str | None, Field(alias="configuredName")] = None
    reason: str | None = None


class GroupsUninstalled(Answer):
    """The owned groups deleted in Entra (or that would be, in a dry run) and the groups left, with why."""

    dry_run: Annotated[bool, Field(alias="dryRun")]
    deleted: list[UninstalledGroup]
    left: list[UninstalledGroup]
    note: str | None = None


class UserRotation(Answer):
    """A user's rotation status (never a password)."""

    status: Status | None = None
    reason: str | None = None
    last_rotated_at: dt.datetime | None = None
    last_rotation_id: str | None = None
    last_version: str | None = None
    attempts: int = 0


class User(UserRow):
    """An imported user."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class UserWithRotation(User):
    """An imported user with its rotation status."""

    rotation: UserRotation


class UserPage(Answer):
    """A page of imported users; `nextSkip` is there while more follow."""

    value: list[User]
    count: int
    next_skip: Annotated[int | None, Field(alias="nextSkip")] = None


# ---------------------------------------------------------------- Graph change notifications


class GraphNotificationQuery(Query):
    """Graph's endpoint validation: a POST with this token, answered with it as text/plain."""

    validation_token: Annotated[str | None, Field(alias="validationToken", min_length=1, max_length=4096,
                                                  description="sent by Graph when it validates the URL")] = None


class Subscription(OpenAnswer):
    """One Graph subscription the connection keeps (id, resource, expiry, and a problem if any)."""

    subscription_id: Annotated[str | None, Field(alias="subscriptionId")] = None
    resource: str | None = None
    change_type: Annotated[str | None, Field(alias="changeType")] = None
    expires: str | None = None


class NotificationStatus(Answer):
    """The connection's Graph subscriptions and the run a notification queued, if any."""

    enabled: bool
    subscriptions: dict[str, Subscription]
    queued_at: Annotated[str | None, Field(alias="queuedAt")]


class NotificationsRemoved(Answer):
    """The subscriptions deleted in Graph, and what happens next."""

    removed: list[Any]
    note: list[str] | None = None


# ---------------------------------------------------------------- SCIM 2.0 (RFC 7643, RFC 7644; docs/export.md)


class ScimQuery(Query):
    """GET scim/v2/{c}/Users and Groups: RFC 7644 section 3.4.2."""

    filter: Annotated[str | None, Field(description="a SCIM filter, e.g. userName eq \"a@example.com\"")] = None
    start_index: Annotated[int | None, Field(alias="startIndex", description="1-based; below 1 is read as 1")] = None
    count: Annotated[int | None, Field(description="resources per page; negative is read as 0, at most 200")] = None


class ScimErrorBody(Answer):
    """A SCIM error (RFC 7644 section 3.12): `scimType` and `detail` name the attribute, filter or path at fault."""

    schemas: list[Literal["urn:ietf:params:scim:api:messages:2.0:Error"]]
    status: Annotated[str, Field(pattern="^[45][0-9]{2}$")]
    scim_type: Annotated[str | None, Field(alias="scimType")] = None
    detail: str | None = None


class ScimMeta(OpenAnswer):
    """A resource's `meta` (RFC 7643 section 3.1)."""

    resource_type: Annotated[str, Field(alias="resourceType")]
    location: str | None = None
    created: str | None = None
    last_modified: Annotated[str | None, Field(alias="lastModified")] = None
    version: str | None = None


class ScimResource(OpenAnswer):
    """A SCIM resource: the attributes of its schemas and extensions (open), with `id` and `meta`."""

    schemas: list[str]
    id: str
    external_id: Annotated[str | None, Field(alias="externalId")] = None
    meta: ScimMeta


class ScimUser(ScimResource):
    """A SCIM User (core schema and the enterprise extension)."""

    user_name: Annotated[str, Field(alias="userName")]


class ScimGroup(ScimResource):
    """A SCIM Group."""

    display_name: Annotated[str, Field(alias="displayName")]


class ScimList(Answer):
    """A SCIM ListResponse (RFC 7644 section 3.4.2)."""

    schemas: list[Literal["urn:ietf:params:scim:api:messages:2.0:ListResponse"]]
    total_results: Annotated[int, Field(alias="totalResults", ge=0)]
    start_index: Annotated[int, Field(alias="startIndex", ge=1)]
    items_per_page: Annotated[int, Field(alias="itemsPerPage", ge=0)]


class ScimDiscoveryList(ScimList):
    """The service's ResourceTypes or Schemas (RFC 7643 sections 6 and 7), all in one ListResponse."""

    resources: Annotated[list[dict[str, Any]], Field(alias="Resources")]


class ScimUserList(ScimList):
    """The Users matching a query, one page."""

    resources: Annotated[list[ScimUser], Field(alias="Resources")]


class ScimGroupList(ScimList):
    """The Groups matching a query, one page."""

    resources: Annotated[list[ScimGroup], Field(alias="Resources")]


class ScimServiceProviderConfig(OpenAnswer):
    """What the SCIM service supports (RFC 7643 section 5)."""

    schemas: list[str]
    patch: dict[str, Any]
    bulk: dict[str, Any]
    filter: dict[str, Any]
    change_password: Annotated[dict[str, Any], Field(alias="changePassword")]
    sort: dict[str, Any]
    etag: dict[str, Any]
    authentication_schemes: Annotated[list[dict[str, Any]], Field(alias="authenticationSchemes")]
    meta: ScimMeta


class ScimBulkResult(Answer):
    """One operation of a BulkResponse (RFC 7644 section 3.7): its status, and the error when it failed."""

    method: str
    bulk_id: Annotated[str | None, Field(alias="bulkId")] = None
    status: Annotated[str, Field(pattern="^[1-5][0-9]{2}$")]
    version: str | None = None
    location: str | None = None
    response: ScimErrorBody | None = None


class ScimBulkResponse(Answer):
    """A SCIM BulkResponse: the operations run, in order, until `failOnErrors` of them failed."""

    schemas: list[Literal["urn:ietf:params:scim:api:messages:2.0:BulkResponse"]]
    operations: Annotated[list[ScimBulkResult], Field(alias="Operations")]


class ScimBody(BaseModel):
    """A SCIM request body: members beyond those listed (other attributes, extension schemas) are allowed here
    and checked by the service against the resource's schemas."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ScimUserBody(ScimBody):
    """A User to create or the whole of one to replace (`id` and `meta` are ignored)."""

    schemas: list[str] | None = None
    user_name: Annotated[str, Field(alias="userName")]


class ScimGroupBody(ScimBody):
    """A Group to create or the whole of one to replace (`id` and `meta` are ignored), with its `members` and the
    `description` of the bridge's extension `urn:entra-bridge:params:scim:schemas:extension:2.0:Group`."""

    schemas: list[str] | None = None
    display_name: Annotated[str, Field(alias="displayName")]


class ScimPatchOperation(ScimBody):
    """One PATCH operation: `op` add, replace or remove; `path` an attribute path (optional for add and
    replace); `value` what to add or replace."""

    op: str
    path: str | None = None
    value: Any = None


class ScimPatchOp(ScimBody):
    """A PatchOp (RFC 7644 section 3.5.2)."""

    schemas: list[str] | None = None
    operations: Annotated[list[ScimPatchOperation], Field(alias="Operations", min_length=1)]


class ScimBulkOperation(ScimBody):
    """One Bulk operation: `method` POST, PUT, PATCH or DELETE; `path` /Users, /Groups or /<type>/<id>;
    `bulkId` (required for POST) that later operations reference as `bulkId:<id>`; `version` as If-Match."""

    method: str
    path: str
    bulk_id: Annotated[str | None, Field(alias="bulkId")] = None
    version: str | None = None
    data: Any = None


class ScimBulkRequest(ScimBody):
    """A BulkRequest (RFC 7644 section 3.7)."""

    schemas: list[str] | None = None
    fail_on_errors: Annotated[int | None, Field(alias="failOnErrors", ge=1)] = None
    operations: Annotated[list[ScimBulkOperation], Field(alias="Operations", max_length=MAX_BULK_OPERATIONS)]
