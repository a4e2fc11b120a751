"""Service Bus triggers for Dataverse processsession events: one on a queue, one on a topic
subscription. Entity names come from app settings (``%...%``); ``ServiceBusConnection`` is an
app-setting prefix, identity-based in Azure (``ServiceBusConnection__fullyQualifiedNamespace``).
Disable the trigger you do not use with ``AzureWebJobs.<name>.Disabled=true``.

Both take batches (``cardinality=MANY``, host.json ``maxMessageBatchSize``): a batch is decided
message by message, written to the store in one call, and each message is settled by its own
outcome (a malformed one is dead-lettered alone; a store failure abandons every message whose
entry was not stored). The host does not renew locks of batch functions, so the batch's locks
are renewed here every ``AUDIT_LOCK_RENEWAL_SECONDS`` while it is processed.
"""

from __future__ import annotations

import typing

import azure.functions as func
import azurefunctions.extensions.bindings.servicebus as servicebus

from functions import runtime
from shared.bus.settlement import process_and_settle

bp = func.Blueprint()  # type: ignore[no-untyped-call]

CONNECTION = "ServiceBusConnection"

#: The batch parameter MUST be annotated ``typing.List[...]``, not ``list[...]``: the Functions
#: Python worker (azure-functions-runtime 1.3.0, and the worker Azure runs for Python 3.11) checks
#: annotations with ``typing_inspect.is_generic_type``, which refuses PEP 585 generics, so with
#: ``list[...]`` indexing fails and no function of the app loads (upstream:
#: Azure/azure-functions-durable-python#468). tests/test_functions_runtime.py guards this.
Messages = typing.List[servicebus.ServiceBusReceivedMessage]  # noqa: UP006


def _process(messages: Messages, actions: servicebus.ServiceBusMessageActions) -> None:
    process_and_settle(
        messages,
        actions,
        runtime.pipeline,
        runtime.lock_renewal_seconds,
        runtime.settle_concurrency,
    )


@bp.function_name("process_session_queue")
@bp.service_bus_queue_trigger(
    arg_name="messages",
    queue_name="%PROCESS_SESSION_QUEUE%",
    connection=CONNECTION,
    cardinality=func.Cardinality.MANY,
    auto_complete_messages=False,
)
def process_session_queue(
    messages: Messages,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Audit a batch from the queue: one store write, each message settled by its outcome."""
    _process(messages, message_actions)


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
    messages: Messages,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Audit a batch from the topic subscription, settled message by message."""
    _process(messages, message_actions)
