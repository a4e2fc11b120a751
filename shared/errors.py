"""The service's exceptions: one small tree, split by what the caller must do.

    ServiceError                 base of everything this service raises on purpose
    ├── MalformedMessage         permanent: dead-letter the message with ``reason`` + description
    └── TransientError           retry: do not settle, the broker redelivers the message
        └── StoreUnavailable     the audit store could not durably write or read

Outcomes such as "rejected" or "ignored" are values (see ``shared.verdicts``), not exceptions.
"""

from __future__ import annotations

from shared.verdicts import Reason


class ServiceError(Exception):
    """Raised for every failure this service signals on purpose."""


class MalformedMessage(ServiceError):
    """Raised when a message can never be processed: wrong format, unparsable, untrusted."""

    def __init__(self, reason: Reason, description: str) -> None:
        super().__init__(f"{reason.value}: {description}")
        self.reason = reason
        self.description = description


class TransientError(ServiceError):
    """Raised when a dependency failed in a way that a later redelivery may not meet."""


class StoreUnavailable(TransientError):
    """Raised when the audit store failed to write or read; nothing was half-written."""
