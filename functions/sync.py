"""Sync: the timer that queues a run per connection, the worker, and the operators' routes."""

from __future__ import annotations

import logging

import azure.functions as func

from functions import answers
from functions.http import ADMIN, Plain, Reply, route
from functions.work import each_connection, job, watch_last_delivery, work_message
from shared import logs
from shared.bootstrap import bridge
from shared.config import Connection
from shared.services.users import UserFilter
from shared.topology import Queue

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("sync_timer")
@bp.timer_trigger(arg_name="timer", schedule="%SYNC_SCHEDULE%", run_on_startup=False)
async def sync_timer(timer: func.TimerRequest) -> None:
    """Queue one sync run per connection with sync enabled; the work happens in sync_work."""
    async def queue(conn: Connection, correlation_id: str) -> None:
        run_id = await bridge().sync.request(conn, actor="sync_timer", correlation_id=correlation_id)
        log.info("sync of %s queued as %s", conn.name, run_id)

    await each_connection("sync_timer", queue, wanted=lambda conn: conn.features.sync.enabled)


@bp.function_name("sync_work")
@bp.queue_trigger(arg_name="msg", queue_name=Queue.SYNC.value, connection="AzureWebJobsStorage")
@watch_last_delivery(Queue.SYNC)
async def sync_work(msg: func.QueueMessage) -> None:
    """Run one sync of a connection."""
    message = work_message(msg)
    app, reconcile = bridge(), None
    with logs.correlation(message.correlation_id):
        # The run records its own outcome and problem (lastRun); a failure is raised again only if worth retrying.
        async with job("sync_work", message.connection, message.correlation_id, queue=True, record=False):
            reconcile = await app.sync_jobs.run(app.connection(message.connection), message)
        if reconcile is not None:
            async with job("passkey_reconcile", reconcile.name, message.correlation_id, queue=True):
                await app.sync_jobs.reconcile_passkeys(reconcile, correlation_id=message.correlation_id)


@route(bp, "connections/{c}/sync", "POST", roles=[ADMIN], query=answers.SyncQuery, answers={202: answers.SyncQueued})
async def start_sync(call: Plain) -> Reply:
    """Queue a sync now: 202 with the run id (`?dryRun=true` plans without writing)."""
    dry_run = bool(answers.SyncQuery.model_validate(call.query).dry_run)
    run_id = await bridge().sync.request(call.connection, actor=call.actor, correlation_id=call.correlation_id,
                                         dry_run=dry_run)
    return Reply(202, {"runId": run_id, "status": "queued", "dryRun": dry_run})


@route(bp, "connections/{c}/enrollment-groups/uninstall", "POST", roles=[ADMIN], query=answers.SyncQuery,
       answers={200: answers.GroupsUninstalled})
async def uninstall_enrollment_groups(call: Plain) -> Reply:
    """Delete the enrollment-state groups the bridge owns in Entra, naming the adopted ones it left
    (`?dryRun=true` lists what would be deleted)."""
    scope = await bridge().scope(call.connection)
    report = await scope.app.enrollment_groups.uninstall(
        scope.conn, scope.directory_reader(), actor=call.actor, correlation_id=call.correlation_id,
        dry_run=bool(answers.SyncQuery.model_validate(call.query).dry_run))
    return Reply(200, report.answer(scope.conn))


@route(bp, "connections/{c}/users", "GET", roles=[ADMIN], query=answers.UsersQuery, answers={200: answers.UserPage})
async def list_users(call: Plain) -> Reply:
    """Imported users: filters `state`, `enrollment`, `inRotationGroup`, `q` (UPN prefix); paging by `skip`."""
    query = answers.UsersQuery.model_validate(call.query)
    flt = UserFilter(state=query.state, enrollment=query.enrollment, in_rotation_group=query.in_rotation_group,
                     prefix=query.q or "")
    return Reply(200, await bridge().users.page(call.connection.name, flt, top=query.top, skip=query.skip))


@route(bp, "connections/{c}/users/{id}", "GET", roles=[ADMIN], answers={200: answers.UserWithRotation})
async def get_user(call: Plain) -> Reply:
    """One imported user with its rotation status (never a password)."""
    return Reply(200, await bridge().users.user(call.connection, call.params["id"]))
