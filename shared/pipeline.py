"""handle(): decode -> judge -> record -> store -> outcome, for a batch of messages.

Each step is a plain function; the transport only builds ``InboundMessage`` values before and
applies each outcome's ``settlement`` after. The one promise: a message whose entry is not
durably stored is never settled as complete; it is retried (the broker redelivers it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

from shared.dataverse import Limits, RemoteExecutionContext, decode
from shared.errors import MalformedMessage, StoreRejected, TransientError
from shared.events.entry import AuditEntry, build_entry
from shared.events.envelope import InboundMessage
from shared.events.rules import judge
from shared.settings import Settings
from shared.stores.base import AuditStore, ConflictingDuplicates
from shared.telemetry import Telemetry
from shared.verdicts import Reason, Settlement, Verdict

if TYPE_CHECKING:
    from shared.trail.resolver import RegardingResolver

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Policy:
    """What the pipeline enforces beyond the wire format."""

    limits: Limits = Limits()
    allowed_organization_ids: frozenset[UUID] = frozenset()
    redact_columns: frozenset[str] = frozenset()
    #: AUDIT_RESOLVE_REGARDING: a regarding the message lacks is read through the Web API
    resolve_regarding: bool = False
    #: AUDIT_LOOKUP_ATTEMPTS: deliveries a message gets while the Web API refuses its look-up
    #: for a reason no wait fixes (a configuration error) before it is dead-lettered
    lookup_attempts: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy the settings describe."""
        return cls(
            Limits(settings.audit_max_body_bytes, settings.audit_max_nesting_depth),
            settings.allowed_organization_ids,
            settings.audit_redact_columns,
            settings.audit_resolve_regarding,
            settings.audit_lookup_attempts,
        )


@dataclass(frozen=True, slots=True)
class StoreRetry:
    """How long a batch waits, in place, for a failing store before its messages are abandoned.

    Abandoning at once makes Service Bus redeliver at once, so a short outage would use up
    MaxDeliveryCount in seconds and fill the DLQ. Instead the write is retried with exponential
    backoff and full jitter (``first_delay`` doubling up to ``max_delay``) for up to ``budget``
    seconds of elapsed time (a call in flight counts: one that outlives the budget is given
    up), while the transport renews the batch's locks; only then are the messages abandoned.
    With the defaults (8 minutes, under the Functions timeout of 10) and MaxDeliveryCount 10,
    a message survives more than an hour of outage. ``budget=0`` retries nothing (the CLI's
    ``run``, most tests); the store's own timeouts then bound its one call.
    """

    budget: float = 0.0
    first_delay: float = 0.5
    max_delay: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreRetry:
        return cls(
            settings.audit_store_retry_seconds, max_delay=settings.audit_store_retry_max_delay
        )

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The backoff waits (full jitter, doubling up to ``max_delay``); the caller stops
        asking when the budget's time is spent."""
        ceiling = self.first_delay
        while True:
            yield rng.uniform(ceiling / 2, ceiling)
            ceiling = min(ceiling * 2, self.max_delay)


class _GaveUp(TransientError):
    """Raised when a store call in flight outlived the time budget or a stop was asked for."""


def call_within(
    work: Callable[[], _T], deadline: float | None, stop: threading.Event, what: str
) -> _T:
    """``work()`` on a helper thread, given up (``_GaveUp``) when ``deadline`` (monotonic)
    passes or ``stop`` is set, whichever comes first; ``None`` waits for the call itself,
    which the store's own timeouts bound.

    A call given up goes on in its thread and its result is dropped: its messages are retried
    (not completed), and a store write is idempotent, so a late success loses and doubles
    nothing.
    """
    result: list[_T] = []
    error: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="store-call", daemon=True).start()
    while not done.wait(0.1):
        if stop.is_set():
            raise _GaveUp(f"{what} given up in flight: the worker was told to stop")
        if deadline is not None and time.monotonic() >= deadline:
            raise _GaveUp(f"{what} did not finish within the store retry budget")
    if error:
        raise error[0]
    return result[0]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the service decided about one message, before any I/O."""

    verdict: Verdict
    reason: Reason | None = None
    description: str | None = None
    entry: AuditEntry | None = None
    #: a context whose regarding is to be read through the Web API before its entry is built
    #: (``Policy.resolve_regarding``); the verdict above is what holds without that read
    pending: RemoteExecutionContext | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision plus what the transport must do with the message."""

    message: InboundMessage
    decision: Decision
    settlement: Settlement
    description: str | None = None
    settlement_reason: Reason | None = None

    @property
    def dead_letter_reason(self) -> str:
        """The DLQ reason code (DeadLetterReason): the store's, else the decision's."""
        return (self.settlement_reason or self.decision.reason or Reason.INTERNAL_ERROR).value


def _now() -> datetime:
    return datetime.now(UTC)


def check_organization(context: RemoteExecutionContext, allowed: frozenset[UUID]) -> None:
    """Refuse contexts from organizations outside ALLOWED_ORGANIZATION_IDS (when set)."""
    if allowed and context.organization_id not in allowed:
        raise MalformedMessage(
            Reason.UNTRUSTED_ORGANIZATION,
            f"OrganizationId {context.organization_id} is not in ALLOWED_ORGANIZATION_IDS; "
            "if this organization is yours, add it to that setting and replay the message",
        )


def withhold_redacted(description: str, redact: frozenset[str]) -> str:
    """A refusal that names a redacted column keeps its path but not the value it quotes:
    the DLQ description, the logs and stderr must not hold what AUDIT_REDACT_COLUMNS hides."""
    if not redact:
        return description
    path, _, _ = description.partition(": ")
    lowered = path.lower()
    for column in sorted(redact):
        if f"['{column}']" in lowered:
            return (
                f"{path}: the value of redacted column {column!r} is not valid; it is withheld "
                "here (AUDIT_REDACT_COLUMNS). Inspect the message body itself to see it"
            )
    return description


def evaluate(
    message: InboundMessage, policy: Policy = Policy(), clock: Callable[[], datetime] = _now
) -> Decision:
    """Decode, judge and record one message; no I/O, never raises."""
    try:
        context = decode(message.body, message.content_type, policy.limits)
        check_organization(context, policy.allowed_organization_ids)
        judgement = judge(context, message.context_was_trimmed)
        if (
            policy.resolve_regarding
            and judgement.reason is Reason.REGARDING_NOT_IN_MESSAGE
            and judgement.regarding is None
        ):
            return Decision(judgement.verdict, judgement.reason, None, None, context)
        if judgement.verdict is Verdict.IGNORED:
            return Decision(
                judgement.verdict,
                judgement.reason,
                f"{context.message_name} of {context.primary_entity_name}",
            )
        entry = build_entry(context, judgement, message, clock(), policy.redact_columns)
        return Decision(judgement.verdict, judgement.reason, None, entry)
    except MalformedMessage as exc:
        return Decision(
            Verdict.MALFORMED, exc.reason, withhold_redacted(exc.description, policy.redact_columns)
        )
    except Exception as exc:
        log.exception("unexpected error deciding message %s", message.message_id)
        return Decision(
            Verdict.MALFORMED,
            Reason.INTERNAL_ERROR,
            f"unexpected {type(exc).__name__} while deciding this message; the service logs "
            "hold the traceback under its message id. Replay it after the fix.",
        )


class Pipeline:
    """The service: policy, store and clock, built once by a composition root."""

    def __init__(
        self,
        store: AuditStore,
        policy: Policy = Policy(),
        clock: Callable[[], datetime] = _now,
        telemetry: Telemetry | None = None,
        retry: StoreRetry = StoreRetry(),
        resolver: RegardingResolver | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.telemetry = telemetry or Telemetry()
        self.retry = retry
        self.resolver = resolver
        if policy.resolve_regarding and resolver is None:
            raise ValueError("AUDIT_RESOLVE_REGARDING=true needs DATAVERSE_URL (the resolver)")
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        if not policy.allowed_organization_ids:
            logging.getLogger("shared.trust").warning(
                "ALLOWED_ORGANIZATION_IDS is empty: messages from any Dataverse organization "
                "are accepted. Set it to your OrganizationId(s) in production."
            )

    def handle(
        self, messages: Sequence[InboundMessage], stop: threading.Event | None = None
    ) -> list[Outcome]:
        """Decide every message, store all entries in one write, and settle each by its own
        outcome: an entry the store could not take is retried (first in place, see
        ``StoreRetry``, then by the broker), one it refuses for good is dead-lettered; messages
        without an entry never wait on the store. ``stop`` cuts the in-place retrying short."""
        started = time.perf_counter()
        stop = stop or threading.Event()
        decisions = [evaluate(m, self.policy, self.clock) for m in messages]
        decisions, unresolved = self._resolve(messages, decisions, stop)
        failures = self._store([d.entry for d in decisions if d.entry is not None], stop)
        outcomes = [
            unresolved(m, d)
            if d.pending is not None
            else failures.get(d.entry.entry_id, _ok)(m, d)
            if d.entry
            else _ok(m, d)
            for m, d in zip(messages, decisions, strict=True)
        ]
        self.telemetry.record(outcomes, time.perf_counter() - started)
        for outcome in outcomes:
            _log_outcome(outcome)
        return outcomes

    def _deadline(self) -> float | None:
        """The end of the in-place retry budget (monotonic); None: no retrying, the call's own
        timeouts bound it."""
        return time.monotonic() + self.retry.budget if self.retry.budget else None

    def _patiently(
        self,
        work: Callable[[], _T],
        what: str,
        waiting: str,
        deadline: float | None,
        stop: threading.Event,
    ) -> _T:
        """``work()``, retried in place with backoff while it fails transiently and the budget
        lasts (see ``StoreRetry``); the last failure, or a permanent one, is raised."""
        waits = self.retry.delays(self._rng)
        while True:
            try:
                return call_within(work, deadline, stop, what)
            except (ConflictingDuplicates, StoreRejected):
                raise
            except Exception as exc:
                left = deadline - time.monotonic() if deadline is not None else 0.0
                retry = isinstance(exc, TransientError) and not isinstance(exc, _GaveUp)
                if not retry or left <= 0 or stop.is_set():
                    raise
                delay = min(next(waits), left)
                log.warning("%s failed (%s); retrying in %.1f s, %s", what, exc, delay, waiting)
                stop.wait(delay)  # a stop set meanwhile ends the loop on the next failure

    def _resolve(
        self, messages: Sequence[InboundMessage], decisions: list[Decision], stop: threading.Event
    ) -> tuple[list[Decision], _Settler]:
        """Build the entries whose regarding is read through the Web API (one read per distinct
        session); when the reads fail past the budget, how to settle the decisions still
        pending (retried: the broker redelivers them)."""
        pending = [d.pending for d in decisions if d.pending is not None]
        if not pending or self.resolver is None:
            return decisions, _ok
        resolver = self.resolver
        sessions = [str(context.record_id) for context in pending]
        try:
            found = self._patiently(
                partial(resolver.look_up, sessions),
                "regarding look-up",
                f"{len(set(sessions))} session(s) waiting",
                self._deadline(),
                stop,
            )
        except Exception as exc:  # noqa: BLE001 - any failure: nothing may be completed
            description = f"regarding look-up through the Web API failed: {exc}"
            if isinstance(exc, TransientError):
                log.warning("%s; %d message(s) will be redelivered", description, len(pending))
                return decisions, lambda m, d: Outcome(
                    m, d, Settlement.RETRY, description, Reason.DATAVERSE_UNAVAILABLE
                )
            # refused for a reason no wait fixes (a wrong DATAVERSE_URL path, a missing
            # privilege): never a verdict; redelivered a few times (the operator may be fixing
            # it), then dead-lettered with the reason, where `dlq replay` brings it back
            log.error("%s (a configuration to fix: no entry is written)", description)
            attempts = self.policy.lookup_attempts

            def refused(message: InboundMessage, decision: Decision) -> Outcome:
                if (message.delivery_count or 0) >= attempts:
                    return Outcome(
                        message,
                        decision,
                        Settlement.DEAD_LETTER,
                        f"{description}; fix the configuration, then dlq replay "
                        f"--reason {Reason.DATAVERSE_REFUSED}",
                        Reason.DATAVERSE_REFUSED,
                    )
                return Outcome(
                    message, decision, Settlement.RETRY, description, Reason.DATAVERSE_REFUSED
                )

            return decisions, refused
        resolved: list[Decision] = []
        for message, decision in zip(messages, decisions, strict=True):
            context = decision.pending
            if context is None:
                resolved.append(decision)
                continue
            answer = found[str(context.record_id)]
            judgement = answer.judgement()
            entry = build_entry(
                context,
                judgement,
                message,
                self.clock(),
                self.policy.redact_columns,
                read_at=answer.read_at,
            )
            resolved.append(Decision(judgement.verdict, judgement.reason, None, entry))
        return resolved, _ok

    def _store(
        self, entries: list[AuditEntry], stop: threading.Event | None = None
    ) -> dict[str, _Settler]:
        """Write the batch; return how to settle each entry that was not stored."""
        if not entries:
            return {}
        stop = stop or threading.Event()
        # the budget counts elapsed time, calls in flight included; 0 retries nothing and lets
        # the store's own timeouts bound the one call
        deadline = self._deadline()
        waiting = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} waiting"
        try:
            self._patiently(
                partial(self.store.write, entries), "audit store write", waiting, deadline, stop
            )
            return {}
        except ConflictingDuplicates as exc:  # the rest of the batch is stored
            return {entry_id: _conflict(kept) for entry_id, kept in exc.stored.items()}
        except StoreRejected:
            pass  # find which entry the store refuses: write them one by one
        except Exception as exc:  # noqa: BLE001 - any failure: nothing may be completed
            return dict.fromkeys((e.entry_id for e in entries), _retry(exc, len(entries)))
        failures: dict[str, _Settler] = {}
        for entry in entries:
            try:
                call_within(partial(self.store.write, [entry]), deadline, stop, "store write")
            except ConflictingDuplicates as exc:
                failures[entry.entry_id] = _conflict(exc.stored[entry.entry_id])
            except StoreRejected as exc:
                failures[entry.entry_id] = _rejected(exc)
            except Exception as exc:  # noqa: BLE001 - any failure: nothing may be completed
                failures[entry.entry_id] = _retry(exc, 1)
        return failures


_Settler = Callable[[InboundMessage, Decision], Outcome]


def _ok(message: InboundMessage, decision: Decision) -> Outcome:
    if decision.verdict is Verdict.MALFORMED:
        return Outcome(message, decision, Settlement.DEAD_LETTER, decision.description)
    return Outcome(message, decision, Settlement.COMPLETE, decision.description)


def _retry(exc: Exception, count: int) -> _Settler:
    description = f"audit store write failed ({type(exc).__name__}): {exc}"
    log.warning("%s; %d message(s) will be redelivered", description, count)
    return lambda m, d: Outcome(m, d, Settlement.RETRY, description, Reason.STORE_UNAVAILABLE)


def _conflict(kept: AuditEntry) -> _Settler:
    """Settle a message whose entry_id the store already holds: the same event again is an
    idempotent success; other content for the same event is refused, loudly."""

    def settle(message: InboundMessage, decision: Decision) -> Outcome:
        entry = decision.entry
        if entry is None or entry.event_content() == kept.event_content():
            return _ok(message, decision)
        differing = ", ".join(entry.differences(kept))
        description = (
            f"event {entry.entry_id} is already recorded (from message {kept.message_id}) with "
            f"other content: {differing} differ(s). The first version was kept; compare both "
            "with the Dataverse record before replaying this one"
        )
        log.error("conflicting duplicate: message %s: %s", message.message_id, description)
        return Outcome(
            message, decision, Settlement.DEAD_LETTER, description, Reason.CONFLICTING_DUPLICATE
        )

    return settle


def _rejected(exc: StoreRejected) -> _Settler:
    return lambda m, d: Outcome(m, d, Settlement.DEAD_LETTER, str(exc), Reason.STORE_REJECTED)


def _log_outcome(outcome: Outcome) -> None:
    """One line per message; its fields are record attributes (custom dimensions in
    Application Insights), never the body."""
    decision, message = outcome.decision, outcome.message
    fields = {
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "delivery_count": message.delivery_count,
        "entry_id": decision.entry.entry_id if decision.entry else None,
        "verdict": decision.verdict.value,
        "reason": decision.reason.value if decision.reason else None,
        "settlement": outcome.settlement.value,
    }
    # a completed message is counted as a metric; its line is DEBUG (per message, it was most
    # of the app's telemetry cost); every dead-letter and retry stays a WARNING
    level = logging.WARNING if outcome.settlement is not Settlement.COMPLETE else logging.DEBUG
    log.log(
        level,
        "message %s: %s (%s) -> %s%s",
        message.message_id,
        fields["verdict"],
        fields["reason"],
        fields["settlement"],
        f": {outcome.description}" if outcome.description and level > logging.INFO else "",
        extra=fields,
    )
