"""Service Bus triggers for Dataverse processsession events: one on a queue, one on a topic
subscription. Entity names come from app settings (``%...%``); ``ServiceBusConnection`` is an
app-setting prefix, identity-based in Azure (``ServiceBusConnection__fullyQualifiedNamespace``).
Disable the trigger you do not use with ``AzureWebJobs.<name>.Disabled=true``.
"""

from __future__ import annotations

import functools

import azure.functions as func
import azurefunctions.extensions.bindings.servicebus as servicebus

from functions.settlement import process_and_settle
from shared.bootstrap import build_pipeline
from shared.pipeline import Pipeline
from shared.settings import load_settings

bp = func.Blueprint()  # type: ignore[no-untyped-call]

CONNECTION = "ServiceBusConnection"


@functools.cache
def pipeline() -> Pipeline:
    """Built on the first invocation and reused: nothing is read or opened at import time."""
    return build_pipeline(load_settings())


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
    process_and_settle([message], message_actions, pipeline)


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
    process_and_settle([message], message_actions, pipeline)
