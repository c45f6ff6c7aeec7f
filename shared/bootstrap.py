"""The composition root: the one place that turns settings into adapters and services.

Everything is built lazily, once per process: the first function that needs Key Vault builds the
vault client, the first call for a connection builds its Graph gateway. Functions ask `bridge()` for
what they need; tests build a `Bridge` from their own settings.

`start()` is the process's one start-up path, called by `function_app` on import, in Azure and under
the local host alike: logging (masking, `LOG_FORMAT`, `LOG_LEVEL`, correlation ids) and telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from typing import Any, Literal

from shared import logs
from shared.adapters import identity
from shared.adapters.audit import AuditReader, TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.directory import GraphDirectoryReader
from shared.adapters.events import EventGridSink, TableEventOutbox
from shared.adapters.export import GraphExportDirectory
from shared.adapters.graph import GraphGateway, SystemClock, ThrottleGovernor
from shared.adapters.mds import FidoMetadata
from shared.adapters.ownership import TableGroupRecords
from shared.adapters.passkeys import GraphPasskeyDirectory
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.rotation import GraphPasswordDirectory
from shared.adapters.scim import TableScimRepository
from shared.adapters.subscriptions import GraphSubscriptions
from shared.adapters.tables import TableEntityStore
from shared.adapters.vault import KeyVaultSecretStore
from shared.config import Cloud, Connection, Settings, settings
from shared.errors import Configuration, NotFound
from shared.messages import WorkMessage
from shared.services.audit import AuditQuery
from shared.services.connections import CertificateValidator
from shared.services.delivery import PasswordDelivery
from shared.services.devices import DeviceService
from shared.services.directory import Directory, RotationSubjects
from shared.services.enrollment import DeviceEnrollment
from shared.services.enrollment_groups import EnrollmentGroups
from shared.services.events import ChangeFeed, EventPublisher
from shared.services.export import ExportService
from shared.services.federation import watch_rows
from shared.services.notifications import NotificationService
from shared.services.passkeys import PasskeyService
from shared.services.poison import PoisonService
from shared.services.ports import Clock
from shared.services.problems import JobProblems
from shared.services.rotation import RotationService
from shared.services.scim import ScimService
from shared.services.status import StatusService
from shared.services.sync import SyncService
from shared.topology import Queue

log = logging.getLogger(__name__)


class Bridge:
    """Adapters and services of one process, built on first use."""

    def __init__(self, config: Settings, *, clock: Clock | None = None) -> None:
        self.settings = config
        self.clock: Clock = clock or SystemClock()
        self._cache: dict[str, Any] = {}
        self._graphs: dict[str, GraphGateway] = {}
        self._graph_lock = asyncio.Lock()
        self._connections: list[Connection] | None = None

    # ------------------------------------------------------------------ configuration

    def connections(self) -> list[Connection]:
        """The configured connections, validated once."""
        if self._connections is None:
            self._connections = self.settings.load_connections()
        return self._connections

    def connection(self, name: str) -> Connection:
        """One connection by name; NotFound names the setting to check."""
        for conn in self.connections():
            if conn.name == name:
                return conn
        raise NotFound(f"no connection named {name!r} is configured (app setting CONNECTIONS or CONNECTIONS_FILE)")

    # ------------------------------------------------------------------ storage, vault, audit

    def _once(self, key: str, build: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def entities(self) -> TableEntityStore:
        """Table storage."""
        def build() -> TableEntityStore:
            if self.settings.storage_connection:
                return TableEntityStore.from_connection_string(self.settings.storage_connection)
            if self.settings.storage_account_name or self.settings.table_service_uri:
                return TableEntityStore.from_account(self.storage_url("table"), self.app_credential)
            raise Configuration("no storage configured: set AzureWebJobsStorage or AzureWebJobsStorage__accountName",
                                setting="AzureWebJobsStorage")
        store: TableEntityStore = self._once("entities", build)
        return store

    @property
    def queue(self) -> StorageWorkQueue:
        """The work queues."""
        def build() -> StorageWorkQueue:
            if self.settings.storage_connection:
                return StorageWorkQueue.from_connection_string(self.settings.storage_connection)
            if self.settings.storage_account_name or self.settings.queue_service_uri:
                return StorageWorkQueue.from_account(self.storage_url("queue"), self.app_credential)
            raise Configuration("no storage configured: set AzureWebJobsStorage or AzureWebJobsStorage__accountName",
                                setting="AzureWebJobsStorage")
        queue: StorageWorkQueue = self._once("queue", build)
        return queue

    def storage_url(self, service: Literal["table", "queue"]) -> str:
        """The table or queue service of the app's storage account: the identity-based setting
        (AzureWebJobsStorage__tableServiceUri / __queueServiceUri, which the deployment sets from the
        account itself), else the account name under the storage suffix of the connections' cloud."""
        explicit = self.settings.table_service_uri if service == "table" else self.settings.queue_service_uri
        if explicit:
            return explicit
        setting = f"AzureWebJobsStorage__{service}ServiceUri"
        if not self.settings.storage_account_name:
            raise Configuration(f"no storage configured: set AzureWebJobsStorage, {setting} or "
                                "AzureWebJobsStorage__accountName", setting="AzureWebJobsStorage__accountName")
        suffixes = {self.settings.profile(c.cloud).storage_suffix for c in self.connections()} - {None}
        if len(suffixes) > 1:
            raise Configuration(f"connections span clouds {sorted(s or '' for s in suffixes)}: set {setting} to "
                                "the app's own storage endpoint", setting=setting)
        suffix = suffixes.pop() if suffixes else "core.windows.net"
        return f"https://{self.settings.storage_account_name}.{service}.{suffix}"

    @property
    def app_credential(self) -> Any:
        """The function app's own identity."""
        return self._once("app_credential", lambda: identity.app_credential(self.settings))

    @property
    def secrets(self) -> KeyVaultSecretStore:
        """Key Vault (KEY_VAULT_URL)."""
        def build() -> KeyVaultSecretStore:
            if not self.settings.key_vault_url:
                raise Configuration("KEY_VAULT_URL is not set: name the vault that keeps managed passwords and the "
                                    "audit key", setting="KEY_VAULT_URL")
            verify: str | bool = self.settings.local_ca_file or True
            return KeyVaultSecretStore(self.settings.key_vault_url, self.app_credential, connection_verify=verify)
        store: KeyVaultSecretStore = self._once("secrets", build)
        return store

    @property
    def audit(self) -> TableAuditSink:
        """The hash-chained audit log."""
        sink: TableAuditSink = self._once("audit", lambda: TableAuditSink(self.entities, self.clock, self.audit_keys,
                                                                          self.audit_anchors))
        return sink

    @property
    def audit_keys(self) -> VaultAuditKeys:
        """The audit chain's MAC keys, in Key Vault (read on first use)."""
        keys: VaultAuditKeys = self._once("audit_keys", lambda: VaultAuditKeys(lambda: self.secrets, self.clock))
        return keys

    @property
    def audit_anchors(self) -> VaultAuditAnchors:
        """The audit chains' anchors, in Key Vault."""
        anchors: VaultAuditAnchors = self._once("audit_anchors", lambda: VaultAuditAnchors(lambda: self.secrets))
        return anchors

    @property
    def audit_reader(self) -> AuditReader:
        """Reads and verifies the audit log."""
        reader: AuditReader = self._once("audit_reader", lambda: AuditReader(self.entities))
        return reader

    @property
    def audit_query(self) -> AuditQuery:
        """Reads (filtered, paged) and verifies the audit log."""
        query: AuditQuery = self._once("audit_query", lambda: AuditQuery(self.audit_reader, self.audit_keys,
                                                                         self.audit_anchors, self.clock))
        return query

    @property
    def governor(self) -> ThrottleGovernor:
        """The cross-instance throttle governor."""
        governor: ThrottleGovernor = self._once("governor", lambda: ThrottleGovernor(self.entities, self.clock))
        return governor

    # ------------------------------------------------------------------ Graph per connection

    async def graph(self, conn: Connection) -> GraphGateway:
        """The Graph gateway of `conn`, built once per process."""
        async with self._graph_lock:
            gateway = self._graphs.get(conn.name)
            if gateway is None:
                secrets = self.secrets if self.settings.key_vault_url else None
                credential = await identity.connection_credential(conn, self.settings, secrets)
                profile = self.settings.profile(conn.cloud)
                verify: Any = identity.ssl_context(self.settings) if conn.cloud is Cloud.LOCAL else True
                gateway = GraphGateway(connection=conn.name, tenant_id=conn.tenant_id, credential=credential,
                                       graph_base=profile.graph, scope=profile.graph_scope, verify=verify,
                                       governor=self.governor, dry_run=conn.dry_run or self.settings.dry_run)
                self._graphs[conn.name] = gateway
            return gateway

    async def warm_up(self, within: float = 20.0) -> dict[str, str]:
        """Before the first request: build each active connection's gateway, sign in, open its connection.

        Best effort: a connection that cannot warm up is logged with what to check and left for the first
        request to try again. Returns one line per connection, for the log and for tests.
        """
        try:
            connections = self.connections()
        except Configuration as exc:
            log.error("warm-up skipped: %s", exc)
            return {}

        async def one(conn: Connection) -> tuple[str, str]:
            try:
                gateway = await self.graph(conn)
                seconds = await asyncio.wait_for(gateway.warm_up(), within)
            except TimeoutError:
                return conn.name, f"not ready: Graph did not answer within {within:.0f} s"
            except Exception as exc:  # warm-up is best effort; the first request will report it again
                return conn.name, f"not ready: {type(exc).__name__}: {exc}"
            return conn.name, f"ready in {seconds * 1000:.0f} ms"

        active = [c for c in connections if any(f.enabled for f in (c.features.sync, c.features.rotation,
                                                                      c.features.passkeys, c.features.federation,
                                                                      c.features.export))]
        results = dict(await asyncio.gather(*(one(c) for c in active)))
        for name, outcome in results.items():
            (log.info if outcome.startswith("ready") else log.warning)("warm-up of connection %s: %s", name, outcome)
        return results

    async def own_principal_id(self, conn: Connection) -> str:
        """Object id of the service principal `conn` signs in as (the `oid` of its Graph token)."""
        key = f"oid:{conn.name}"
        if key not in self._cache:
            claims = await (await self.graph(conn)).token_claims()
            self._cache[key] = str(claims.get("oid") or "")
            if not self._cache[key]:
                raise Configuration(f"the Graph token of connection {conn.name!r} carries no oid",
                                    setting="CONNECTIONS")
        return str(self._cache[key])

    async def password_directory(self, conn: Connection) -> GraphPasswordDirectory:
        """Entra's password side for rotation, on `conn`'s gateway."""
        key = f"pwdir:{conn.name}"
        if key not in self._cache:
            gateway = await self.graph(conn)

            async def principal() -> str:
                return await self.own_principal_id(conn)

            self._cache[key] = GraphPasswordDirectory(gateway, own_principal_id=principal, clock=self.clock)
        directory: GraphPasswordDirectory = self._cache[key]
        return directory

    # ------------------------------------------------------------------ services

    @property
    def directory(self) -> Directory:
        """The bridge directory (users table)."""
        directory: Directory = self._once("directory", lambda: Directory(self.entities))
        return directory

    @property
    def rotation(self) -> RotationService:
        """Password rotation."""
        def build() -> RotationService:
            return RotationService(secrets=self.secrets, entities=self.entities, audit=self.audit, queue=self.queue,
                                   clock=self.clock, subjects=RotationSubjects(self.directory),
                                   events=self.events_outbox)
        service: RotationService = self._once("rotation", build)
        return service

    @property
    def devices(self) -> DeviceService:
        """The device registry."""
        def build() -> DeviceService:
            return DeviceService(directory=self.directory, entities=self.entities, audit=self.audit,
                                 queue=self.queue, clock=self.clock, events=self.events_outbox)
        service: DeviceService = self._once("devices", build)
        return service

    @property
    def delivery(self) -> PasswordDelivery:
        """Password delivery to devices."""
        def build() -> PasswordDelivery:
            return PasswordDelivery(devices=self.devices, subjects=RotationSubjects(self.directory),
                                    rotation=self.rotation, entities=self.entities, audit=self.audit,
                                    clock=self.clock)
        service: PasswordDelivery = self._once("delivery", build)
        return service

    @property
    def passkeys(self) -> PasskeyService:
        """Passkey enrollment."""
        def build() -> PasskeyService:
            return PasskeyService(devices=self.devices, directory=self.directory, entities=self.entities,
                                  audit=self.audit, clock=self.clock, trust=self.fido_metadata,
                                  policy_max_age=dt.timedelta(seconds=self.settings.passkey_policy_max_age_seconds))
        service: PasskeyService = self._once("passkeys", build)
        return service

    @property
    def fido_metadata(self) -> FidoMetadata:
        """The FIDO MDS3 blob (FIDO_MDS_URL, FIDO_MDS_ROOT_CERT), kept in Table storage."""
        def build() -> FidoMetadata:
            return FidoMetadata(self.entities, self.clock, url=self.settings.fido_mds_url,
                                root_der=self.settings.mds_root_der, verify=identity.ssl_context(self.settings))
        metadata: FidoMetadata = self._once("fido_metadata", build)
        return metadata

    @property
    def enrollment(self) -> DeviceEnrollment:
        """Passkey registration under the connection's enrollment policy."""
        def build() -> DeviceEnrollment:
            return DeviceEnrollment(passkeys=self.passkeys, devices=self.devices)
        service: DeviceEnrollment = self._once("enrollment", build)
        return service

    @property
    def sync(self) -> SyncService:
        """User and group sync."""
        def build() -> SyncService:
            return SyncService(directory=self.directory, entities=self.entities, audit=self.audit, queue=self.queue,
                               clock=self.clock, secrets=self.secrets if self.settings.key_vault_url else None,
                               enrollment_groups=self.enrollment_groups, events=self.events_outbox)
        service: SyncService = self._once("sync", build)
        return service

    @property
    def status(self) -> StatusService:
        """Connection status at a glance."""
        def build() -> StatusService:
            async def watch(connection: str) -> list[dict[str, Any]]:
                return await watch_rows(self.entities, connection)

            # Rotation is built only when a connection has it on: it needs Key Vault.
            return StatusService(sync=self.sync, rotation=lambda: self.rotation, directory=self.directory,
                                 federation_watch=watch, writes_paused_until=self.governor.pause_until,
                                 passkey_enrollment=self.devices.passkey_enrollment,
                                 job_problems=self.problems.all, export=self.export.summary)
        service: StatusService = self._once("status", build)
        return service

    @property
    def poison(self) -> PoisonService:
        """The poison queues, for operators."""
        service: PoisonService = self._once("poison", lambda: PoisonService(self.queue, self.audit))
        return service

    @property
    def enrollment_groups(self) -> EnrollmentGroups:
        """The enrollment-state groups and the record of which the bridge owns."""
        def build() -> EnrollmentGroups:
            return EnrollmentGroups(TableGroupRecords(self.entities), self.audit, self.clock)
        service: EnrollmentGroups = self._once("enrollment_groups", build)
        return service
        return service

    @property
    def problems(self) -> JobProblems:
        """The last failure of each timer and queue job per connection, for status."""
        problems: JobProblems = self._once("problems", lambda: JobProblems(self.entities, self.clock))
        return problems

    # ------------------------------------------------------------------ events to the provider

    @property
    def events_outbox(self) -> TableEventOutbox:
        """The outbox and change feed (table `events`); each record nudges the publisher (queue events-work)."""
        def build() -> TableEventOutbox:
            async def nudge(connection: str) -> None:
                message = WorkMessage(connection=connection, kind="events.publish", target=connection,
                                      idempotency_key=f"events-{uuid.uuid4().hex}")
                await self.queue.send(Queue.EVENTS, message.model_dump(mode="json", by_alias=True))

            return TableEventOutbox(self.entities, self.clock, nudge)
        outbox: TableEventOutbox = self._once("events_outbox", build)
        return outbox

    @property
    def event_sink(self) -> EventGridSink | None:
        """The Event Grid topic (EVENTGRID_TOPIC_ENDPOINT), or None: events then go to the feed only."""
        def build() -> EventGridSink | None:
            endpoint = self.settings.eventgrid_topic_endpoint
            if not endpoint:
                return None
            key = self.settings.eventgrid_topic_key
            return EventGridSink(endpoint, key=key, credential=None if key else self.app_credential,
                                 verify=self.settings.local_ca_file or True)
        sink: EventGridSink | None = self._once("event_sink", build)
        return sink

    @property
    def event_publisher(self) -> EventPublisher:
        """Publishes the outbox to Event Grid."""
        def build() -> EventPublisher:
            return EventPublisher(log_=self.events_outbox, sink=self.event_sink, clock=self.clock)
        publisher: EventPublisher = self._once("event_publisher", build)
        return publisher

    @property
    def change_feed(self) -> ChangeFeed:
        """GET connections/{c}/events."""
        feed: ChangeFeed = self._once("change_feed", lambda: ChangeFeed(self.events_outbox))
        return feed

    @property
    def notifications(self) -> NotificationService:
        """Graph change notifications: subscriptions per connection, notifications that queue a sync."""
        def build() -> NotificationService:
            if self.settings.notification_base_url and not self.settings.key_vault_url:
                raise Configuration("change notifications keep their clientState in Key Vault: set KEY_VAULT_URL "
                                    "(or unset NOTIFICATION_BASE_URL)", setting="KEY_VAULT_URL")
            return NotificationService(sync=self.sync, entities=self.entities, secrets_store=self.secrets,
                                       audit=self.audit, clock=self.clock,
                                       base_url=self.settings.notification_base_url, queue=self.queue,
                                       users=self.directory)
        service: NotificationService = self._once("notifications", build)
        return service

    async def subscription_api(self, conn: Connection) -> GraphSubscriptions:
        """Graph's /subscriptions for `conn`, on its gateway."""
        return GraphSubscriptions(await self.graph(conn))

    @property
    def scim(self) -> ScimService:
        """The SCIM service (docs/export.md)."""
        def build() -> ScimService:
            return ScimService(TableScimRepository(self.entities), self.queue, self.clock)
        service: ScimService = self._once("scim", build)
        return service

    @property
    def export(self) -> ExportService:
        """The export engine (docs/export.md)."""
        def build() -> ExportService:
            return ExportService(TableScimRepository(self.entities), self.audit, events=self.events_outbox,
                                 clock=self.clock)
        service: ExportService = self._once("export", build)
        return service

    async def export_directory(self, conn: Connection) -> GraphExportDirectory:
        """Entra for export, on `conn`'s gateway, one per connection (it keeps the verified domains a minute)."""
        key = f"export:{conn.name}"
        if key not in self._cache:
            self._cache[key] = GraphExportDirectory(await self.graph(conn))
        directory: GraphExportDirectory = self._cache[key]
        return directory

    async def directory_reader(self, conn: Connection) -> GraphDirectoryReader:
        """A fresh reader (it counts the resource units of one run)."""
        return GraphDirectoryReader(await self.graph(conn))  # the gateway carries the cloud's Graph host

    async def passkey_directory(self, conn: Connection) -> GraphPasskeyDirectory:
        """Entra's FIDO2 provisioning API for `conn`, on its Graph gateway."""
        return GraphPasskeyDirectory(await self.graph(conn))

    @property
    def certificate_validator(self) -> CertificateValidator:
        """Checks connections' certificate credentials (and signs in with them on request)."""
        def build() -> CertificateValidator:
            async def token_check(conn: Connection, client_id: str, pem: str) -> dict[str, Any]:
                return await identity.certificate_token_claims(conn, self.settings, client_id, pem)

            return CertificateValidator(lambda: self.secrets, self.clock, token_check)
        service: CertificateValidator = self._once("certificate_validator", build)
        return service

    # ------------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Close every client this process opened (after anchoring the audit chains written)."""
        sink = self._cache.get("audit")
        if sink is not None:
            with contextlib.suppress(Exception):
                await sink.aclose()
        for gateway in self._graphs.values():
            with contextlib.suppress(Exception):
                await gateway.close()
        for key in ("secrets", "event_sink", "entities", "queue", "app_credential"):
            client = self._cache.get(key)
            if client is not None and hasattr(client, "close"):
                with contextlib.suppress(Exception):
                    await client.close()
        self._cache.clear()
        self._graphs.clear()


_bridge: Bridge | None = None
_started = False


def start() -> None:
    """Configure logging and telemetry for this process, once (`function_app` calls it on import).

    Invalid settings do not stop the import here: logging starts with the defaults and the error is
    logged; the first function that needs the settings raises it again, naming the setting.
    """
    global _started  # one start-up per process, by design
    if _started:
        return
    _started = True
    try:
        config = settings()
    except Configuration as exc:
        logs.configure()
        log.error("%s", exc)
        return
    logs.configure(fmt=config.log_format, level=config.log_level)
    if config.appinsights_connection_string:
        # Imported only when used: the exporter costs about half a second of cold start.
        from shared.adapters import telemetry

        telemetry.send_events(config.appinsights_connection_string)


def bridge() -> Bridge:
    """The process's Bridge, built from the app settings on first use."""
    global _bridge  # one composition root per process, by design
    if _bridge is None:
        _bridge = Bridge(settings())
    return _bridge
