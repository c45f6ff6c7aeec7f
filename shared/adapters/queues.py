"""WorkQueue on Azure Storage queues (azure-storage-queue, async), base64 like the Functions host."""

from __future__ import annotations

import json
import logging

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.adapters.tables import storage_transport, translate
from shared.errors import InvalidInput, PermissionDenied
from shared.services.ports import JsonObject
from shared.topology import Queue

log = logging.getLogger(__name__)

# The Functions queue trigger expects base64 by default (host.json messageEncoding), and a message
# holds 64 KiB (https://learn.microsoft.com/azure/storage/queues/storage-queues-introduction).
MAX_MESSAGE_BYTES = 64 * 1024
# Visibility timeouts may be up to 7 days.
MAX_DELAY_SECONDS = 7 * 24 * 3600
DATA_ROLE = "Storage Queue Data Contributor"


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

    async def close(self) -> None:
        """Release the HTTP sessions."""
        for client in self._clients.values():
            await client.close()
        await self._service.close()
