"""The bridge's error taxonomy (docs/architecture.md, Errors).

Every adapter translates its SDK's errors into these classes in one place; HTTP status codes and
queue retry decisions follow from the class, never from matching message text. Messages are written
for operators and must never contain a secret (invariant 2): pass identifiers, never values.
"""

from __future__ import annotations

from typing import ClassVar

PROBLEM_TYPE_PREFIX = "urn:entra-bridge:problem:"


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    slug: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    #: Whether a queue handler should let the message be delivered again.
    retryable: ClassVar[bool] = False

    def __init__(self, detail: str, *, request_id: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        #: Graph's or Key Vault's request id when the error came from a call to them.
        self.request_id = request_id

    @property
    def type_uri(self) -> str:
        """Stable RFC 9457 `type` of this error."""
        return PROBLEM_TYPE_PREFIX + self.slug

    def extensions(self) -> dict[str, object]:
        """Extra problem+json members; subclasses add their own."""
        return {"requestId": self.request_id} if self.request_id else {}

    def problem(self) -> dict[str, object]:
        """The RFC 9457 members of this error (type, title, status, detail and extensions), as stored in status."""
        return {"type": self.type_uri, "title": self.title, "status": self.status, "detail": self.detail,
                **self.extensions()}


class Transient(BridgeError):
    """A failure that may succeed if tried again after a back-off (5xx, timeouts, dropped links)."""

    slug = "transient"
    status = 503
    title = "Temporarily unavailable"
    retryable = True


class Throttled(Transient):
    """The service asked us to wait; every instance honours `retry_after` for that tenant."""

    slug = "throttled"
    status = 503
    title = "Throttled by a downstream service"

    def __init__(self, detail: str, *, retry_after: float, scope: str = "", request_id: str | None = None):
        super().__init__(detail, request_id=request_id)
        self.retry_after = max(0.0, retry_after)
        self.scope = scope

    def extensions(self) -> dict[str, object]:
        return {**super().extensions(), "retryAfterSeconds": round(self.retry_after, 3)}


class Ambiguous(Transient):
    """A write whose outcome is unknown: it may or may not have been applied (response lost)."""

    slug = "ambiguous"
    title = "Outcome of a write is unknown"


class NotFound(BridgeError):
    """The target does not exist."""

    slug = "not-found"
    status = 404
    title = "Not found"


class Gone(NotFound):
    """A resource that existed is gone for good; for a delta token it means: read everything again."""

    slug = "gone"
    status = 410
    title = "Gone"


class Conflict(BridgeError):
    """The target's state forbids the operation, or a concurrent writer won (ETag mismatch)."""

    slug = "conflict"
    status = 409
    title = "Conflict"


class PasskeySkipped(BridgeError):
    """Policy `optional`: the passkey was refused, and the device is enrolled without one ("passkey skipped").

    A provider may carry on with the enrollment; `cause` is the refusal's own problem type.
    """

    slug = "passkey-skipped"
    status = 422
    title = "Passkey refused; enrollment finished without it"

    def __init__(self, detail: str, *, cause: BridgeError, device_id: str, passkey: str = "skipped") -> None:
        super().__init__(detail, request_id=cause.request_id)
        self.cause = cause
        self.device_id = device_id
        #: The device's passkey enrollment now: "skipped", or "registered" when an earlier passkey is live.
        self.passkey = passkey

    def extensions(self) -> dict[str, object]:
        ext: dict[str, object] = {**super().extensions(), "skippable": True, "deviceId": self.device_id,
                                  "passkey": self.passkey, "cause": self.cause.type_uri}
        field = getattr(self.cause, "field", None)
        if field:
            ext["field"] = field
        return ext


class PasskeyPending(BridgeError):
    """Policy `required`: the device's passkey is not registered in Entra yet, so it is refused what a
    setting withholds until then; `setting` names that setting."""

    slug = "passkey-pending"
    status = 403
    title = "Device is pending its passkey"

    def __init__(self, detail: str, *, setting: str, device_id: str) -> None:
        super().__init__(detail)
        self.setting = setting
        self.device_id = device_id

    def extensions(self) -> dict[str, object]:
        return {"setting": self.setting, "deviceId": self.device_id, "passkey": "pending"}


class InvalidInput(BridgeError):
    """The caller sent something we cannot accept; `field` names the offending part."""

    slug = "invalid-input"
    status = 400
    title = "Invalid input"

    def __init__(self, detail: str, *, field: str | None = None, errors: list[dict[str, object]] | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(detail, request_id=request_id)
        self.field = field
        self.errors = errors or []

    def extensions(self) -> dict[str, object]:
        ext = super().extensions()
        if self.field:
            ext["field"] = self.field
        if self.errors:
            ext["errors"] = self.errors
        return ext


class PayloadTooLarge(InvalidInput):
    """A request body over the route's size limit."""

    slug = "payload-too-large"
    status = 413
    title = "Payload too large"


class Unauthenticated(BridgeError):
    """The caller did not prove who it is (no function key, bad token, bad device signature)."""

    slug = "unauthenticated"
    status = 401
    title = "Authentication required"


class Forbidden(BridgeError):
    """The caller is known but lacks the app role the route needs."""

    slug = "forbidden"
    status = 403
    title = "Forbidden"

    def __init__(self, detail: str, *, required_roles: list[str] | None = None) -> None:
        super().__init__(detail)
        self.required_roles = required_roles or []

    def extensions(self) -> dict[str, object]:
        return {**super().extensions(), "requiredRoles": self.required_roles}


class PermissionDenied(BridgeError):
    """The bridge's own identity lacks a Graph permission, directory role or vault role."""

    slug = "permission-denied"
    status = 403
    title = "The bridge lacks a permission"

    def __init__(self, detail: str, *, permission: str | None = None, role: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(detail, request_id=request_id)
        self.permission = permission
        self.role = role

    def extensions(self) -> dict[str, object]:
        ext = super().extensions()
        if self.permission:
            ext["missingPermission"] = self.permission
        if self.role:
            ext["missingRole"] = self.role
        return ext


class Configuration(BridgeError):
    """The operator's configuration is wrong; `setting` names what to fix."""

    slug = "configuration"
    status = 500
    title = "Configuration error"

    def __init__(self, detail: str, *, setting: str | None = None) -> None:
        super().__init__(detail)
        self.setting = setting

    def extensions(self) -> dict[str, object]:
        return {"setting": self.setting} if self.setting else {}


class Stop(BridgeError):
    """A run must end now without further writes (incomplete data, removal threshold reached)."""

    slug = "stop"
    status = 409
    title = "Run stopped"


def root_cause(err: BridgeError) -> BridgeError:
    """The first taxonomy error of a chain (`raise Stop(...) from err`): it decides retry and remediation."""
    cause = err
    while isinstance(cause.__cause__, BridgeError):
        cause = cause.__cause__
    return cause


def translated(exc: BaseException) -> BridgeError:
    """Any exception as the taxonomy: a BridgeError as it is, a lost connection as Transient, anything else as
    an internal error whose text is not repeated (it may carry what must not leave the logs)."""
    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, TimeoutError | ConnectionError):
        return Transient(f"a connection failed or timed out ({type(exc).__name__})")
    return BridgeError(f"unexpected {type(exc).__name__}; the correlation id identifies it in the logs")


ALL_ERRORS: tuple[type[BridgeError], ...] = (
    BridgeError, Transient, Throttled, Ambiguous, NotFound, Conflict, InvalidInput, PayloadTooLarge,
    Unauthenticated, Forbidden, PermissionDenied, Configuration, Stop,
    PasskeySkipped, PasskeyPending,
)


def worth_retrying(err: BridgeError) -> bool:
    """Whether delivering a queue message again may succeed: a transient failure, or a lease another run holds."""
    cause = root_cause(err)
    return cause.retryable or isinstance(cause, Conflict)
