"""Verdicts, settlements and the stable reason codes operators see in the DLQ and the trail."""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """What the service decided about one message."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IGNORED = "ignored"
    MALFORMED = "malformed"


class Settlement(StrEnum):
    """What the transport must do with the message."""

    COMPLETE = "complete"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"


class Reason(StrEnum):
    """Stable reason codes. Never rename one: DLQ filters and dashboards key on them."""

    # rejected (an audit entry is written)
    REGARDING_NOT_BANKACCOUNT = "regarding_not_bankaccount"
    REGARDING_CLEARED = "regarding_cleared"
    REGARDING_NOT_IN_MESSAGE = "regarding_not_in_message"
    CONTEXT_TRUNCATED = "context_truncated"
    #: the regarding read through the Web API (AUDIT_RESOLVE_REGARDING, backfill) is empty
    REGARDING_EMPTY = "regarding_empty"
    #: the session the message names no longer exists in Dataverse (AUDIT_RESOLVE_REGARDING)
    SESSION_NOT_IN_DATAVERSE = "session_not_in_dataverse"
    # ignored (no entry)
    NOT_PROCESSSESSION = "not_processsession"
    MESSAGE_OUT_OF_SCOPE = "message_out_of_scope"
    # malformed (dead-lettered)
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    BODY_TOO_LARGE = "body_too_large"
    NESTING_TOO_DEEP = "nesting_too_deep"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_XML = "malformed_xml"
    MALFORMED_BINARY_XML = "malformed_binary_xml"
    XML_FORBIDDEN_CONSTRUCT = "xml_forbidden_construct"
    NOT_EXECUTION_CONTEXT = "not_execution_context"
    SCHEMA_VIOLATION = "schema_violation"
    UNTRUSTED_ORGANIZATION = "untrusted_organization"
    INTERNAL_ERROR = "internal_error"
    STORE_REJECTED = "store_rejected"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    #: the Web API refused the regarding look-up for a reason no wait can fix (a wrong
    #: DATAVERSE_URL path, a missing privilege), after AUDIT_LOOKUP_ATTEMPTS deliveries
    DATAVERSE_REFUSED = "dataverse_refused"
    # retried (not settled)
    STORE_UNAVAILABLE = "store_unavailable"
    #: the regarding look-up through the Web API failed (AUDIT_RESOLVE_REGARDING)
    DATAVERSE_UNAVAILABLE = "dataverse_unavailable"
