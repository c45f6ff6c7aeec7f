"""The composition root: the one place that turns settings into adapters and services.

Everything is built lazily, once per process: the first function that needs Key Vault builds the
vault client, the first call for a connection builds its Graph gateway. Functions ask `bridge()` for
what they need; tests build a `Bridge` from their own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from shared.adapters import identity
from shared.adapters.audit import AuditReader, TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.directory import GraphDirectoryReader
from shared.adapters.graph import GraphGateway, SystemClock, ThrottleGovernor
from shared.adapters.passkeys import GraphPasskeyDirectory
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.rotation import GraphPasswordDirectory
from shared.adapters.tables import TableEntityStore
from shared.adapters.vault import KeyVaultSecretStore
from shared.config import Cloud, Connection, Settings, settings
from shared.errors import Configuration, NotFound
from shared.services.audit import AuditQuery
from shared.services.connections import CertificateValidator
from shared.services.delivery import PasswordDelivery
from shared.services.devices import DeviceService
from shared.services.directory import Directory, RotationSubjects
from shared.services.passkeys import PasskeyService
from shared.services.ports import Clock
from shared.services.rotation import RotationService
from shared.services.sync import SyncService

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
            if self.settings.storage_account_name:
                return TableEntityStore.from_account(self.settings.storage_account_name, self.app_credential)
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
            if self.settings.storage_account_name:
                return StorageWorkQueue.from_account(self.settings.storage_account_name, self.app_credential)
            raise Configuration("no storage configured: set AzureWebJobsStorage or AzureWebJobsStorage__accountName",
                                setting="AzureWebJobsStorage")
        queue: StorageWorkQueue = self._once("queue", build)
        return queue

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
                                   clock=self.clock, subjects=RotationSubjects(self.directory))
        service: RotationService = self._once("rotation", build)
        return service

    @property
    def devices(self) -> DeviceService:
        """The device registry."""
        def build() -> DeviceService:
            return DeviceService(directory=self.directory, entities=self.entities, audit=self.audit,
                                 queue=self.queue, clock=self.clock)
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
                                  audit=self.audit, clock=self.clock)
        service: PasskeyService = self._once("passkeys", build)
        return service

    @property
    def sync(self) -> SyncService:
        """User and group sync."""
        def build() -> SyncService:
            return SyncService(directory=self.directory, entities=self.entities, audit=self.audit, queue=self.queue,
                               clock=self.clock, secrets=self.secrets if self.settings.key_vault_url else None)
        service: SyncService = self._once("sync", build)
        return service

    async def directory_reader(self, conn: Connection) -> GraphDirectoryReader:
        """A fresh reader (it counts the resource units of one run)."""
        return GraphDirectoryReader(await self.graph(conn))

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
        for key in ("secrets", "entities", "queue", "app_credential"):
            client = self._cache.get(key)
            if client is not None and hasattr(client, "close"):
                with contextlib.suppress(Exception):
                    await client.close()
        self._cache.clear()
        self._graphs.clear()


_bridge: Bridge | None = None


def bridge() -> Bridge:
    """The process's Bridge, built from the app settings on first use."""
    global _bridge  # one composition root per process, by design
    if _bridge is None:
        _bridge = Bridge(settings())
        if _bridge.settings.appinsights_connection_string:
            # Imported only when used: the exporter costs about half a second of cold start.
            from shared.adapters import telemetry

            telemetry.send_audit_events(_bridge.settings.appinsights_connection_string)
    return _bridge
