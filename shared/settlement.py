"""Outcome -> Service Bus settlement, in one small place, for every transport.

The Functions triggers pass the extension's ``ServiceBusMessageActions`` (which talks gRPC to
the Functions host and works only inside it; tests use a recording stand-in with the same three
methods); the standalone worker passes ``ReceiverActions`` over an azure-servicebus receiver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shared.envelope import InboundMessage, from_received_message
from shared.errors import MalformedMessage
from shared.verdicts import Settlement

if TYPE_CHECKING:  # the pipeline (pydantic models) loads on the first invocation, not at indexing
    from shared.pipeline import Outcome, Pipeline

log = logging.getLogger(__name__)

#: Service Bus caps DeadLetterErrorDescription at 4096 characters; keep well below it.
MAX_DESCRIPTION = 1024


class MessageActions(Protocol):
    """The settlement methods of ``azurefunctions.extensions.bindings.servicebus``'s actions."""

    def complete(self, message: Any) -> None: ...
    def abandon(self, message: Any) -> None: ...
    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None: ...


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_DESCRIPTION:
        return text
    return text[: MAX_DESCRIPTION - 3] + "..."


def settle(outcome: Outcome, message: Any, actions: MessageActions) -> None:
    """Apply one outcome: complete, dead-letter with reason and description, or abandon."""
    match outcome.settlement:
        case Settlement.COMPLETE:
            actions.complete(message)
        case Settlement.DEAD_LETTER:
            actions.deadletter(
                message,
                deadletter_reason=outcome.dead_letter_reason,
                deadletter_error_description=_short(outcome.description),
            )
        case Settlement.RETRY:
            actions.abandon(message)


class ReceiverActions:
    """MessageActions over an ``azure.servicebus.ServiceBusReceiver`` (the worker's)."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver

    def complete(self, message: Any) -> None:
        self.receiver.complete_message(message)

    def abandon(self, message: Any) -> None:
        self.receiver.abandon_message(message)

    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None:
        self.receiver.dead_letter_message(
            message, reason=deadletter_reason, error_description=deadletter_error_description
        )


def adapt_all(messages: Sequence[Any], actions: MessageActions) -> list[tuple[Any, InboundMessage]]:
    """Each SDK message with its InboundMessage; one that cannot be read is dead-lettered."""
    readable: list[tuple[Any, InboundMessage]] = []
    for message in messages:
        try:
            readable.append((message, from_received_message(message)))
        except MalformedMessage as exc:
            log.warning("message %s unreadable: %s", getattr(message, "message_id", None), exc)
            actions.deadletter(
                message,
                deadletter_reason=exc.reason.value,
                deadletter_error_description=_short(exc.description),
            )
    return readable


def settle_all(
    readable: Sequence[tuple[Any, InboundMessage]],
    outcomes: Sequence[Outcome],
    actions: MessageActions,
) -> None:
    """Settle each message by its own outcome.

    A settlement that fails (a lost lock) is logged and left to the broker: the message comes
    back and the idempotent write makes the second pass harmless.
    """
    for (message, inbound), outcome in zip(readable, outcomes, strict=True):
        try:
            settle(outcome, message, actions)
        except Exception:  # one lost lock must not stop the other settlements
            log.exception(
                "settling message %s as %s failed; the broker will redeliver it",
                inbound.message_id,
                outcome.settlement.value,
            )


def process_and_settle(
    messages: Sequence[Any], actions: MessageActions, pipeline: Callable[[], Pipeline]
) -> list[Outcome]:
    """Adapt the SDK messages, run the pipeline, and settle each by its own outcome."""
    readable = adapt_all(messages, actions)
    outcomes = pipeline().handle([inbound for _, inbound in readable]) if readable else []
    settle_all(readable, outcomes, actions)
    return outcomes
