"""The first invocation of the queue trigger, as the host would make it after indexing."""

from __future__ import annotations

from typing import Any

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus._pyamqp.message import Message, Properties  # private: SDK pinned <8

from bench.corpus import messages


class _Actions:
    def complete(self, message: Any) -> None: ...
    def abandon(self, message: Any) -> None: ...
    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None: ...


def first_call() -> None:
    from functions.process_session import process_session_queue

    sample = next(messages(1))
    message = ServiceBusReceivedMessage(
        Message(
            data=[sample.body],
            properties=Properties(message_id=sample.message_id, content_type=sample.content_type),
        ),
        receiver=None,
    )
    process_session_queue([message], _Actions())
