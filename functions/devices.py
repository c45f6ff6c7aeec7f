"""Devices and passkeys: registry routes, passkey enrollment, and the removal worker."""

from __future__ import annotations

import logging

import azure.functions as func

from functions import answers
from functions.http import ADMIN, DEVICES, Call, Plain, Reply, route
from functions.work import MAX_DEQUEUE_COUNT, job, watch_last_delivery, work_message
from shared import logs
from shared.bootstrap import bridge
from shared.services.devices import DeviceRegistration
from shared.services.passkeys import PasskeyRegistration
from shared.topology import Queue

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@route(bp, "connections/{c}/devices/{deviceId}", "PUT", roles=[DEVICES, ADMIN], body=DeviceRegistration,
       answers={200: answers.Device, 201: answers.Device})
async def put_device(call: Call[DeviceRegistration]) -> Reply:
    """Register (201) or update (200) a device of an imported, active user."""
    row, created = await bridge().devices.register(call.connection, call.params["deviceId"], call.parsed,
                                                   actor=call.actor, correlation_id=call.correlation_id)
    return Reply(201 if created else 200, row.to_row())


@route(bp, "connections/{c}/devices/{deviceId}", "GET", roles=[DEVICES, ADMIN],
       answers={200: answers.DeviceWithPasskeys})
async def get_device(call: Plain) -> Reply:
    """A device with its state and the passkeys the bridge registered for it."""
    return Reply(200, await bridge().devices.view(call.connection, call.params["deviceId"]))


@route(bp, "connections/{c}/devices/{deviceId}", "DELETE", roles=[DEVICES, ADMIN],
       answers={202: answers.RemovalQueued}, headers={"Location": "the operation to poll"})
async def delete_device(call: Plain) -> Reply:
    """Remove a device: 202 with the operation that revokes its passkeys."""
    operation = await bridge().devices.remove(call.connection, call.params["deviceId"], actor=call.actor,
                                              correlation_id=call.correlation_id)
    return Reply(202, {"operationId": operation, "status": "queued"},
                 headers={"Location": f"/api/connections/{call.connection.name}/operations/{operation}"})


@route(bp, "connections/{c}/operations/{id}", "GET", roles=[DEVICES, ADMIN], answers={200: answers.Operation})
async def get_operation(call: Plain) -> Reply:
    """Progress of a long operation."""
    return Reply(200, await bridge().devices.operation(call.connection.name, call.params["id"]))


@bp.function_name("device_work")
@bp.queue_trigger(arg_name="msg", queue_name=Queue.DEVICE.value, connection="AzureWebJobsStorage")
@watch_last_delivery(Queue.DEVICE)
async def device_work(msg: func.QueueMessage) -> None:
    """Revoke the passkeys of a removed device."""
    message = work_message(msg)
    app = bridge()
    with logs.correlation(message.correlation_id):
        async with job("device_work", message.connection, message.correlation_id, queue=True):
            await app.devices.run_removal(app.connection(message.connection), app.passkey_directory, message,
                                          last_delivery=(msg.dequeue_count or 1) >= MAX_DEQUEUE_COUNT)


@route(bp, "connections/{c}/devices/{deviceId}/passkeys/options", "POST", roles=[DEVICES, ADMIN],
       answers={200: answers.PasskeyOptions})
async def passkey_options(call: Plain) -> Reply:
    """WebAuthn creation options from Entra for the device's user, with a ceremony id."""
    app = bridge()
    scope = await app.scope(call.connection)
    return Reply(200, await app.passkeys.options(scope.conn, scope.passkey_directory, call.params["deviceId"],
                                                 correlation_id=call.correlation_id))


@route(bp, "connections/{c}/devices/{deviceId}/passkeys", "POST", roles=[DEVICES, ADMIN], body=PasskeyRegistration,
       answers={201: answers.PasskeyRegistered})
async def register_passkey(call: Call[PasskeyRegistration]) -> Reply:
    """Verify the attestation locally, then register the passkey in Entra (201); under policy `optional` a
    refused passkey is a `passkey-skipped` problem and the device is enrolled without one."""
    app = bridge()
    scope = await app.scope(call.connection)
    return Reply(201, await app.enrollment.register(scope.conn, scope.passkey_directory, call.params["deviceId"],
                                                    call.parsed, correlation_id=call.correlation_id))


@route(bp, "connections/{c}/devices/{deviceId}/passkeys/{passkeyId}", "DELETE", roles=[DEVICES, ADMIN],
       answers={204: None})
async def revoke_passkey(call: Plain) -> Reply:
    """Revoke one passkey of a device in Entra (204; already gone counts as done)."""
    app = bridge()
    scope = await app.scope(call.connection)
    await app.devices.revoke_passkey(scope.conn, scope.passkey_directory, call.params["deviceId"],
                                     call.params["passkeyId"], actor=call.actor, correlation_id=call.correlation_id)
    return Reply(204)
