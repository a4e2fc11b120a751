"""The service's exceptions: one small tree, split by what the caller must do.

    ServiceError                 base of everything this service raises on purpose
    ├── MalformedMessage         permanent: dead-letter the message with ``reason`` + description
    ├── StoreRejected            permanent: the store refuses one entry for good; dead-letter it
    ├── ConflictingDuplicates    the store already holds another version of these events
    │                            (in ``shared.stores.base``, beside the entries it carries)
    ├── StoreMissing             a command asked to read a store that does not exist (exit 2)
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


class StoreRejected(ServiceError):
    """Raised when the audit store refuses one entry in a way no retry can fix."""

    def __init__(self, entry_id: str, description: str) -> None:
        super().__init__(f"entry {entry_id} rejected by the audit store: {description}")
        self.entry_id = entry_id
        self.description = description


class StoreMissing(ServiceError):
    """Raised when a command only asked to read (or seal) a store that does not exist: it is
    never created for it."""


class TransientError(ServiceError):
    """Raised when a dependency failed in a way that a later redelivery may not meet."""


class StoreUnavailable(TransientError):
    """Raised when the audit store failed to write or read; nothing was half-written."""
