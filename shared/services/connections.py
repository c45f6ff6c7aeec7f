"""Test a connection (a token, one read, the per-feature permission report with remediation) and
validate a connection's certificate credential."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.config import CertificateAuth, Connection
from shared.domain import certificates, permissions
from shared.errors import BridgeError, Configuration, InvalidInput, NotFound
from shared.services.ports import Clock, JsonObject, SecretStore, TenantDirectory

#: Obtains a token with a PEM certificate and key for a client id; returns the token's claims (never the token).
CertificateTokenCheck = Callable[[Connection, str, str], Awaitable[dict[str, Any]]]


@dataclass
class ConnectionReport:
    """The outcome of a connection test."""

    connection: str
    tenant_id: str
    ok: bool = False
    token: JsonObject = field(default_factory=dict)
    read: JsonObject = field(default_factory=dict)
    features: list[JsonObject] = field(default_factory=list)
    tenant_settings: JsonObject = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> JsonObject:
        """The response body."""
        return asdict(self)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class ConnectionTester:
    """Runs the connection test with the tenant's directory and the claims of the connection's token."""

    def __init__(self, tenant: TenantDirectory, claims: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._tenant = tenant
        self._claims = claims

    async def test(self, conn: Connection) -> ConnectionReport:
        """Token, one read, permissions and roles per enabled feature, tenant settings."""
        result = ConnectionReport(connection=conn.name, tenant_id=conn.tenant_id)
        try:
            claims = await self._claims()
        except BridgeError as err:
            result.problems.append(f"no token: {err.detail}")
            return result
        except Exception as exc:  # any credential failure is the finding itself
            result.problems.append(f"no token: {type(exc).__name__}: {_first_line(exc)} - check the connection's "
                                   "auth settings (CONNECTIONS) and its secret in Key Vault")
            return result
        granted = sorted(str(r) for r in claims.get("roles", []) or [])
        result.token = {"obtained": True, "tenant": claims.get("tid"), "appId": claims.get("appid") or
                        claims.get("azp"), "servicePrincipal": claims.get("oid"), "roles": granted}
        if claims.get("tid") and str(claims.get("tid")).lower() != conn.tenant_id.lower():
            result.problems.append(f"the token is for tenant {claims.get('tid')}, not {conn.tenant_id} (tenantId)")
        started = time.monotonic()
        try:
            organization = await self._tenant.organization()
            result.read = {"ok": True, "organization": organization.display_name,
                           "milliseconds": round((time.monotonic() - started) * 1000, 1)}
        except BridgeError as err:
            result.read = {"ok": False, "error": err.detail}
            result.problems.append(f"one read failed: {err.detail}")
        features = conn.features
        enabled = permissions.enabled_features(features.sync.enabled, features.rotation.enabled,
                                               features.passkeys.enabled, features.federation.enabled,
                                               features.export.enabled)
        needed_roles = {role for name in enabled for role in permissions.FEATURE_NEEDS[name].roles}
        roles = await self._roles(str(claims.get("oid") or ""), needed_roles, granted, result)
        for item in permissions.report(enabled, granted, roles):
            result.features.append({**asdict(item), "ok": item.ok})
            if not item.ok:
                result.problems.append(f"{item.feature}: missing {', '.join(item.missing + item.roles_missing)}")
        if features.passkeys.enabled:
            result.tenant_settings["passkeys"] = await self._passkey_policy(result)
        result.ok = not result.problems
        return result

    async def _roles(self, principal: str, needed: set[str], granted: list[str],
                     result: ConnectionReport) -> list[str]:
        """The directory roles (of those that matter) the app's service principal holds.

        Read through the activated directory roles and their members, which needs RoleManagement.Read.Directory
        (https://learn.microsoft.com/graph/api/directoryrole-list-members); the features that need a role
        ask for that permission anyway, so the report itself asks for nothing more.
        """
        result.token["directoryRoles"] = []
        if not principal or not needed:
            return []
        if permissions.ROLE_READ_PERMISSION not in granted:
            result.problems.append(f"cannot check the directory roles {', '.join(sorted(needed))}: the app lacks "
                                   f"{permissions.ROLE_READ_PERMISSION}")
            return []
        interesting = permissions.roles_that_satisfy(needed)
        held: list[str] = []
        try:
            for role in await self._tenant.directory_roles():
                if role.display_name in interesting and principal in await self._tenant.role_member_ids(role.id):
                    held.append(role.display_name)
        except BridgeError as err:
            result.problems.append(f"cannot read the app's directory roles: {err.detail}")
        result.token["directoryRoles"] = sorted(held)
        return held

    async def _passkey_policy(self, result: ConnectionReport) -> JsonObject:
        # https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get
        try:
            policy = await self._tenant.passkey_policy()
        except BridgeError as err:
            result.problems.append(f"cannot read the FIDO2 policy: {err.detail}")
            return {"readable": False}
        restrictions = policy.get("keyRestrictions") or {}
        settings = {"state": policy.get("state"), "selfServiceRegistrationAllowed":
                    policy.get("isSelfServiceRegistrationAllowed"), "attestationEnforced":
                    policy.get("isAttestationEnforced"), "keyRestrictions": {
                        "enforced": restrictions.get("isEnforced"), "type": restrictions.get("enforcementType"),
                        "aaGuids": restrictions.get("aaGuids", [])}}
        where = "Entra admin center > Protection > Authentication methods > Passkey (FIDO2)"
        if policy.get("state") != "enabled":
            result.problems.append(f"the passkey (FIDO2) method is not enabled: {where} > Enable and target users")
        if policy.get("isSelfServiceRegistrationAllowed") is False:
            # Provisioning passkeys through Graph needs it on (FACTS: known issues of the provisioning API).
            result.problems.append(f"passkey self-service setup is off, so Graph refuses to register passkeys: "
                                   f"{where} > Configure > Allow self-service set up: Yes")
        if restrictions.get("isEnforced"):
            settings["note"] = (f"key restrictions are enforced ({restrictions.get('enforcementType')}): the devices' "
                                "AAGUID must be allowed, or registration fails")
        return settings


@dataclass(frozen=True)
class CertificateRequest:
    """What to validate: a PEM from the request (or None for the configured secret), and whether to sign in."""

    pem: str | None = None
    client_id: str | None = None
    obtain_token: bool = False


class CertificateValidator:
    """Checks a connection's certificate credential: PEM, key match, validity, key size, thumbprints, token."""

    def __init__(self, secrets: Callable[[], SecretStore], clock: Clock,
                 token_check: CertificateTokenCheck | None = None) -> None:
        self._secrets = secrets
        self._clock = clock
        self._token_check = token_check

    async def validate(self, conn: Connection, ask: CertificateRequest) -> tuple[bool, JsonObject]:
        """Run the checks; malformed input raises InvalidInput, failed checks give ok=False."""
        auth = conn.auth if isinstance(conn.auth, CertificateAuth) else None
        pem = ask.pem
        source = "request body"
        if pem is None:
            if auth is None:
                raise InvalidInput(f"connection {conn.name!r} does not use certificate auth: send "
                                   '{"pem": "-----BEGIN CERTIFICATE-----..."} to check a certificate', field="pem")
            source = f"Key Vault secret {auth.certificate_secret_name!r}"
            try:
                pem = (await self._secrets().get(auth.certificate_secret_name)).value or ""
            except NotFound:
                raise Configuration(f"connection {conn.name!r}: certificate secret {auth.certificate_secret_name!r} "
                                    "(auth.certificateSecretName) is not in the vault", setting="CONNECTIONS") from None
        report = certificates.validate(pem, now=self._clock.now())
        unreadable = [c for c in report.checks if c.name in ("certificate", "private key") and c.status == "fail"]
        if unreadable:
            raise InvalidInput(f"{source}: {unreadable[0].detail}", field="pem")
        checks = [{"name": c.name, "status": c.status, "detail": c.detail} for c in report.checks]
        client_id = ask.client_id or (auth.client_id if auth else None)
        if ask.obtain_token:
            checks.append(await self._token(conn, pem, client_id, report.ok))
        ok = all(c["status"] != "fail" for c in checks)
        return ok, {"ok": ok, "source": source, "subject": report.subject,
                    "thumbprintSha1": report.thumbprint_sha1, "thumbprintSha256": report.thumbprint_sha256,
                    "x5t": report.x5t, "notBefore": report.not_before, "notAfter": report.not_after,
                    "checks": checks}

    async def _token(self, conn: Connection, pem: str, client_id: str | None, usable: bool) -> JsonObject:
        name = "token"
        if not client_id:
            raise InvalidInput("obtainToken needs the app's client id: send clientId or configure certificate auth",
                               field="clientId")
        if not usable:
            return {"name": name, "status": "fail", "detail": "not tried: fix the failed checks first"}
        if self._token_check is None:
            return {"name": name, "status": "warn", "detail": "not tried: no token endpoint configured"}
        try:
            claims = await self._token_check(conn, client_id, pem)
        except BridgeError as err:
            return {"name": name, "status": "fail", "detail": err.detail}
        except Exception as exc:  # the identity platform's refusal is the finding itself
            return {"name": name, "status": "fail", "detail": f"sign-in with the certificate failed: "
                                                              f"{type(exc).__name__}: {_first_line(exc)} - upload the "
                                                              "certificate to the app registration (Certificates & "
                                                              "secrets) and check the client id"}
        return {"name": name, "status": "pass", "detail": f"signed in as app {claims.get('appid') or client_id} in "
                                                          f"tenant {claims.get('tid')}; Graph permissions granted: "
                                                          f"{', '.join(sorted(claims.get('roles') or [])) or 'none'}"}
