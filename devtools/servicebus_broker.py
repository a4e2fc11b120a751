"""A local, Service Bus-compatible AMQP 1.0 peer for tests and local runs (not a production broker).

It speaks enough of Azure Service Bus's AMQP dialect for the real ``azure-servicebus`` SDK
(>= 7.15, with ``UseDevelopmentEmulator=true``) on loopback: SASL ANONYMOUS, ``$cbs``
put-token (404 for unknown entities, as the service answers), queues and topics with
subscriptions, PEEK_LOCK and RECEIVE_AND_DELETE, complete / abandon / dead-letter with reason
and description, the ``$DeadLetterQueue`` sub-queue, lock duration and expiry with redelivery,
MaxDeliveryCount -> ``MaxDeliveryCountExceeded``, batch sends, and ``$management`` renew-lock
and peek. Protocol facts and pitfalls (P1-P10) are from the team's local-servicebus-peer
reference; no TLS, no real SAS validation, no sessions, no TTL, no duplicate detection.

    python -m devtools.servicebus_broker --port 0 --queue q1 --queue q2:lock=2:max=3 \\
        --topic events/audit,other:lock=30

prints ``listening on 127.0.0.1:<port>`` once it accepts connections; stop it with SIGTERM.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from proton import (
    Condition,
    Data,
    Delivery,
    Described,
    Endpoint,
    Handler,
    Link,
    Message,
    symbol,
    timestamp,
    ulong,
)
from proton.reactor import Container

from devtools.processes import free_port

MAX_MESSAGE_SIZE = 262_144
BATCH_FORMAT = 0x80013700
HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS = 0x70, 0x71, 0x72
APPLICATION_PROPERTIES, DATA = 0x74, 0x75
DEAD_LETTER = "$deadletterqueue"
MANAGEMENT = "$management"
TICK = 0.05
# Errors sent to a client always carry a non-empty info map (pitfall P2).
TRACKING: Any = {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}


def now_ms() -> int:
    return int(time.time() * 1000)


def normalize(address: str | None) -> str:
    """``amqps://127.0.0.1:5673/Queue/$DeadLetterQueue`` -> ``queue/$deadletterqueue``."""
    text = address or ""
    if "://" in text:
        text = urlparse(text).path
    return unquote(text).strip("/").lower()


def sections(raw: bytes) -> list[tuple[int, bytes]]:
    """An encoded AMQP message as (descriptor code, encoded section) pairs, in order."""
    result = []
    position = 0
    while position < len(raw):
        data = Data()
        consumed = data.decode(raw[position:])
        data.rewind()
        data.next()
        described: Any = data.get_object()
        result.append((int(described.descriptor), bytes(raw[position : position + consumed])))
        position += consumed
    return result


def section_value(encoded: bytes) -> Any:
    """The value of one encoded section; binaries are copied out of proton's buffer (P5)."""
    data = Data()
    data.decode(encoded)
    data.rewind()
    data.next()
    described: Any = data.get_object()
    value = described.value
    return bytes(value) if isinstance(value, memoryview) else value


def _mapping(value: Any) -> dict[Any, Any]:
    """A decoded AMQP map as a dict (empty when absent)."""
    return dict(value) if isinstance(value, dict) else {}


def encode_section(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return bytes(data.encode())


def header_section(delivery_count: int) -> bytes:
    """Written by hand: proton drops an all-default header, losing delivery-count 0 (P3)."""
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(HEADER)
    data.put_list()
    data.enter()
    data.put_bool(False)  # durable
    data.put_ubyte(4)  # priority
    data.put_null()  # ttl
    data.put_bool(delivery_count == 0)  # first-acquirer
    data.put_uint(delivery_count)
    data.exit()
    data.exit()
    return bytes(data.encode())


@dataclass
class Stored:
    """One message in an entity."""

    sequence_number: int
    parts: list[tuple[int, bytes]]  # the sender's sections, less header and annotations
    annotations: dict[Any, Any]
    enqueued_ms: int
    delivery_count: int = 0
    dead_letter: tuple[str, str] | None = None

    def encode(self, locked_until_ms: int | None = None) -> bytes:
        """The message as a receiver gets it: header, annotations, then the sender's sections."""
        annotations = dict(self.annotations)
        annotations[symbol("x-opt-sequence-number")] = self.sequence_number
        annotations[symbol("x-opt-enqueued-time")] = timestamp(self.enqueued_ms)
        if locked_until_ms is not None:
            annotations[symbol("x-opt-locked-until")] = timestamp(locked_until_ms)
        parts = list(self.parts)
        if self.dead_letter is not None:
            reason, description = self.dead_letter
            properties: dict[Any, Any] = {}
            for index, (code, encoded) in enumerate(parts):
                if code == APPLICATION_PROPERTIES:
                    properties = _mapping(section_value(encoded))
                    del parts[index]
                    break
            properties["DeadLetterReason"] = reason
            properties["DeadLetterErrorDescription"] = description
            body_at = next((i for i, (c, _) in enumerate(parts) if c >= DATA), len(parts))
            parts.insert(
                body_at,
                (APPLICATION_PROPERTIES, encode_section(APPLICATION_PROPERTIES, properties)),
            )
        return (
            header_section(self.delivery_count)
            + encode_section(MESSAGE_ANNOTATIONS, annotations)
            + b"".join(encoded for _, encoded in parts)
        )


@dataclass
class Lock:
    """A message delivered in PEEK_LOCK, waiting for its settlement."""

    message: Stored
    entity: Entity
    delivery: Delivery
    locked_until: float


@dataclass
class Entity:
    """A queue, a topic subscription, or a dead-letter sub-queue."""

    name: str
    lock_duration: float = 30.0
    max_delivery_count: int = 10
    dead_letter_queue: Entity | None = None
    available: list[Stored] = field(default_factory=list)
    receivers: list[Link] = field(default_factory=list)

    def put(self, message: Stored) -> None:
        """Queue a message in sequence order (a requeued one keeps its place)."""
        keys = [m.sequence_number for m in self.available]
        self.available.insert(bisect.bisect(keys, message.sequence_number), message)


class Broker(Handler):
    """The proton event handler: connections, links, deliveries, locks."""

    def __init__(
        self,
        port: int,
        queues: dict[str, Entity],
        topics: dict[str, list[str]],
        settle_latency: float = 0.0,
        receive_latency: float = 0.0,
    ):
        super().__init__()
        self.port = port
        #: Seconds before a settlement is applied and echoed, and before messages go out for
        #: a receiver's new credit: stand-ins for the network round trips a real namespace
        #: costs each disposition and each receive (benchmarks only; 0 in tests).
        self.settle_latency = settle_latency
        self.receive_latency = receive_latency
        self.settling: set[bytes] = set()
        self.not_before: dict[Link, float] = {}
        self.entities: dict[str, Entity] = {}
        self.topics = topics
        for name, entity in queues.items():
            self._add(name, entity)
        self.locks: dict[bytes, Lock] = {}
        self.sequence = 0
        self.replies: dict[tuple[Any, str], Link] = {}

    def _add(self, name: str, entity: Entity) -> None:
        dlq = Entity(f"{name}/{DEAD_LETTER}", entity.lock_duration, 1_000_000)
        entity.dead_letter_queue = dlq
        self.entities[name] = entity
        self.entities[dlq.name] = dlq

    # -- lifecycle ----------------------------------------------------------------------

    def on_reactor_init(self, event: Any) -> None:
        self.acceptor = event.container.listen(f"127.0.0.1:{self.port}")
        event.container.schedule(TICK, self)
        print(f"listening on 127.0.0.1:{self.port}", flush=True)

    def on_timer_task(self, event: Any) -> None:
        self._expire_locks()
        for entity in self.entities.values():
            self._pump(entity)
        event.container.schedule(TICK, self)

    def on_connection_bound(self, event: Any) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        event.transport.max_frame_size = 1_048_576

    def on_connection_remote_open(self, event: Any) -> None:
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            event.connection.container = "local-servicebus"
            event.connection.open()

    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        print(f"broker: transport error: {condition}", file=sys.stderr, flush=True)

    def on_connection_remote_close(self, event: Any) -> None:
        event.connection.close()

    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    def on_link_remote_close(self, event: Any) -> None:
        self._forget(event.link)
        event.link.close()

    def on_link_final(self, event: Any) -> None:
        self._forget(event.link)

    def _forget(self, link: Link) -> None:
        for entity in self.entities.values():
            if link in entity.receivers:
                entity.receivers.remove(link)
        for key in [k for k, v in self.replies.items() if v is link]:
            del self.replies[key]
        self.not_before.pop(link, None)

    # -- links --------------------------------------------------------------------------

    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.max_message_size = MAX_MESSAGE_SIZE
        link.open()
        if link.is_receiver:
            link.flow(1000)
            return
        address = normalize(link.remote_source.address)
        if address == "$cbs" or address.endswith(MANAGEMENT):
            self.replies[(link.connection, address)] = link
            return
        entity = self.entities.get(address)
        if entity is None:
            link.close()
            return
        entity.receivers.append(link)
        self._pump(entity)

    def on_link_flow(self, event: Any) -> None:
        link = event.link
        if link.is_sender:
            entity = self._entity_of(link)
            if entity is not None and self.receive_latency > 0 and not link.drain_mode:
                self.not_before[link] = time.monotonic() + self.receive_latency
                event.container.schedule(self.receive_latency, _Later(lambda: self._pump(entity)))
            elif entity is not None:
                self._pump(entity)
            if link.drain_mode:
                link.drained()

    def _entity_of(self, link: Link) -> Entity | None:
        return self.entities.get(normalize(link.remote_source.address))

    # -- deliveries ---------------------------------------------------------------------

    def on_delivery(self, event: Any) -> None:
        delivery, link = event.delivery, event.link
        if link.is_receiver:
            if delivery.readable and not delivery.partial:
                raw = bytes(link.recv(delivery.pending))
                link.advance()
                try:
                    self._received(link, delivery, raw)
                except Exception as exc:  # noqa: BLE001 - one bad transfer must not stop it
                    print(f"broker: refused a transfer: {exc!r}", file=sys.stderr, flush=True)
                    delivery.local.condition = Condition("amqp:internal-error", repr(exc), TRACKING)
                    delivery.update(Delivery.REJECTED)
                    delivery.settle()
                if link.credit < 500:
                    link.flow(1000 - link.credit)
        elif delivery.updated:
            if self.settle_latency <= 0:
                self._settle_safely(delivery)
                return
            token = getattr(delivery, "lock_token", b"")
            if token not in self.settling:  # once per disposition, however often it is seen
                self.settling.add(token)
                event.container.schedule(
                    self.settle_latency, _Later(lambda: self._settle_safely(delivery))
                )

    def _settle_safely(self, delivery: Delivery) -> None:
        self.settling.discard(getattr(delivery, "lock_token", b""))
        try:
            self._settled(delivery)
        except Exception as exc:  # noqa: BLE001 - keep serving the other links
            print(f"broker: settlement failed: {exc!r}", file=sys.stderr, flush=True)

    def _received(self, link: Link, delivery: Delivery, raw: bytes) -> None:
        address = normalize(link.remote_target.address)
        if address == "$cbs":
            self._cbs(link, raw)
        elif address.endswith(MANAGEMENT):
            self._management(link, address.removesuffix("/" + MANAGEMENT), raw)
        else:
            error = self._enqueue(address, raw)
            if error is not None:
                delivery.local.condition = error
                delivery.update(Delivery.REJECTED)
                delivery.settle()
                return
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()

    def _enqueue(self, address: str, raw: bytes) -> Condition | None:
        targets = (
            [self.entities[f"{address}/subscriptions/{s}"] for s in self.topics[address]]
            if address in self.topics
            else [self.entities[address]]
            if address in self.entities
            else None
        )
        if targets is None:
            return Condition("amqp:not-found", f"no entity {address!r}", TRACKING)
        parts = sections(raw)
        data = [encoded for code, encoded in parts if code == DATA]
        inner = [bytes(section_value(d)) for d in data]
        if len(data) > 1 or (inner and inner[0][:3] in (b"\x00Sp", b"\x00Sr", b"\x00Ss")):
            messages = inner  # a batch: each data section is a whole message (P4)
        else:
            messages = [raw]
        for encoded in messages:
            if len(encoded) > MAX_MESSAGE_SIZE:
                return Condition(
                    "amqp:link:message-size-exceeded",
                    f"message of {len(encoded)} bytes over {MAX_MESSAGE_SIZE}",
                    TRACKING,
                )
        for encoded in messages:
            kept = []
            annotations: dict[Any, Any] = {}
            for code, section in sections(encoded):
                if code == MESSAGE_ANNOTATIONS:
                    annotations = _mapping(section_value(section))
                elif code not in (HEADER, DELIVERY_ANNOTATIONS):
                    kept.append((code, section))
            for entity in targets:
                self.sequence += 1
                entity.put(Stored(self.sequence, kept, annotations, now_ms()))
                self._pump(entity)
        return None

    def _pump(self, entity: Entity) -> None:
        now = time.monotonic()
        for link in list(entity.receivers):
            if self.not_before.get(link, 0.0) > now:
                continue  # its credit's round trip is not over yet (--receive-latency-ms)
            while entity.available and link.credit > 0 and link.state & Endpoint.LOCAL_ACTIVE:
                message = entity.available.pop(0)
                token = uuid.uuid4()
                presettled = link.snd_settle_mode == Link.SND_SETTLED
                locked_until = time.time() + entity.lock_duration
                delivery = link.delivery(token.bytes_le)  # type: ignore[arg-type]  # bytes ok
                # proton-python decodes tags as UTF-8, so keep the lock token beside it
                delivery.lock_token = token.bytes_le
                link.send(message.encode(None if presettled else int(locked_until * 1000)))
                link.advance()
                if presettled:
                    delivery.settle()
                else:
                    self.locks[token.bytes_le] = Lock(message, entity, delivery, locked_until)

    def _settled(self, delivery: Delivery) -> None:
        lock = self.locks.pop(getattr(delivery, "lock_token", b""), None)
        state = delivery.remote_state
        if lock is None:
            if state != Delivery.RELEASED:
                delivery.local.condition = Condition(
                    "com.microsoft:message-lock-lost", "the lock was lost", TRACKING
                )
                delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        message, entity = lock.message, lock.entity
        if state == Delivery.ACCEPTED:
            delivery.update(Delivery.ACCEPTED)
        elif state == Delivery.REJECTED:
            condition = delivery.remote.condition
            info = {str(k): v for k, v in _mapping(condition.info if condition else None).items()}
            self._dead_letter(
                entity,
                message,
                str(info.get("DeadLetterReason", "")),
                str(info.get("DeadLetterErrorDescription", "")),
            )
            delivery.update(Delivery.REJECTED)  # a bare echo (P6)
        elif state == Delivery.RELEASED:
            entity.put(message)
        else:  # MODIFIED: abandon (deferral is not supported and is treated alike)
            self._redeliver(entity, message)
            delivery.local.failed = True
            delivery.update(Delivery.MODIFIED)
        delivery.settle()
        self._pump(entity)

    def _redeliver(self, entity: Entity, message: Stored) -> None:
        message.delivery_count += 1
        if entity.dead_letter_queue is not None and (
            message.delivery_count >= entity.max_delivery_count
        ):
            self._dead_letter(
                entity,
                message,
                "MaxDeliveryCountExceeded",
                "Message could not be consumed after "
                f"{entity.max_delivery_count} delivery attempts.",
            )
        else:
            entity.put(message)

    def _dead_letter(self, entity: Entity, message: Stored, reason: str, description: str) -> None:
        if entity.dead_letter_queue is None:  # already in a DLQ: it stays there
            entity.put(message)
            return
        message.dead_letter = (reason, description)
        entity.dead_letter_queue.put(message)
        self._pump(entity.dead_letter_queue)

    def _expire_locks(self) -> None:
        moment = time.time()
        for tag, lock in list(self.locks.items()):
            if lock.locked_until <= moment:
                del self.locks[tag]
                self._redeliver(lock.entity, lock.message)

    # -- $cbs and $management -----------------------------------------------------------

    def _reply(
        self,
        link: Link,
        address: str,
        request: Message,
        properties: dict[str, Any],
        body: Any = None,
    ) -> None:
        sender = self.replies.get((link.connection, address))
        if sender is None:
            return
        reply = Message(correlation_id=request.id, properties=properties, body=body)
        delivery = sender.delivery(uuid.uuid4().hex)
        sender.send(reply.encode())
        sender.advance()
        delivery.settle()

    def _cbs(self, link: Link, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        audience = normalize(str(_mapping(request.properties).get("name", "")))
        known = audience in self.entities or audience in self.topics
        status = (202, "Accepted") if known else (404, f"entity {audience!r} not found")
        self._reply(
            link, "$cbs", request, {"status-code": status[0], "status-description": status[1]}
        )

    def _management(self, link: Link, entity_name: str, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        operation = str(_mapping(request.properties).get("operation", ""))
        body = {str(k): v for k, v in _mapping(request.body).items()}
        address = f"{entity_name}/{MANAGEMENT}"
        entity = self.entities.get(entity_name)
        if entity is None:
            self._reply(
                link, address, request, {"statusCode": 404, "statusDescription": "entity not found"}
            )
        elif operation == "com.microsoft:renew-lock":
            expirations = []
            for token in body.get("lock-tokens", []):
                lock = self.locks.get(uuid.UUID(str(token)).bytes_le)
                if lock is None:
                    self._reply(
                        link,
                        address,
                        request,
                        {
                            "statusCode": 410,
                            "statusDescription": "lock lost",
                            "errorCondition": symbol("com.microsoft:message-lock-lost"),
                        },
                    )
                    return
                lock.locked_until = time.time() + entity.lock_duration
                expirations.append(timestamp(int(lock.locked_until * 1000)))
            self._reply(
                link,
                address,
                request,
                {"statusCode": 200, "statusDescription": "OK"},
                {"expirations": expirations},
            )
        elif operation == "com.microsoft:peek-message":
            start = int(body.get("from-sequence-number", 0))
            count = int(body.get("message-count", 1))
            locked = [lk.message for lk in self.locks.values() if lk.entity is entity]
            pool = sorted(entity.available + locked, key=lambda m: m.sequence_number)
            found = [m for m in pool if m.sequence_number >= start][:count]
            if not found:
                self._reply(
                    link, address, request, {"statusCode": 204, "statusDescription": "No Content"}
                )
                return
            self._reply(
                link,
                address,
                request,
                {"statusCode": 200, "statusDescription": "OK"},
                {"messages": [{"message": m.encode()} for m in found]},
            )
        else:
            self._reply(
                link,
                address,
                request,
                {
                    "statusCode": 501,
                    "statusDescription": f"{operation} is not supported here",
                    "errorCondition": symbol("amqp:not-implemented"),
                },
            )


class _Later(Handler):
    """Does one thing when its timer fires (``--settle-latency-ms``, ``--receive-latency-ms``)."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__()
        self.action = action

    def on_timer_task(self, event: Any) -> None:
        self.action()


def _entity_options(spec: str) -> tuple[str, dict[str, float]]:
    name, *options = spec.split(":")
    values: dict[str, float] = {}
    for option in options:
        key, _, value = option.partition("=")
        values[{"lock": "lock_duration", "max": "max_delivery_count"}[key]] = float(value)
    return name.lower(), values


def parse_entities(
    queues: list[str], topics: list[str], lock: float, max_delivery: int
) -> tuple[dict[str, Entity], dict[str, list[str]]]:
    """``name[:lock=S][:max=N]`` queues and ``topic/sub1,sub2[:lock=S][:max=N]`` topics."""
    entities: dict[str, Entity] = {}
    topic_subscriptions: dict[str, list[str]] = {}

    def entity(name: str, options: dict[str, float]) -> Entity:
        return Entity(
            name,
            options.get("lock_duration", lock),
            int(options.get("max_delivery_count", max_delivery)),
        )

    for spec in queues:
        name, options = _entity_options(spec)
        entities[name] = entity(name, options)
    for spec in topics:
        path, options = _entity_options(spec)
        topic, _, subs = path.partition("/")
        topic_subscriptions[topic] = [s for s in subs.split(",") if s]
        for sub in topic_subscriptions[topic]:
            name = f"{topic}/subscriptions/{sub}"
            entities[name] = entity(name, options)
    return entities, topic_subscriptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5673, help="0 picks a free port")
    parser.add_argument("--queue", action="append", default=[], help="name[:lock=S][:max=N]")
    parser.add_argument(
        "--topic", action="append", default=[], help="topic/sub1,sub2[:lock=S][:max=N]"
    )
    parser.add_argument("--lock-duration", type=float, default=30.0)
    parser.add_argument("--max-delivery-count", type=int, default=10)
    parser.add_argument(
        "--settle-latency-ms",
        type=float,
        default=0.0,
        help="delay each settlement's echo, as a network round trip would (benchmarks)",
    )
    parser.add_argument(
        "--receive-latency-ms",
        type=float,
        default=0.0,
        help="delay messages for a receiver's new credit, as a network round trip would",
    )
    args = parser.parse_args(argv)
    entities, topics = parse_entities(
        args.queue, args.topic, args.lock_duration, args.max_delivery_count
    )
    port = args.port or free_port()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        Container(
            Broker(
                port,
                entities,
                topics,
                settle_latency=args.settle_latency_ms / 1000,
                receive_latency=args.receive_latency_ms / 1000,
            )
        ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
