"""The local broker itself (devtools/servicebus_broker.py), driven by the real azure-servicebus
SDK over AMQP: the Service Bus behaviours the service and its tests rely on."""

from __future__ import annotations

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusAuthenticationError


def _drain(servicebus, queue: str, **options):
    with servicebus.get_queue_receiver(queue, **options) as receiver:
        return receiver.receive_messages(max_message_count=50, max_wait_time=2)


def test_list_and_batch_sends_arrive_once_each_in_order(servicebus):
    with servicebus.get_queue_sender("broker-batch") as sender:
        sender.send_messages(
            [ServiceBusMessage(b"a", message_id="a"), ServiceBusMessage(b"b", message_id="b")]
        )
        batch = sender.create_message_batch()
        batch.add_message(
            ServiceBusMessage(b"c", message_id="c", application_properties={"k": "v"})
        )
        batch.add_message(ServiceBusMessage(b"d", message_id="d", content_type="text/plain"))
        sender.send_messages(batch)
    with servicebus.get_queue_receiver("broker-batch") as receiver:
        got = receiver.receive_messages(max_message_count=10, max_wait_time=2)
        assert [m.message_id for m in got] == ["a", "b", "c", "d"]
        assert [m.delivery_count for m in got] == [0, 0, 0, 0]
        assert got[2].application_properties == {b"k": b"v"}
        assert got[3].content_type == "text/plain"
        sequence = [m.sequence_number for m in got]
        assert sequence == sorted(sequence)
        assert len(set(sequence)) == 4
        for message in got:
            receiver.complete_message(message)


def test_receive_and_delete_takes_messages_without_settlement(servicebus):
    with servicebus.get_queue_sender("broker-delete") as sender:
        sender.send_messages([ServiceBusMessage(b"x", message_id=str(n)) for n in range(3)])
    taken = _drain(
        servicebus, "broker-delete", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    )
    assert len(taken) == 3
    assert _drain(servicebus, "broker-delete") == []


def test_abandon_raises_the_delivery_count_until_max_delivery_count(servicebus):
    with servicebus.get_queue_sender("broker-abandon") as sender:
        sender.send_messages(ServiceBusMessage(b"poison", message_id="p"))
    with servicebus.get_queue_receiver("broker-abandon") as receiver:
        for expected in (0, 1):
            (message,) = receiver.receive_messages(max_message_count=1, max_wait_time=2)
            assert message.delivery_count == expected
            receiver.abandon_message(message)
        assert receiver.receive_messages(max_message_count=1, max_wait_time=1) == []
    (dead,) = _drain(servicebus, "broker-abandon", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead.dead_letter_error_description == (
        "Message could not be consumed after 2 delivery attempts."
    )


def test_an_unknown_queue_is_refused_at_authentication(broker):
    with (
        ServiceBusClient.from_connection_string(broker.connection_string, retry_total=0) as c,
        pytest.raises(ServiceBusAuthenticationError),
        c.get_queue_sender("nope") as sender,
    ):
        sender.send_messages(ServiceBusMessage(b"x"))


def test_a_message_over_256_kib_is_refused_and_the_sender_stays_usable(servicebus):
    with servicebus.get_queue_sender("broker-batch") as sender:
        with pytest.raises(MessageSizeExceededError):
            sender.send_messages(ServiceBusMessage(b"x" * 300_000))
        sender.send_messages(ServiceBusMessage(b"small", message_id="after"))
    assert [
        m.message_id
        for m in _drain(
            servicebus, "broker-batch", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        )
    ] == ["after"]
