"""Service Bus triggers for Dataverse processsession events: one on a queue, one on a topic
subscription. Entity names come from app settings (``%...%``); ``ServiceBusConnection`` is an
app-setting prefix, identity-based in Azure (``ServiceBusConnection__fullyQualifiedNamespace``).
Disable the trigger you do not use with ``AzureWebJobs.<name>.Disabled=true``.

Both take batches (``cardinality=MANY``, host.json ``maxMessageBatchSize``): a batch is decided
message by message, written to the store in one call, and each message is settled by its own
outcome (a malformed one is dead-lettered alone; a store failure abandons every message whose
entry was not stored). The host does not renew locks of batch functions, so a batch must finish
well within the queue's lock duration.
"""

from __future__ import annotations

import azure.functions as func
import azurefunctions.extensions.bindings.servicebus as servicebus

from functions import runtime
from shared.settlement import process_and_settle

bp = func.Blueprint()  # type: ignore[no-untyped-call]

CONNECTION = "ServiceBusConnection"


@bp.function_name("process_session_queue")
@bp.service_bus_queue_trigger(
    arg_name="messages",
    queue_name="%PROCESS_SESSION_QUEUE%",
    connection=CONNECTION,
    cardinality=func.Cardinality.MANY,
    auto_complete_messages=False,
)
def process_session_queue(
    messages: list[servicebus.ServiceBusReceivedMessage],
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Audit a batch from the queue: one store write, each message settled by its outcome."""
    process_and_settle(messages, message_actions, runtime.pipeline)


@bp.function_name("process_session_topic")
@bp.service_bus_topic_trigger(
    arg_name="messages",
    topic_name="%PROCESS_SESSION_TOPIC%",
    subscription_name="%PROCESS_SESSION_SUBSCRIPTION%",
    connection=CONNECTION,
    cardinality=func.Cardinality.MANY,
    auto_complete_messages=False,
)
def process_session_topic(
    messages: list[servicebus.ServiceBusReceivedMessage],
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Audit a batch from the topic subscription, settled message by message."""
    process_and_settle(messages, message_actions, runtime.pipeline)
