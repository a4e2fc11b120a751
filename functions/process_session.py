"""Service Bus triggers for Dataverse processsession events: one on a queue, one on a topic
subscription. Entity names come from app settings (``%...%``); ``ServiceBusConnection`` is an
app-setting prefix, identity-based in Azure (``ServiceBusConnection__fullyQualifiedNamespace``).
Disable the trigger you do not use with ``AzureWebJobs.<name>.Disabled=true``.
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
    arg_name="message",
    queue_name="%PROCESS_SESSION_QUEUE%",
    connection=CONNECTION,
    auto_complete_messages=False,
)
def process_session_queue(
    message: servicebus.ServiceBusReceivedMessage,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Audit one message from the queue and settle it explicitly."""
    process_and_settle([message], message_actions, runtime.pipeline)


@bp.function_name("process_session_topic")
@bp.service_bus_topic_trigger(
    arg_name="message",
    topic_name="%PROCESS_SESSION_TOPIC%",
    subscription_name="%PROCESS_SESSION_SUBSCRIPTION%",
    connection=CONNECTION,
    auto_complete_messages=False,
)
def process_session_topic(
    message: servicebus.ServiceBusReceivedMessage,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Audit one message from the topic subscription and settle it explicitly."""
    process_and_settle([message], message_actions, runtime.pipeline)
