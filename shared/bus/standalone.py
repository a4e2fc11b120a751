"""Service Bus outside Azure Functions: the standalone worker, the publisher, the DLQ tools.

All use the real ``azure-servicebus`` SDK (imported only here, only when used) with either a
connection string or a fully qualified namespace and ``DefaultAzureCredential``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)

from shared.bus.batch_settlement import settle_batch
from shared.bus.overlap import Mode, OverlapChooser
from shared.bus.settlement import ReceiverActions, adapt_all, settle_all
from shared.events.envelope import InboundMessage
from shared.pipeline import Outcome, Pipeline
from shared.settings import Settings, connection_string_value
from shared.verdicts import Settlement, Verdict

log = logging.getLogger(__name__)
DEAD_LETTER_PROPERTIES = {"DeadLetterReason", "DeadLetterErrorDescription"}


@dataclass(frozen=True)
class Source:
    """A queue, or a topic with (for receiving) one of its subscriptions."""

    queue: str | None = None
    topic: str | None = None
    subscription: str | None = None

    def __post_init__(self) -> None:
        if bool(self.queue) == bool(self.topic):
            raise ValueError("name either a queue or a topic")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        queue: str | None = None,
        topic: str | None = None,
        subscription: str | None = None,
    ) -> Source:
        """Explicit names first, then PROCESS_SESSION_QUEUE / _TOPIC / _SUBSCRIPTION."""
        if queue or topic:
            return cls(queue, topic, subscription or settings.process_session_subscription)
        if settings.process_session_queue:
            return cls(queue=settings.process_session_queue)
        return cls(None, settings.process_session_topic, settings.process_session_subscription)

    def __str__(self) -> str:
        if self.queue:
            return f"queue {self.queue}"
        return f"topic {self.topic}" + (f" / {self.subscription}" if self.subscription else "")

    def receiver(
        self, client: ServiceBusClient, *, dead_letter: bool = False, prefetch: int = 0
    ) -> Any:
        """A PEEK_LOCK receiver on the entity (or its dead-letter sub-queue)."""
        sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead_letter else None
        mode = ServiceBusReceiveMode.PEEK_LOCK
        if self.queue:
            return client.get_queue_receiver(
                self.queue, sub_queue=sub_queue, receive_mode=mode, prefetch_count=prefetch
            )
        if not self.subscription:
            raise ValueError("receiving from a topic needs a subscription")
        return client.get_subscription_receiver(
            str(self.topic),
            self.subscription,
            sub_queue=sub_queue,
            receive_mode=mode,
            prefetch_count=prefetch,
        )

    def sender(self, client: ServiceBusClient) -> Any:
        """A sender to the queue or topic."""
        if self.queue:
            return client.get_queue_sender(self.queue)
        return client.get_topic_sender(str(self.topic))


#: Seconds one send may take, its retries included.
SEND_TIMEOUT = 30.0
#: The SDK's retries: a few, with a short ceiling, so that one call stays within seconds.
CLIENT_RETRY = {"retry_total": 3, "retry_backoff_factor": 0.5, "retry_backoff_max": 8.0}


def build_client(settings: Settings, **options: Any) -> ServiceBusClient:
    """A client from a connection string (local broker, development) or a namespace with
    ``DefaultAzureCredential`` (managed identity; the production default); the SDK's retries
    are bounded (``CLIENT_RETRY``) and every send has a timeout (``SEND_TIMEOUT``)."""
    options = {**CLIENT_RETRY, **options}
    secret = settings.servicebus_connection_string
    if secret is not None:
        return ServiceBusClient.from_connection_string(secret.get_secret_value(), **options)
    if settings.servicebus_namespace:
        from azure.identity import DefaultAzureCredential

        return ServiceBusClient(settings.servicebus_namespace, DefaultAzureCredential(), **options)
    raise ValueError("set SERVICEBUS_CONNECTION_STRING or SERVICEBUS_FULLY_QUALIFIED_NAMESPACE")


def namespace_of(settings: Settings) -> str:
    """The namespace the settings point at, for messages: the host only, never a key."""
    if settings.servicebus_namespace:
        return settings.servicebus_namespace
    secret = settings.servicebus_connection_string
    endpoint = connection_string_value(secret.get_secret_value() if secret else None, "Endpoint")
    return endpoint.removeprefix("sb://").rstrip("/") if endpoint else "(no namespace set)"


def describe_error(exc: Exception, settings: Settings, source: Source | None) -> str | None:
    """One line for a Service Bus failure: where, what, and what to check; None when ``exc``
    is not a Service Bus error."""
    from azure.servicebus.exceptions import (
        MessagingEntityNotFoundError,
        ServiceBusAuthenticationError,
        ServiceBusAuthorizationError,
        ServiceBusConnectionError,
        ServiceBusError,
    )

    if not isinstance(exc, ServiceBusError):
        return None
    where = f"{source} on {namespace_of(settings)}" if source else namespace_of(settings)
    if isinstance(
        exc,
        ServiceBusAuthenticationError | ServiceBusAuthorizationError | MessagingEntityNotFoundError,
    ):
        hint = (
            "the entity does not exist there, or this identity or SAS rule may not use it "
            "(Azure Service Bus Data Receiver to receive, Data Sender to send): check the name "
            "(--queue/--topic, PROCESS_SESSION_*) and the role"
        )
    elif isinstance(exc, ServiceBusConnectionError):
        hint = (
            "no answer: check the namespace (SERVICEBUS_FULLY_QUALIFIED_NAMESPACE, or the "
            "connection string's Endpoint) and that AMQP (port 5671) is open from here"
        )
    else:
        hint = str(exc).splitlines()[0][:200]
    return f"Service Bus {where}: {type(exc).__name__}: {hint}"


#: Outcomes a worker keeps for its report: the most recent ones only, so that its memory stays
#: flat however long it runs (counts cover every message).
RECENT_OUTCOMES = 1000
#: Seconds the worker waits for the next batch while one is being decided: the receive's
#: round trip overlaps the work, and a sparse queue does not delay the settlement.
OVERLAP_WAIT = 0.05


@dataclass
class WorkerStats:
    """What a worker run did: counts of every message, and its most recent outcomes."""

    batches: int = 0
    messages: int = 0
    verdicts: Counter[Verdict] = field(default_factory=Counter)
    settlements: Counter[Settlement] = field(default_factory=Counter)
    recent: deque[Outcome] = field(default_factory=lambda: deque(maxlen=RECENT_OUTCOMES))

    @property
    def outcomes(self) -> list[Outcome]:
        """The most recent outcomes (at most ``RECENT_OUTCOMES``), oldest first."""
        return list(self.recent)

    def add(self, outcomes: list[Outcome]) -> None:
        self.messages += len(outcomes)
        self.verdicts.update(o.decision.verdict for o in outcomes)
        self.settlements.update(o.settlement for o in outcomes)
        self.recent.extend(_slim(o) for o in outcomes)


def _slim(outcome: Outcome) -> Outcome:
    """What the report shows of an outcome (ids, verdict, reason, settlement, description),
    without the body, the properties or the entry's changes: a full window of them held
    about 30 MiB."""
    message, decision = outcome.message, outcome.decision
    entry = decision.entry.model_copy(update={"changes": []}) if decision.entry else None
    return replace(
        outcome,
        message=replace(message, body=b"", application_properties={}),
        decision=replace(decision, entry=entry, pending=None),
    )


def _batch_line(outcomes: list[Outcome]) -> str:
    """``3 messages: 2 accepted, 1 rejected; 3 completed`` (counts by verdict, settlement)."""
    verdicts = Counter(o.decision.verdict.value for o in outcomes)
    settled = Counter(o.settlement.value for o in outcomes)
    by_verdict = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    by_settlement = ", ".join(f"{n} {s}" for s, n in sorted(settled.items()))
    return f"{len(outcomes)} message(s): {by_verdict}; {by_settlement}"


class Worker:
    """Receive in PEEK_LOCK, run the pipeline per batch, settle each message by its outcome.

    While one batch is decided and stored (on the pipeline's thread), the next can be
    received, and decided while the one before is settled: the broker's and the store's round
    trips then overlap the work; batches are still settled in the order received. Whether it
    does is measured as it runs (``shared.bus.overlap``): where nothing waits, one batch at a
    time is faster. The locks of every message held are renewed while a batch is decided.
    ``stop`` is checked between
    batches: every batch in hand is settled before the receiver closes (the SDK then
    releases prefetched messages unharmed), so a stop never strands a locked message.
    Completions go to the broker in one disposition per run of consecutive messages where the
    SDK allows it (``shared.bus.batch_settlement``), else one by one, as they do for good once the
    broker leaves a range unanswered.
    """

    def __init__(
        self,
        client: ServiceBusClient,
        pipeline: Pipeline,
        source: Source,
        *,
        batch_size: int = 32,
        max_wait_time: float = 1.0,
        settle_in_ranges: bool = True,
        overlap: Mode = "measured",
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self.source = source
        self.batch_size = batch_size
        self.max_wait_time = max_wait_time
        #: Complete consecutive messages in one disposition (shared.bus.batch_settlement); False
        #: settles each through the SDK's public API (what the benchmark compares against).
        self.settle_in_ranges = settle_in_ranges
        #: Receive the next batch while one is decided: when that is measured faster, always,
        #: or never (one batch at a time, what the benchmark compares against).
        self.overlap = overlap

    def run(
        self,
        stop: threading.Event | None = None,
        until_idle: bool = False,
        max_messages: int | None = None,
    ) -> WorkerStats:
        """Process until ``stop`` is set (or, with ``until_idle``, until a receive is empty;
        with ``max_messages``, once that many were received, never receiving more)."""
        stop = stop or threading.Event()
        stats = WorkerStats()
        with (
            ThreadPoolExecutor(1, thread_name_prefix="pipeline") as pool,
            self.source.receiver(self.client) as receiver,
        ):
            actions = ReceiverActions(receiver)
            in_ranges = self.settle_in_ranges
            received = 0  # unreadable ones included, which make no outcome
            chooser = OverlapChooser(self.overlap)
            #: the batch being decided and stored on the pipeline's thread, and its work
            pending: tuple[list[tuple[Any, InboundMessage]], Future[list[Outcome]]] | None = None
            while True:
                wanted = self.batch_size
                if max_messages is not None:
                    wanted = min(wanted, max_messages - received)
                batch: list[Any] = []
                idle = pending is None  # an empty receive of the full wait: the queue is idle
                if not stop.is_set() and wanted > 0 and (pending is None or chooser.overlap()):
                    # While a batch is decided, the next is received (its round trip overlaps
                    # the work); a short wait then, so a sparse queue does not hold it back.
                    wait_time = self.max_wait_time if pending is None else OVERLAP_WAIT
                    batch = receiver.receive_messages(
                        max_message_count=wanted, max_wait_time=min(wait_time, self.max_wait_time)
                    )
                    received += len(batch)
                readable = adapt_all(batch, actions) if batch else []
                if batch:
                    stats.batches += 1
                if pending is not None:
                    held, decided = pending
                    self._keep_locks(receiver, [m for m, _ in held + readable], decided)
                    outcomes = decided.result()
                    pending = None
                    if batch:  # decided while the one before is settled
                        pending = (readable, self._decide(pool, readable, stop))
                    if in_ranges:
                        in_ranges = settle_batch(receiver, held, outcomes, actions)
                    else:
                        settle_all(held, outcomes, actions)
                    stats.add(outcomes)
                    chooser.settled(len(held))
                    log.info(
                        "batch %d from %s: %s",
                        stats.batches - (pending is not None),
                        self.source,
                        _batch_line(outcomes),
                    )
                elif batch:
                    pending = (readable, self._decide(pool, readable, stop))
                if pending is None and not batch and (stop.is_set() or wanted <= 0):
                    break
                if pending is None and not batch and until_idle and idle:
                    break
        log.info("worker on %s stopped after %d batch(es)", self.source, stats.batches)
        return stats

    def _decide(
        self,
        pool: ThreadPoolExecutor,
        readable: list[tuple[Any, InboundMessage]],
        stop: threading.Event,
    ) -> Future[list[Outcome]]:
        return pool.submit(self.pipeline.handle, [message for _, message in readable], stop)

    def _keep_locks(self, receiver: Any, messages: list[Any], work: Future[Any]) -> None:
        """Renew the batch's locks for as long as the pipeline works on it (its store calls
        are bounded by the retry budget and the stop signal, so this ends).

        Renewal runs on this thread, the receiver's own: the SDK's connection is not safe for
        concurrent use (AutoLockRenewer's threads interleave frames on the session).
        """
        if not messages:
            return
        windows = {id(m): _remaining(m) for m in messages}
        while not work.done():
            wait([work], timeout=0.2)
            for message in messages:
                if work.done():
                    return
                if _remaining(message) < 0.4 * windows[id(message)]:
                    try:
                        receiver.renew_message_lock(message)
                    except Exception as exc:  # noqa: BLE001 - the settlement will say it too
                        log.warning("renewing the lock of %s failed: %s", message.message_id, exc)


def _remaining(message: Any) -> float:
    """Seconds left on a message's lock."""
    locked_until = message.locked_until_utc
    if locked_until is None:
        return float("inf")
    return float((locked_until - datetime.now(UTC)).total_seconds())


def to_servicebus_message(message: InboundMessage) -> ServiceBusMessage:
    """A message as Dataverse would post it: body, content type, ids, claims properties."""
    return ServiceBusMessage(
        message.body,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        application_properties=_properties(message.application_properties),
    )


def _properties(properties: Mapping[str, Any]) -> dict[str | bytes, Any] | None:
    return {key: value for key, value in properties.items()} or None


def send(client: ServiceBusClient, source: Source, messages: Iterable[InboundMessage]) -> int:
    """Post messages to a queue or topic; returns how many were sent."""
    count = 0
    with source.sender(client) as sender:
        for message in messages:
            sender.send_messages(to_servicebus_message(message), timeout=SEND_TIMEOUT)
            count += 1
    return count


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def dead_letter_properties(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    """Application properties with str keys, less the dead-letter reason and description."""
    return {
        _text(k): _text(v)
        for k, v in (message.application_properties or {}).items()
        if _text(k) not in DEAD_LETTER_PROPERTIES
    }


def peek_dead_letters(
    client: ServiceBusClient, source: Source, limit: int = 100
) -> list[ServiceBusReceivedMessage]:
    """Up to ``limit`` dead-lettered messages, oldest first, left where they are."""
    found: list[ServiceBusReceivedMessage] = []
    with source.receiver(client, dead_letter=True) as receiver:
        next_sequence = 0
        while len(found) < limit:
            page = receiver.peek_messages(
                max_message_count=min(100, limit - len(found)), sequence_number=next_sequence
            )
            if not page:
                break
            found += page
            next_sequence = page[-1].sequence_number + 1
    return found


@dataclass
class Replay:
    """One dead-lettered message and what replay did with it."""

    message_id: str | None
    reason: str | None
    replayed: bool


def replay_dead_letters(
    client: ServiceBusClient,
    source: Source,
    *,
    reason: str | None = None,
    dry_run: bool = False,
    limit: int = 1000,
) -> list[Replay]:
    """Re-send dead-lettered messages (body and properties unchanged) to the main entity, and
    complete each from the DLQ only after its re-send succeeded. With ``reason``, only those
    dead-lettered for it; others stay in the DLQ. ``dry_run`` only reports."""
    if dry_run:
        return [
            Replay(
                m.message_id, m.dead_letter_reason, reason is None or m.dead_letter_reason == reason
            )
            for m in peek_dead_letters(client, source, limit)
        ]
    report: list[Replay] = []
    held: list[ServiceBusReceivedMessage] = []
    target = Source(source.queue, source.topic)
    with source.receiver(client, dead_letter=True) as receiver, target.sender(client) as sender:
        while len(report) < limit:
            batch = receiver.receive_messages(
                max_message_count=min(50, limit - len(report)), max_wait_time=2
            )
            if not batch:
                break
            for message in batch:
                wanted = reason is None or message.dead_letter_reason == reason
                if wanted:
                    sender.send_messages(
                        ServiceBusMessage(
                            b"".join(message.body),
                            content_type=message.content_type,
                            message_id=message.message_id,
                            correlation_id=message.correlation_id,
                            subject=message.subject,
                            application_properties=_properties(dead_letter_properties(message)),
                        ),
                        timeout=SEND_TIMEOUT,
                    )
                    receiver.complete_message(message)
                else:
                    held.append(message)  # keep its lock so it is not received again
                report.append(Replay(message.message_id, message.dead_letter_reason, wanted))
        for message in held:
            receiver.abandon_message(message)
    return report
