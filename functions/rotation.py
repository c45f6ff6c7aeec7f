"""Rotation: the timer that finds due users, the queue worker, manual rotation, and device delivery."""

from __future__ import annotations

import logging

import azure.functions as func

from functions import answers
from functions.http import ADMIN, Plain, Reply, route
from functions.work import MAX_DEQUEUE_COUNT, each_connection, job, watch_last_delivery, work_message
from shared import logs
from shared.bootstrap import bridge
from shared.config import Connection
from shared.topology import Queue

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("rotation_timer")
@bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SCHEDULE%", run_on_startup=False)
async def rotation_timer(timer: func.TimerRequest) -> None:
    """Enqueue every due user of every connection with rotation enabled; no per-user work here."""
    async def plan(conn: Connection, correlation_id: str) -> None:
        count = await bridge().rotation.plan(conn, correlation_id=correlation_id)
        log.info("rotation: %d users of %s due %s", count, conn.name, "(timer past due)" if timer.past_due else "")

    await each_connection("rotation_timer", plan, wanted=lambda conn: conn.features.rotation.enabled)


@bp.function_name("rotation_work")
@bp.queue_trigger(arg_name="msg", queue_name=Queue.ROTATION.value, connection="AzureWebJobsStorage")
@watch_last_delivery(Queue.ROTATION)
async def rotation_work(msg: func.QueueMessage) -> None:
    """Rotate one user; failures are raised so the host retries, then poisons after maxDequeueCount."""
    message = work_message(msg)
    app = bridge()
    with logs.correlation(message.correlation_id):
        # A failure before the rotation starts (its Graph client or credential) is kept in status; the rotation
        # records its own outcome per user.
        async with job("rotation_work", message.connection, message.correlation_id, queue=True):
            scope = await app.scope(message.connection)
            outcome = await app.rotation.handle(scope.conn, scope.password_directory, message,
                                                dequeue_count=msg.dequeue_count or 1,
                                                max_dequeue_count=MAX_DEQUEUE_COUNT)
            if outcome is not None:
                log.info("rotation of %s: %s %s", outcome.user_id, outcome.status.value,
                         f"({outcome.reason})" if outcome.reason else "")


@route(bp, "connections/{c}/users/{id}/rotate", "POST", roles=[ADMIN], answers={202: answers.RotationQueued})
async def rotate_user(call: Plain) -> Reply:
    """Rotate one user now (202 with the rotation id), unless the minimum interval has not passed."""
    rotation_id = await bridge().rotation.request(call.connection, call.params["id"], actor=call.actor,
                                                  correlation_id=call.correlation_id)
    return Reply(202, {"rotationId": rotation_id, "status": "queued"})


@route(bp, "delivery/connections/{c}/devices/{deviceId}/password", "GET", roles=(),
       auth_level=func.AuthLevel.ANONYMOUS, answers={200: answers.DeliveredPassword},
       headers={"Cache-Control": "no-store"})
async def device_password(call: Plain) -> Reply:
    """The current password of the device's user, for a request signed by the device's registered key."""
    delivered = await bridge().delivery.deliver(call.connection, call.params["deviceId"],
                                                authorization=call.header("authorization"), url=call.url,
                                                correlation_id=call.correlation_id)
    logs.register_secret(delivered.password)
    for _, value in delivered.possibly_current:
        logs.register_secret(value)
    return Reply(200, {"password": delivered.password, "version": delivered.version,
                       "rotatedAt": delivered.rotated_at,
                       "possiblyCurrent": [{"version": v, "password": p} for v, p in delivered.possibly_current]},
                 headers={"Cache-Control": "no-store"})
