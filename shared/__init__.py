"""Audit service for Dataverse dialog sessions (processsession) posted to Azure Service Bus.

Nothing in this package imports ``azure.functions``: the Functions triggers in ``functions/``
and the command line in ``shared.cli`` are thin shells around :func:`shared.pipeline.handle`.
"""
