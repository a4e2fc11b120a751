"""Service Bus: settling outcomes (``settlement``, ``batch_settlement``) and, outside Azure
Functions, the standalone worker, the publisher and the DLQ tools (``standalone``)."""
