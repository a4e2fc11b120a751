"""Complete a batch's messages with one AMQP disposition per run of delivery ids (the worker's).

azure-servicebus settles one message per call: a disposition frame, then a wait for the
broker's echo, for each message; against a real namespace that is one network round trip per
message. AMQP 1.0 lets one disposition cover a range of delivery ids (``first``..``last``,
OASIS AMQP 1.0 §2.7.6), and the SDK's own link sends and awaits such a range
(``ReceiveClient.settle_messages((first, last), ...)``, which ``complete_message`` calls with a
single id), but no public method reaches it. So:

* ``RangeCompleter.of(receiver)`` is a capability check: it answers None unless every private
  piece used here is present with the signature this was written against (azure-servicebus
  7.15, the pure-Python AMQP transport, PEEK_LOCK with awaited outcomes, no session). Then the
  public API settles each message, as before. requirements.txt keeps the SDK below its next
  major version, and tests/test_batch_settlement.py fails when one of these pieces changes.
* Only completions go by range. Dead-letters (each with its own reason) and abandons are rare
  and go one by one through the public API, as does a message whose lock has run out (the
  SDK refuses it with MessageLockLostError, which is logged).
* A range whose answer does not come, or whose lock the broker says is lost, is logged and
  left to the broker, as ``settle_all`` does with a failed settlement:
  the entries are stored before any settlement, so a message the range did not complete
  comes back when its lock expires and is completed again without a second entry (the
  stores are idempotent). Settling it again at once would be worse: a disposition for a
  delivery the broker already settled may never be answered, and the SDK then waits its
  whole timeout (60 s) per message.
* A range waits at most ``CONFIRM_TIMEOUT`` for its answer, not the SDK's 60 s. A broker that
  does not answer one in that time, on a link that is still up, may not settle ranges at all:
  ``settle_batch`` then says so, and the worker settles each message from then on. So it does
  after any other failure of a range (a refusal other than a lost lock, an error before the
  disposition went out), after settling that range's messages one by one at once.
* What the SDK's public path does besides, this does too: it marks each message settled and
  forgets its delivery tag (else the link's set of tags would grow with every message). It
  does not open the SDK's settlement tracing span.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from shared.bus.settlement import MessageActions, settle_all
from shared.events.envelope import InboundMessage
from shared.verdicts import Settlement

if TYPE_CHECKING:
    from shared.pipeline import Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a range waits for the broker's answer (the SDK waits 60 s for a single settlement).
CONFIRM_TIMEOUT = 10.0

#: What the capability check requires of the SDK's private API (parameter names by callable).
_SETTLE_PARAMETERS = ("delivery_id", "delivery_tag", "outcome")
_DISPOSITION_PARAMETERS = (
    "first_delivery_id",
    "last_delivery_id",
    "delivery_tag",
    "await_outcome",
    "outcome_timeout",
)


def _delivery_id(message: Any) -> int:
    return int(message._delivery_id)


@cache
def _has_parameters(function: Any, names: tuple[str, ...]) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in names)


def _settleable(message: Any) -> bool:
    """A message the range may settle: received on the link, unsettled, its lock still held."""
    try:
        return (
            type(message._delivery_id) is int
            and isinstance(message._delivery_tag, bytes)
            and not message._settled
            and not message._is_deferred_message
            and not message._lock_expired
        )
    except AttributeError:
        return False


@dataclass(frozen=True)
class RangeCompleter:
    """Completes runs of consecutive deliveries of one receiver in one disposition each."""

    handler: Any
    tags: set[bytes]
    timeout: float

    @classmethod
    def of(cls, receiver: Any) -> RangeCompleter | None:
        """The completer for this receiver, or None where the SDK does not offer what it needs
        (then the public API settles each message)."""
        handler: Any = getattr(receiver, "_handler", None)
        link: Any = getattr(handler, "_link", None)
        settle = getattr(handler, "settle_messages", None)
        send = getattr(link, "send_disposition", None)
        tags = getattr(link, "_received_delivery_tags", None)
        if (
            settle is None
            or send is None
            or not isinstance(tags, set)
            or getattr(receiver, "_await_settlement_outcome", None) is not True
            or getattr(receiver, "_session", True) is not None
            or not _has_parameters(type(handler).settle_messages, _SETTLE_PARAMETERS)
            or not _has_parameters(type(link).send_disposition, _DISPOSITION_PARAMETERS)
        ):
            return None
        config = getattr(receiver, "_config", None)
        timeout = getattr(config, "timeout", None)
        if isinstance(timeout, int | float) and timeout > 0:
            return cls(handler, tags, min(float(timeout), CONFIRM_TIMEOUT))
        return cls(handler, tags, CONFIRM_TIMEOUT)

    def complete(self, run: Sequence[Any]) -> None:
        """Complete ``run`` (consecutive delivery ids) in one disposition and await the
        broker's echo for each; raises what the SDK raises when any is not confirmed."""
        first = run[0]
        try:
            self.handler.settle_messages(
                (first._delivery_id, run[-1]._delivery_id),
                first._delivery_tag,
                "accepted",
                await_outcome=True,
                outcome_timeout=self.timeout,
            )
        finally:  # settled or left to the broker, the link has no more use for their tags
            for message in run:
                self.tags.discard(message._delivery_tag)
        for message in run:
            message._settled = True


def runs(items: Sequence[T], delivery_id: Callable[[T], int] = _delivery_id) -> Iterator[list[T]]:
    """The items in runs of consecutive delivery ids, in order (delivery ids are 32-bit
    serial numbers: where they wrap to 0, a run ends)."""
    run: list[T] = []
    for item in items:
        if run and delivery_id(item) != delivery_id(run[-1]) + 1:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


#: The broker's answer for a message whose lock it no longer holds (reference §2.6).
LOCK_LOST = "com.microsoft:message-lock-lost"


def _condition(exc: BaseException) -> str:
    condition = getattr(exc, "condition", None)
    value = getattr(condition, "value", condition)
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def _after_failure(exc: BaseException) -> tuple[bool, bool]:
    """What a failed range means: (settle its messages alone now, keep using ranges).

    * No answer in time while the link stayed up (the SDK's MessageSettlementUnconfirmed with
      a client-error condition): the broker may apply the range late, so it is left to the
      broker; this broker may not settle ranges at all, so they are given up.
    * The link detached, or the broker answered that a lock is lost: left to the broker (a
      lock that is gone cannot be settled alone either); ranges stay.
    * Anything else (another refusal, or an error before the disposition went out): each
      message is settled alone at once, and ranges are given up.
    """
    condition = _condition(exc)
    if type(exc).__name__ == "MessageSettlementUnconfirmed":
        return False, condition != "amqp:client-error"
    if condition == LOCK_LOST:
        return False, True
    return True, False


def settle_batch(
    receiver: Any,
    readable: Sequence[tuple[Any, InboundMessage]],
    outcomes: Sequence[Outcome],
    actions: MessageActions,
) -> bool:
    """``settle_all``, with the completions in ranges where the SDK allows. Returns False when
    a failed range says ranges should not be tried again on this receiver (``_after_failure``)."""
    completer = RangeCompleter.of(receiver)
    if completer is None:
        settle_all(readable, outcomes, actions)
        return True
    ranged: list[tuple[tuple[Any, InboundMessage], Outcome]] = []
    rest: list[tuple[tuple[Any, InboundMessage], Outcome]] = []
    for pair, outcome in zip(readable, outcomes, strict=True):
        if outcome.settlement is Settlement.COMPLETE and _settleable(pair[0]):
            ranged.append((pair, outcome))
        else:
            rest.append((pair, outcome))
    in_ranges = True
    for run in runs(ranged, lambda item: _delivery_id(item[0][0])):
        if not in_ranges:
            rest.extend(run)
            continue
        try:
            completer.complete([message for (message, _), _ in run])
        except Exception as exc:  # noqa: BLE001 - one failed range must not stop the others
            alone_now, in_ranges = _after_failure(exc)
            unanswered = not alone_now and not in_ranges
            log.warning(
                "completing %d message(s) in one disposition %s (%s); %s%s",
                len(run),
                f"got no answer within {completer.timeout:g} s" if unanswered else "failed",
                exc,
                "settling each on its own"
                if alone_now
                else "the broker will redeliver those it did not complete (their entries are "
                "already stored)",
                "" if in_ranges else ", and every message on its own from now on",
            )
            if alone_now:
                rest.extend(run)
    if rest:
        settle_all([pair for pair, _ in rest], [outcome for _, outcome in rest], actions)
    return in_ranges
