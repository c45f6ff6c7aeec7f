"""The sync queue job as one use case: a queued run of a connection, then the passkey reconcile that follows
a completed run (docs/sync.md; a run queued by a change notification, docs/notifications.md).

The connection's Graph adapters come from factories (the composition root's per-connection scope), so a
credential that cannot be built is a failed run in status, not only a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from shared.config import Connection
from shared.errors import Conflict
from shared.messages import WorkMessage
from shared.services.notifications import NotificationService
from shared.services.passkeys import PasskeyService, ReconcileReport
from shared.services.ports import DirectoryReader, PasskeyDirectory
from shared.services.sync import SyncService

log = logging.getLogger(__name__)


class SyncJobs:
    """What the sync queue worker does for one message."""

    def __init__(self, *, sync: SyncService, notifications: Callable[[], NotificationService],
                 passkeys: Callable[[], PasskeyService], reader: Callable[[Connection], Awaitable[DirectoryReader]],
                 passkey_directory: Callable[[Connection], Awaitable[PasskeyDirectory]]) -> None:
        self._sync = sync
        # Built only when a message needs them: notifications need Key Vault, passkeys the FIDO metadata.
        self._notifications = notifications
        self._passkeys = passkeys
        self._reader = reader
        self._passkey_directory = passkey_directory

    async def run(self, conn: Connection, message: WorkMessage) -> Connection | None:
        """Run the queued sync of `conn`. Returns `conn` when its passkeys are to be reconciled now (a completed
        run with passkeys on), else None. A notified run that finds another run holding the lease is sent again
        in a moment rather than after the visibility timeout; any other failure is raised."""
        notified = bool(message.args.get("notified"))
        if notified:
            await self._notifications().release(conn.name)  # a notification from now on queues the next run
        try:
            reader = await self._reader(conn)
        except Exception as exc:
            await self._sync.fail(conn, exc, run_id=message.idempotency_key, correlation_id=message.correlation_id)
            raise
        try:
            report = await self._sync.run(conn, reader, run_id=message.idempotency_key,
                                          correlation_id=message.correlation_id,
                                          dry_run=bool(message.args.get("dryRun")))
        except Conflict:
            if not notified:
                raise
            # Unless a newer notification has queued a run meanwhile (docs/notifications.md).
            await self._notifications().requeue(conn, message.model_dump(mode="json", by_alias=True),
                                                correlation_id=message.correlation_id)
            return None
        log.info("sync %s of %s: %s, added %d, updated %d, removed %d", report.run_id, conn.name, report.outcome,
                 report.added, report.updated, report.removed)
        return conn if report.outcome == "completed" and conn.features.passkeys.enabled else None

    async def reconcile_passkeys(self, conn: Connection, *, correlation_id: str) -> ReconcileReport:
        """Passkeys follow the directory: those of removed users and devices are revoked here."""
        found = await self._passkeys().reconcile(conn, await self._passkey_directory(conn),
                                                 correlation_id=correlation_id)
        log.info("passkeys of %s reconciled: %s", conn.name, found.as_dict())
        return found
