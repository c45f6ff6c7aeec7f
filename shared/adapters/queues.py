"""WorkQueue on Azure Storage queues (azure-storage-queue, async), base64 like the Functions host."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.adapters.tables import storage_transport, translate
from shared.errors import InvalidInput, PermissionDenied
from shared.services.ports import JsonObject, PoisonMessage
from shared.topology import Queue

log = logging.getLogger(__name__)

# The Functions queue trigger expects base64 by default (host.json messageEncoding), and a message
# holds 64 KiB (https://learn.microsoft.com/azure/storage/queues/storage-queues-introduction).
MAX_MESSAGE_BYTES = 64 * 1024
# Visibility timeouts may be up to 7 days.
MAX_DELAY_SECONDS = 7 * 24 * 3600
DATA_ROLE = "Storage Queue Data Contributor"
#: Messages one peek or receive returns at most
#: (https://learn.microsoft.com/rest/api/storageservices/peek-messages).
PEEK_MAX = 32
#: How long a received poison message stays hidden while it is replayed or dropped.
TAKE_SECONDS = 60


class StorageWorkQueue:
    """shared.services.ports.WorkQueue on one storage account."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._clients: dict[Queue, QueueClient] = {}

    @classmethod
    def from_connection_string(cls, connection_string: str) -> StorageWorkQueue:
        """For Azurite and for accounts that still allow shared keys."""
        return cls(QueueServiceClient.from_connection_string(connection_string, transport=storage_transport()))

    @classmethod
    def from_account(cls, url: str, credential: AsyncTokenCredential) -> StorageWorkQueue:
        """Identity-based access (the app's managed identity) to the queue service at `url`."""
        return cls(QueueServiceClient(account_url=url, credential=credential, transport=storage_transport()))

    async def _client(self, queue: Queue) -> QueueClient:
        client = self._clients.get(queue)
        if client is None:
            client = self._service.get_queue_client(queue.value, message_encode_policy=TextBase64EncodePolicy())
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            except Exception as exc:
                err = translate(exc, f"queue {queue.value}")
                if isinstance(err, PermissionDenied):
                    raise PermissionDenied(f"storage refused queue {queue.value}: grant the app's identity "
                                           f"'{DATA_ROLE}'", role=DATA_ROLE) from None
                raise err from None
            self._clients[queue] = client
        return client

    async def send(self, queue: Queue, message: JsonObject, *, delay_seconds: float = 0) -> None:
        """Enqueue one JSON message, visible after `delay_seconds` (whole seconds, at most 7 days)."""
        text = json.dumps(message, separators=(",", ":"))
        # base64 grows the payload by a third; check what the service will actually receive.
        if (len(text.encode()) + 2) // 3 * 4 > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"a message for {queue.value} is {len(text)} bytes before base64; the queue holds "
                               f"{MAX_MESSAGE_BYTES} bytes after encoding", field="message")
        delay = int(min(max(delay_seconds, 0), MAX_DELAY_SECONDS))
        client = await self._client(queue)
        try:
            await client.send_message(text, visibility_timeout=delay or None)
        except Exception as exc:
            raise translate(exc, f"queue {queue.value}") from None

    def _poison_client(self, queue: Queue) -> QueueClient:
        # No encode policy: a poison message goes back to its queue byte for byte, as the host moved it.
        return self._service.get_queue_client(queue.poison)

    async def poison_messages(self, queue: Queue) -> tuple[list[PoisonMessage], int]:
        """shared.services.ports.PoisonQueues.poison_messages: a peek of the first 32, and the count."""
        client = self._poison_client(queue)
        try:
            properties = await client.get_queue_properties()
            peeked = await client.peek_messages(max_messages=PEEK_MAX)
        except ResourceNotFoundError:
            return [], 0
        except Exception as exc:
            raise translate(exc, f"queue {queue.poison}") from None
        return [_poison_message(m.id, m.inserted_on, m.dequeue_count or 0, m.content) for m in peeked], \
            int(properties.approximate_message_count or 0)

    async def take_poison(self, queue: Queue, ids: set[str] | None, *, replay: bool) -> list[PoisonMessage]:
        """shared.services.ports.PoisonQueues.take_poison: receive, copy back when replaying, delete."""
        poison = self._poison_client(queue)
        target = self._service.get_queue_client(queue.value)
        handled: list[PoisonMessage] = []
        passed: list[Any] = []
        try:
            while True:
                batch = [m async for m in poison.receive_messages(max_messages=PEEK_MAX,
                                                                 visibility_timeout=TAKE_SECONDS)]
                if not batch:
                    break
                for message in batch:
                    if ids is not None and message.id not in ids:
                        passed.append(message)
                        continue
                    if replay:
                        await target.send_message(message.content)
                    await poison.delete_message(message)
                    handled.append(_poison_message(message.id, message.inserted_on, message.dequeue_count or 0,
                                                   message.content))
                if ids is not None and len(handled) == len(ids):
                    break
        except ResourceNotFoundError:
            return handled
        except Exception as exc:
            raise translate(exc, f"queue {queue.poison}") from None
        finally:
            # Messages that were not chosen become visible again at once instead of after TAKE_SECONDS.
            for message in passed:
                with contextlib.suppress(Exception):
                    await poison.update_message(message, visibility_timeout=0)
        return handled

    async def close(self) -> None:
        """Release the HTTP sessions."""
        for client in self._clients.values():
            await client.close()
        await self._service.close()


def _poison_message(message_id: str, inserted_on: Any, dequeue_count: int, content: Any) -> PoisonMessage:
    """A poison message with its JSON body decoded from base64 where it is one."""
    text = content.decode(errors="replace") if isinstance(content, bytes) else str(content or "")
    body: JsonObject | None = None
    try:
        decoded = json.loads(base64.b64decode(text, validate=True))
        body = decoded if isinstance(decoded, dict) else None
    except (binascii.Error, ValueError):
        body = None
    return PoisonMessage(id=message_id, inserted_on=inserted_on, dequeue_count=dequeue_count, body=body,
                         text=text if body is None else json.dumps(body))
