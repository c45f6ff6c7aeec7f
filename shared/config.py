"""Typed settings and connection documents, validated once.

Settings come from app settings (environment variables); connections come from the `CONNECTIONS`
setting (a JSON list) or from the file named by `CONNECTIONS_FILE`. Every error names the setting
and, for connection documents, the field, so the operator knows exactly what to fix. An app setting
that still reads `@Microsoft.KeyVault(...)` was not resolved by the platform and is rejected.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.mds import FIDO_MDS_ROOT_PEM, FIDO_MDS_URL, MetadataRejected, root_certificate
from shared.errors import Configuration

SLUG = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Key Vault secret names: 1-127 characters of [0-9a-zA-Z-].
SECRET_NAME = r"^[0-9a-zA-Z-]{1,127}$"  # noqa: S105 - a name pattern, not a secret
KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\(", re.IGNORECASE)


class Cloud(StrEnum):
    """A national cloud, or the local stand-ins."""

    GLOBAL = "global"
    USGOV = "usgov"
    CHINA = "china"
    LOCAL = "local"


class CloudProfile(BaseModel):
    """Where a cloud's login, Graph, vault scopes and storage live (docs/architecture.md, "Clouds")."""

    model_config = ConfigDict(frozen=True)

    name: Cloud
    authority: str
    graph: str
    graph_scope: str
    vault_scope: str
    #: DNS suffix of storage endpoints (`<account>.table.<suffix>`); None where storage is Azurite's.
    storage_suffix: str | None = None

    @property
    def graph_v1(self) -> str:
        """Base URL of Graph v1.0, without a trailing slash (msgraph-sdk wants it so)."""
        return f"{self.graph}/v1.0"

    @property
    def graph_beta(self) -> str:
        """Base URL of Graph beta."""
        return f"{self.graph}/beta"


def cloud_profile(cloud: Cloud, *, local_entra_url: str = "https://127.0.0.1:8443") -> CloudProfile:
    """The endpoints of a cloud; the local profile points at the Entra simulator."""
    if cloud is Cloud.GLOBAL:
        return CloudProfile(name=cloud, authority="https://login.microsoftonline.com",
                            graph="https://graph.microsoft.com",
                            graph_scope="https://graph.microsoft.com/.default",
                            vault_scope="https://vault.azure.net/.default", storage_suffix="core.windows.net")
    if cloud is Cloud.USGOV:
        return CloudProfile(name=cloud, authority="https://login.microsoftonline.us",
                            graph="https://graph.microsoft.us",
                            graph_scope="https://graph.microsoft.us/.default",
                            vault_scope="https://vault.usgovcloudapi.net/.default",
                            storage_suffix="core.usgovcloudapi.net")
    if cloud is Cloud.CHINA:
        return CloudProfile(name=cloud, authority="https://login.chinacloudapi.cn",
                            graph="https://microsoftgraph.chinacloudapi.cn",
                            graph_scope="https://microsoftgraph.chinacloudapi.cn/.default",
                            vault_scope="https://vault.azure.cn/.default", storage_suffix="core.chinacloudapi.cn")
    base = local_entra_url.rstrip("/")
    # The simulator issues tokens for the public resource names, as the real service would.
    return CloudProfile(name=cloud, authority=base, graph=base,
                        graph_scope="https://graph.microsoft.com/.default",
                        vault_scope="https://vault.azure.net/.default")


# --------------------------------------------------------------------------------------------
# Connection documents
# --------------------------------------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ManagedIdentityAuth(_Doc):
    """The function app's managed identity; `clientId` selects a user-assigned one."""

    kind: Literal["managedIdentity"] = "managedIdentity"
    client_id: Annotated[str | None, Field(alias="clientId", pattern=GUID)] = None


class ClientSecretAuth(_Doc):
    """An app registration with a client secret kept in Key Vault under `secretName`."""

    kind: Literal["clientSecret"] = "clientSecret"
    client_id: Annotated[str, Field(alias="clientId", pattern=GUID)]
    secret_name: Annotated[str, Field(alias="secretName", pattern=SECRET_NAME)]


class CertificateAuth(_Doc):
    """An app registration with a certificate (PEM of key and certificate) kept in Key Vault."""

    kind: Literal["certificate"] = "certificate"
    client_id: Annotated[str, Field(alias="clientId", pattern=GUID)]
    certificate_secret_name: Annotated[str, Field(alias="certificateSecretName", pattern=SECRET_NAME)]
    send_certificate_chain: Annotated[bool, Field(alias="sendCertificateChain")] = False


ConnectionAuth = Annotated[ManagedIdentityAuth | ClientSecretAuth | CertificateAuth, Field(discriminator="kind")]


class RemovalBehaviour(StrEnum):
    """What happens to a bridge user who leaves every sync group."""

    KEEP = "keep"
    DEACTIVATE = "deactivate"
    DELETE = "delete"


class RemovalThreshold(_Doc):
    """A sync run that would remove more than this stops and raises an alert instead."""

    percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    absolute: Annotated[int, Field(ge=0)] = 50


class SyncFeature(_Doc):
    """Import users from sync groups (ids or display names), nested to any depth."""

    enabled: bool = False
    groups: list[str] = Field(default_factory=list)
    removal: RemovalBehaviour = RemovalBehaviour.DEACTIVATE
    removal_threshold: Annotated[RemovalThreshold, Field(alias="removalThreshold")] = RemovalThreshold()

    @model_validator(mode="after")
    def _groups_when_enabled(self) -> SyncFeature:
        if self.enabled and not self.groups:
            raise ValueError("sync is enabled but 'groups' is empty: name at least one sync group")
        return self


class RotationFeature(_Doc):
    """Rotate the passwords of a rotation group's members every `intervalDays`."""

    enabled: bool = False
    group: str | None = None
    interval_days: Annotated[int, Field(alias="intervalDays", ge=1, le=3650)] = 30
    password_length: Annotated[int, Field(alias="passwordLength", ge=16, le=256)] = 24
    min_interval_minutes: Annotated[int, Field(alias="minIntervalMinutes", ge=0, le=1440)] = 5
    keep_superseded: Annotated[int, Field(alias="keepSuperseded", ge=0, le=50)] = 2
    #: Synced (hybrid) users are refused unless the tenant has a documented writeback path.
    writeback_path: Annotated[bool, Field(alias="writebackPath")] = False
    excluded_users: Annotated[list[str], Field(alias="excludedUsers")] = Field(default_factory=list)

    @model_validator(mode="after")
    def _group_when_enabled(self) -> RotationFeature:
        if self.enabled and not self.group:
            raise ValueError("rotation is enabled but 'group' is not set: name the rotation group")
        return self


class PasskeyPolicy(StrEnum):
    """Whether users of this connection may, or must, enroll a device passkey."""

    DISABLED = "disabled"
    OPTIONAL = "optional"
    REQUIRED = "required"


class EnrollmentGroupNames(_Doc):
    """Display names of the enrollment-state groups the bridge keeps in Entra."""

    not_enrolled: Annotated[str, Field(alias="notEnrolled")] = "Bridge - Not yet enrolled"
    paired_with_provider: Annotated[str, Field(alias="pairedWithProvider")] = "Bridge - Paired with provider"
    paired_with_entra: Annotated[str, Field(alias="pairedWithEntra")] = "Bridge - Paired with Entra"


class PasskeysFeature(_Doc):
    """Register device-bound passkeys in Entra through the FIDO2 provisioning API."""

    enabled: bool = False
    policy: PasskeyPolicy = PasskeyPolicy.OPTIONAL
    challenge_timeout_minutes: Annotated[int, Field(alias="challengeTimeoutMinutes", ge=5, le=43200)] = 5
    allowed_aaguids: Annotated[list[str], Field(alias="allowedAaguids")] = Field(default_factory=list)
    enrollment_groups: Annotated[EnrollmentGroupNames, Field(alias="enrollmentGroups")] = EnrollmentGroupNames()
    #: With policy `required`: no rotated password for a device until its passkey is registered in Entra.
    withhold_passwords_until_passkey: Annotated[bool, Field(alias="withholdPasswordsUntilPasskey")] = False


class FederationFeature(_Doc):
    """Verify, federate and defederate custom domains; watch signing certificates."""

    enabled: bool = False


class ExportGroupRules(_Doc):
    """How exported groups meet Entra's groups (docs/export.md)."""

    #: typeAndEmail: an Entra group of the same displayName matches only if its type and mail match too.
    match: Literal["typeAndEmail", "nameOnly"] = "typeAndEmail"
    #: onlyIfNameUnused: no group is created while any Entra group carries the name.
    create_when_unmatched: Annotated[Literal["always", "onlyIfNameUnused"],
                                     Field(alias="createWhenUnmatched")] = "onlyIfNameUnused"
    #: Delete other Entra groups of the same name, only those the bridge created (others are listed in status).
    remove_duplicates: Annotated[bool, Field(alias="removeDuplicates")] = False
    #: The kind of group created: a security group, or a Microsoft 365 group (groupTypes Unified, mail-enabled).
    kind: Literal["security", "microsoft365"] = "security"
    #: Object ids of the users or service principals made owners of each group the bridge creates
    #: (`owners@odata.bind` on create, at most 20: https://learn.microsoft.com/graph/api/group-post-groups).
    owners: Annotated[list[Annotated[str, Field(pattern=GUID)]], Field(max_length=20)] = Field(default_factory=list)


class ExportFeature(_Doc):
    """Export users and groups into Entra from the SCIM service (docs/export.md)."""

    enabled: bool = False
    default_license_sku: Annotated[str | None, Field(alias="defaultLicenseSku")] = None
    usage_location: Annotated[str | None, Field(alias="usageLocation", pattern=r"^[A-Z]{2}$")] = None
    #: How a SCIM user is mapped to an Entra user when no Entra id is linked yet.
    username_mapping: Annotated[Literal["upn", "mail", "userNameAtDomain", "employeeId"],
                                Field(alias="usernameMapping")] = "upn"
    #: The verified domain appended to the userName with usernameMapping userNameAtDomain.
    user_domain: Annotated[str | None, Field(alias="userDomain")] = None
    #: SCIM DELETE deletes a user the bridge created (else it is disabled).
    delete_users: Annotated[bool, Field(alias="deleteUsers")] = False
    #: More removals than this in one change stop it (docs/architecture.md, invariant 4).
    removal_threshold: Annotated[int, Field(alias="removalThreshold", ge=0)] = 100
    #: Users the bridge creates: `password` (a random one, changed at first sign-in) or `passwordless` (a random
    #: one no one can use or is asked to change, for a Temporary Access Pass and passkey onboarding).
    new_users: Annotated[Literal["password", "passwordless"], Field(alias="newUsers")] = "password"
    groups: ExportGroupRules = ExportGroupRules()


class Features(_Doc):
    """Per-feature settings, each with its own enabled flag."""

    sync: SyncFeature = SyncFeature()
    rotation: RotationFeature = RotationFeature()
    passkeys: PasskeysFeature = PasskeysFeature()
    federation: FederationFeature = FederationFeature()
    export: ExportFeature = ExportFeature()


class Connection(_Doc):
    """A tenant the bridge serves, with its domains and features."""

    name: Annotated[str, Field(pattern=SLUG)]
    tenant_id: Annotated[str, Field(alias="tenantId", pattern=GUID)]
    cloud: Cloud = Cloud.GLOBAL
    auth: ConnectionAuth = ManagedIdentityAuth()
    domains: list[str] = Field(default_factory=list)
    features: Features = Features()
    dry_run: Annotated[bool, Field(alias="dryRun")] = False

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower() for d in value]


class ConnectionList(BaseModel):
    """The parsed value of the CONNECTIONS setting."""

    model_config = ConfigDict(extra="forbid")

    connections: list[Connection]

    @model_validator(mode="after")
    def _unique_names(self) -> ConnectionList:
        seen: set[str] = set()
        for conn in self.connections:
            if conn.name in seen:
                raise ValueError(f"connection name {conn.name!r} is used twice")
            seen.add(conn.name)
        return self


# --------------------------------------------------------------------------------------------
# App settings
# --------------------------------------------------------------------------------------------


def _setting(name: str, default: Any = ..., **kw: Any) -> Any:
    return Field(default, validation_alias=AliasChoices(name), **kw)


# Value checks shared by the settings below; each raises ValueError with what is wrong and never
# repeats the value (a connection string holds a key). load_settings adds the setting's name.

def _unset_if_empty(value: Any) -> Any:
    """An empty app setting means "not set" (docs/settings.md)."""
    return None if isinstance(value, str) and not value.strip() else value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: str, *, path: bool = False, hosts: tuple[str, ...] = ()) -> str:
    """An absolute https URL with a host (http only on this machine, for the local stand-ins), no
    credentials, query or fragment, no path unless `path`, and a host under one of `hosts` if given."""
    parts = urlsplit(value.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("must be an absolute https:// URL with a host name")
    if parts.scheme == "http" and not _loopback(host):
        raise ValueError(f"must use https (http is accepted only for the local stand-ins on 127.0.0.1), "
                         f"not for {host}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not carry credentials, a query or a fragment")
    if not path and parts.path not in ("", "/"):
        raise ValueError("must be the service's base URL, without a path")
    if hosts and not _loopback(host) and not any(host.endswith(suffix) for suffix in hosts):
        raise ValueError(f"host {host} is not one of {', '.join('*' + s for s in hosts)}")
    return value.strip().rstrip("/")


def check_ncrontab(value: str) -> str:
    """A six-field NCRONTAB expression ({second} {minute} {hour} {day} {month} {day-of-week}), as the
    Functions timer trigger reads it
    (https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions)."""
    fields = value.split()
    if len(fields) != 6:
        raise ValueError(f"has {len(fields)} fields; a timer schedule is six-field NCRONTAB "
                         "({second} {minute} {hour} {day} {month} {day-of-week}), e.g. '0 */15 * * * *'")
    if not croniter.is_valid(" ".join(fields), second_at_beginning=True):
        raise ValueError("is not a valid NCRONTAB expression ({second} {minute} {hour} {day} {month} "
                         "{day-of-week})")
    return " ".join(fields)


#: Key Vault's DNS suffixes in the public, US Government and China clouds
#: (https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#dns-suffixes-for-object-identifiers).
VAULT_HOSTS = (".vault.azure.net", ".vault.usgovcloudapi.net", ".vault.azure.cn")
#: Members of a storage connection string
#: (https://learn.microsoft.com/azure/storage/common/storage-configure-connection-string).
_STORAGE_MEMBERS = {"DefaultEndpointsProtocol", "AccountName", "AccountKey", "EndpointSuffix", "SharedAccessSignature",
                    "BlobEndpoint", "QueueEndpoint", "TableEndpoint", "FileEndpoint", "UseDevelopmentStorage",
                    "DevelopmentStorageProxyUri"}


def _pairs(value: str, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(";"))):
        name, sep, member = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"is not a {what}: expected Name=value pairs separated by ';'")
        pairs[name.strip()] = member.strip()
    return pairs


def check_storage_connection_string(value: str) -> str:
    """A storage connection string that names the account and how to reach it, or Azurite's shortcut."""
    pairs = _pairs(value, "storage connection string")
    if pairs.get("UseDevelopmentStorage", "").lower() == "true":
        return value
    unknown = sorted(set(pairs) - _STORAGE_MEMBERS)
    if unknown:
        raise ValueError(f"has unknown members {unknown} (storage connection string)")
    if pairs.get("DefaultEndpointsProtocol", "https") not in ("http", "https"):
        raise ValueError("DefaultEndpointsProtocol must be https (or http for Azurite)")
    if "AccountKey" in pairs:
        try:
            base64.b64decode(pairs["AccountKey"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("AccountKey is not base64") from None
    if not ("AccountKey" in pairs or "SharedAccessSignature" in pairs):
        raise ValueError("names neither AccountKey nor SharedAccessSignature: use AzureWebJobsStorage__accountName "
                         "for the app's identity instead")
    if "AccountName" not in pairs and not ("TableEndpoint" in pairs and "QueueEndpoint" in pairs):
        raise ValueError("names no AccountName (nor TableEndpoint and QueueEndpoint)")
    for member in ("BlobEndpoint", "QueueEndpoint", "TableEndpoint", "FileEndpoint"):
        if member in pairs:
            try:
                check_url(pairs[member], path=True)
            except ValueError as exc:
                raise ValueError(f"{member} {exc}") from None
    return value


def check_insights_connection_string(value: str) -> str:
    """An Application Insights connection string: an InstrumentationKey and https endpoints
    (https://learn.microsoft.com/azure/azure-monitor/app/connection-strings)."""
    pairs = _pairs(value, "connection string")
    if not re.fullmatch(GUID, pairs.get("InstrumentationKey", "")):
        raise ValueError("has no InstrumentationKey GUID (copy the connection string from the Application "
                         "Insights resource's overview)")
    for member, url in pairs.items():
        if member.endswith("Endpoint"):
            try:
                check_url(url, path=True)
            except ValueError as exc:
                raise ValueError(f"{member} {exc}") from None
    return value


#: Event Grid topic hosts in the public, US Government and China clouds (`<topic>.<region>-1.eventgrid.azure.net`).
EVENTGRID_HOSTS = (".eventgrid.azure.net", ".eventgrid.azure.us", ".eventgrid.azure.cn")


def check_eventgrid_endpoint(value: str) -> str:
    """A topic endpoint as the portal shows it: https://<topic>.<region>-1.eventgrid.azure.net/api/events."""
    url = check_url(value, path=True, hosts=EVENTGRID_HOSTS)
    if urlsplit(url).path.rstrip("/") != "/api/events":
        raise ValueError("must be the topic endpoint ending in /api/events (the topic's Overview shows it)")
    return url


def check_access_key(value: str) -> str:
    """An access key: 16 to 128 characters of (URL-safe) base64, never echoed."""
    if not re.fullmatch(r"[A-Za-z0-9+/=_-]{16,128}", value.strip()):
        raise ValueError("is not an access key (16 to 128 base64 characters; copy it from the topic's Access keys)")
    return value.strip()


def _existing_file(value: str) -> str:
    if not Path(value).is_file():
        raise ValueError("names no readable file")
    return value


def _optional(check: Any) -> Any:
    def run(value: str | None) -> str | None:
        return None if value is None else check(value)
    return AfterValidator(run)


Unset = BeforeValidator(_unset_if_empty)
Schedule = Annotated[str, AfterValidator(check_ncrontab)]
Guid = Annotated[str, StringConstraints(pattern=GUID)]
#: 3-24 lower-case letters and digits (https://learn.microsoft.com/azure/storage/common/storage-account-overview#storage-account-name).
StorageAccountName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{3,24}$")]
StorageUrl = Annotated[str | None, Unset, _optional(lambda v: check_url(v, path=True))]


class Settings(BaseSettings):
    """App settings read from the environment; names are the app settings' names."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, frozen=True, populate_by_name=False)

    worker_runtime: Annotated[Literal["python"] | None, Unset] = _setting("FUNCTIONS_WORKER_RUNTIME", None)
    connections_json: Annotated[str | None, Unset] = _setting("CONNECTIONS", None)
    connections_file: Annotated[str | None, Unset, _optional(_existing_file)] = _setting("CONNECTIONS_FILE", None)
    key_vault_url: Annotated[str | None, Unset, _optional(lambda v: check_url(v, hosts=VAULT_HOSTS))] = _setting(
        "KEY_VAULT_URL", None)
    storage_connection: Annotated[str | None, Unset, _optional(check_storage_connection_string)] = _setting(
        "AzureWebJobsStorage", None)
    storage_account_name: Annotated[StorageAccountName | None, Unset] = _setting(
        "AzureWebJobsStorage__accountName", None)
    # Identity-based storage in another cloud or behind custom names: the services' URLs
    # (https://learn.microsoft.com/azure/azure-functions/functions-reference#common-properties-for-identity-based-connections).
    table_service_uri: StorageUrl = _setting("AzureWebJobsStorage__tableServiceUri", None)
    queue_service_uri: StorageUrl = _setting("AzureWebJobsStorage__queueServiceUri", None)
    managed_identity_client_id: Annotated[Guid | None, Unset] = _setting("AZURE_CLIENT_ID", None)
    sync_schedule: Schedule = _setting("SYNC_SCHEDULE", "0 */15 * * * *")
    rotation_schedule: Schedule = _setting("ROTATION_SCHEDULE", "0 5 * * * *")
    federation_schedule: Schedule = _setting("FEDERATION_SCHEDULE", "0 30 2 * * *")
    local_entra_url: Annotated[str, AfterValidator(check_url)] = _setting("LOCAL_ENTRA_URL", "https://127.0.0.1:8443")
    local_ca_file: Annotated[str | None, Unset, _optional(_existing_file)] = _setting("LOCAL_CA_FILE", None)
    log_format: Literal["json", "text"] = _setting("LOG_FORMAT", "text")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _setting("LOG_LEVEL", "INFO")
    appinsights_connection_string: Annotated[str | None, Unset, _optional(check_insights_connection_string)] = (
        _setting("APPLICATIONINSIGHTS_CONNECTION_STRING", None))
    auth_enabled: bool = _setting("WEBSITE_AUTH_ENABLED", False)
    max_body_bytes: int = _setting("MAX_BODY_BYTES", 65536, ge=1024, le=4 * 1024 * 1024)
    dry_run: bool = _setting("DRY_RUN", False)
    #: Oldest copy of a tenant's FIDO2 policy a registration may be checked against (docs/passkeys.md).
    passkey_policy_max_age_seconds: int = _setting("PASSKEY_POLICY_MAX_AGE_SECONDS", 30, ge=0, le=3600)
    fido_mds_url: str = _setting("FIDO_MDS_URL", FIDO_MDS_URL)
    fido_mds_root_cert: str | None = _setting("FIDO_MDS_ROOT_CERT", None)
    #: The safety-net sweep that publishes events a nudge missed.
    events_schedule: Schedule = _setting("EVENTS_SCHEDULE", "0 * * * * *")
    #: Event Grid topic that events to the provider are published to (docs/events.md); none: kept in the feed only.
    eventgrid_topic_endpoint: Annotated[str | None, Unset, _optional(check_eventgrid_endpoint)] = _setting(
        "EVENTGRID_TOPIC_ENDPOINT", None)
    #: The topic's access key; unset in Azure, where the app's identity holds EventGrid Data Sender.
    eventgrid_topic_key: Annotated[str | None, Unset, _optional(check_access_key)] = _setting(
        "EVENTGRID_TOPIC_KEY", None, repr=False)
    #: This app's public address as Graph reaches it, for change notifications (docs/notifications.md);
    #: unset, no subscription is made and the sync timer alone brings changes.
    notification_base_url: Annotated[str | None, Unset, _optional(lambda v: check_url(v, path=True))] = _setting(
        "NOTIFICATION_BASE_URL", None)

    @field_validator("fido_mds_url")
    @classmethod
    def _https_metadata(cls, value: str) -> str:
        if not value.strip():
            return FIDO_MDS_URL
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL of the FIDO MDS3 blob")
        return value

    @field_validator("fido_mds_root_cert")
    @classmethod
    def _root_certificate(cls, value: str | None) -> str | None:
        if value and value.strip():
            try:
                root_certificate(value)
            except MetadataRejected as exc:
                raise ValueError(f"must be the MDS root certificate: {exc}") from None
            return value
        return None

    @property
    def mds_root_der(self) -> bytes:
        """The root the MDS3 blob must chain to: FIDO_MDS_ROOT_CERT, or the FIDO Alliance's."""
        return root_certificate(self.fido_mds_root_cert or FIDO_MDS_ROOT_PEM)

    @model_validator(mode="before")
    @classmethod
    def _reject_unresolved_references(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, str) and KEY_VAULT_REFERENCE.match(value):
                    raise Configuration(
                        f"app setting {key} is an unresolved Key Vault reference: grant the app's identity "
                        "'Key Vault Secrets User' on the vault and check the SecretUri",
                        setting=key,
                    )
        return data

    def profile(self, cloud: Cloud) -> CloudProfile:
        """Endpoints of `cloud` under these settings."""
        return cloud_profile(cloud, local_entra_url=self.local_entra_url)

    def load_connections(self) -> list[Connection]:
        """Parse the connection documents from CONNECTIONS or CONNECTIONS_FILE."""
        setting = "CONNECTIONS"
        if self.connections_json:
            raw = self.connections_json
        elif self.connections_file:
            setting = "CONNECTIONS_FILE"
            try:
                raw = Path(self.connections_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise Configuration(f"CONNECTIONS_FILE {self.connections_file!r} cannot be read: "
                                    f"{exc.strerror}", setting=setting) from None
        else:
            return []
        return parse_connections(raw, setting=setting)


def parse_connections(raw: str, *, setting: str = "CONNECTIONS") -> list[Connection]:
    """Validate connection documents, naming the setting and field of the first problem."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Configuration(f"{setting} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                            setting=setting) from None
    if isinstance(data, dict) and "connections" not in data:
        data = [data]
    if isinstance(data, list):
        data = {"connections": data}
    try:
        return ConnectionList.model_validate(data).connections
    except ValidationError as exc:
        raise Configuration(f"{setting}: {describe_validation_error(exc, data)}", setting=setting) from None


def describe_validation_error(exc: ValidationError, data: Any = None) -> str:
    """One line per problem, each naming the field path (connection names instead of indexes)."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        if loc[:1] == ["connections"] and len(loc) > 1 and isinstance(loc[1], int):
            label = f"connections[{loc[1]}]"
            with contextlib.suppress(KeyError, TypeError, IndexError):
                label = f"connection {data['connections'][loc[1]]['name']!r}"
            loc = [label, *loc[2:]]
        path = ".".join(str(p) for p in loc if p not in ("managedIdentity", "clientSecret", "certificate"))
        lines.append(f"{path}: {err['msg']}")
    return "; ".join(lines)


def load_settings() -> Settings:
    """Read and validate the app settings, raising Configuration with the setting's name."""
    try:
        return Settings()
    except ValidationError as exc:
        raise Configuration(f"invalid app settings: {describe_validation_error(exc)}",
                            setting=str(exc.errors()[0]["loc"][0]) if exc.errors() else None) from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process's settings, validated once."""
    return load_settings()


def connection(name: str) -> Connection:
    """The connection called `name`, or Configuration/NotFound naming it."""
    from shared.errors import NotFound

    for conn in settings().load_connections():
        if conn.name == name:
            return conn
    raise NotFound(f"no connection named {name!r} is configured (app setting CONNECTIONS)")
