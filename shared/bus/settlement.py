"""Outcome -> Service Bus settlement, in one small place, for every transport.

The Functions triggers pass the extension's ``ServiceBusMessageActions`` (which talks gRPC to
the Functions host and works only inside it; tests use a recording stand-in with the same three
methods); the standalone worker passes ``ReceiverActions`` over an azure-servicebus receiver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shared.errors import MalformedMessage
from shared.events.envelope import InboundMessage, from_received_message
from shared.verdicts import Settlement

if TYPE_CHECKING:  # the pipeline (pydantic models) loads on the first invocation, not at indexing
    from shared.pipeline import Outcome, Pipeline

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    def renew_message_lock(self, message: Any) -> None: ...


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

    def renew_message_lock(self, message: Any) -> None:
        self.receiver.renew_message_lock(message)


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
        _settle_or_log(outcome, message, inbound, actions)


def _settle_or_log(
    outcome: Outcome, message: Any, inbound: InboundMessage, actions: MessageActions
) -> None:
    """``settle``; a failure (a lost lock) is logged and left to the broker."""
    try:
        settle(outcome, message, actions)
    except Exception:  # one lost lock must not stop the other settlements
        log.exception(
            "settling message %s as %s failed; the broker will redeliver it",
            inbound.message_id,
            outcome.settlement.value,
        )


def _renew(message: Any, actions: MessageActions) -> None:
    """Renew one message's lock; a failure is logged (its settlement will say it too)."""
    try:
        actions.renew_message_lock(message)
    except Exception as exc:  # noqa: BLE001 - the settlement will say it too
        log.warning("renewing the lock of %s failed: %s", getattr(message, "message_id", None), exc)


#: settlements in flight at once in a Functions batch: each is a round trip to the host, which
#: answers them concurrently (a batch of 100 waited 100 round trips one after another)
SETTLE_CONCURRENCY = 16


def settle_concurrently(
    readable: Sequence[tuple[Any, InboundMessage]],
    outcomes: Sequence[Outcome],
    actions: MessageActions,
    every: float | None = None,
    concurrency: int = SETTLE_CONCURRENCY,
) -> None:
    """``settle_all``, with up to ``concurrency`` settlements in flight at once; each message
    by its own outcome (dead-letter reasons and abandons unchanged). Until the last one is
    settled, the locks of those still waiting are renewed every ``every`` seconds."""
    pairs = list(zip(readable, outcomes, strict=True))
    if len(pairs) <= 1:
        settle_all(readable, outcomes, actions)
        return
    settled: set[int] = set()

    def one(index: int) -> None:
        (message, inbound), outcome = pairs[index]
        try:
            _settle_or_log(outcome, message, inbound, actions)
        finally:
            settled.add(index)

    with ThreadPoolExecutor(min(concurrency, len(pairs)), thread_name_prefix="settle") as pool:
        futures = [pool.submit(one, index) for index in range(len(pairs))]
        while True:
            _, running = wait(futures, timeout=every)
            if not running:
                return
            for index, ((message, _), _) in enumerate(pairs):
                if index not in settled:
                    _renew(message, actions)


def run_renewing_locks(
    work: Callable[[], T], messages: Sequence[Any], actions: MessageActions, every: float | None
) -> T:
    """Run ``work`` on a helper thread; renew the messages' locks every ``every`` seconds from
    this thread until it ends.

    The Functions host renews locks only for single-message functions, never for batches
    (``cardinality=MANY``), so a batch that outlives the lock (slow store, a large body) would
    otherwise be redelivered while it is still being processed.
    """
    if every is None or not messages:
        return work()
    with ThreadPoolExecutor(1, thread_name_prefix="batch") as pool:
        future = pool.submit(work)
        while not wait([future], timeout=every).done:
            for message in messages:
                if future.done():
                    break
                _renew(message, actions)
        return future.result()


def abandon_all(messages: Sequence[Any], actions: MessageActions) -> None:
    """Abandon each message (it comes back); one failure does not stop the others."""
    for message in messages:
        try:
            actions.abandon(message)
        except Exception:  # the lock expires and the broker redelivers it
            log.exception("abandoning message %s failed", getattr(message, "message_id", None))


def process_and_settle(
    messages: Sequence[Any],
    actions: MessageActions,
    pipeline: Callable[[], Pipeline],
    renew_every: Callable[[], float] | None = None,
    concurrency: Callable[[], int] | None = None,
) -> list[Outcome]:
    """Adapt the SDK messages, run the pipeline (renewing locks while it runs), and settle each
    by its own outcome, ``concurrency()`` at a time (16 without it).

    If the service cannot run at all (a setting is invalid, the store cannot be opened), every
    readable message is abandoned explicitly, so that none waits for its lock to expire and
    none is completed; the invocation itself still succeeds, so what happens does not depend on
    what the host does after a failed invocation.
    """
    readable = adapt_all(messages, actions)
    if not readable:
        return []
    inbound = [message for _, message in readable]
    sdk_messages = [message for message, _ in readable]
    try:
        every = renew_every() if renew_every else None
        outcomes = run_renewing_locks(
            lambda: pipeline().handle(inbound), sdk_messages, actions, every
        )
    except Exception:
        log.exception(
            "the service could not process a batch of %d message(s); abandoning each so that "
            "it is redelivered",
            len(sdk_messages),
        )
        abandon_all(sdk_messages, actions)
        return []
    in_flight = concurrency() if concurrency else SETTLE_CONCURRENCY
    settle_concurrently(readable, outcomes, actions, every, in_flight)
    return outcomes
