"""Queue messages: one envelope for every work queue (docs/architecture.md, Runtime topology)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.config import SLUG
from shared.errors import InvalidInput

# A Storage queue message holds 64 KiB; base64 costs a third, so the JSON must stay under 48 KiB.
MAX_MESSAGE_JSON_BYTES = 48 * 1024


class WorkMessage(BaseModel):
    """A unit of work: which connection, what kind, on which target, and how to recognise a replay."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    connection: Annotated[str, Field(pattern=SLUG)]
    kind: Annotated[str, Field(min_length=1, max_length=64)]
    target: Annotated[str, Field(min_length=1, max_length=256)]
    idempotency_key: Annotated[str, Field(alias="idempotencyKey", min_length=1, max_length=128)]
    correlation_id: Annotated[str, Field(alias="correlationId", min_length=1, max_length=128)] = Field(
        default_factory=lambda: str(uuid.uuid4()))
    #: Kind-specific, non-secret parameters.
    args: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        """The message body, checked against the queue's size limit."""
        text = self.model_dump_json(by_alias=True)
        if len(text.encode()) > MAX_MESSAGE_JSON_BYTES:
            raise InvalidInput(f"queue message for {self.kind} is {len(text)} bytes; the limit is "
                               f"{MAX_MESSAGE_JSON_BYTES}", field="args")
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkMessage:
        """Parse a message body; InvalidInput names what is wrong."""
        try:
            return cls.model_validate(json.loads(text))
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"malformed work message: {str(exc).splitlines()[0]}") from None
