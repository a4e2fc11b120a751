"""AuditEntry, the one record written per processsession event, and how one is built.

Modelled on Dataverse's own ``audit`` table (who, when, which operation on which record, which
columns changed from what to what) plus what only this service knows: the verdict and the
broker metadata (reference §8).

``entry_id`` is ``uuid5(ENTRY_NAMESPACE, "<OrganizationId>:<OperationId>:<PrimaryEntityId>:
<messagename>")`` with lower-case GUIDs and message name. OperationId is the asynchronous
system job that posted the event, so a broker redelivery (same message id) and a Dataverse
re-post (new message id, same job) give the same entry_id, while two updates of one session
run as two jobs and give two ids.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID, uuid5

import orjson
from pydantic import BaseModel, ConfigDict, PlainSerializer

from shared.dataverse.model import (
    AliasedValue,
    Entity,
    EntityCollection,
    EntityReference,
    Money,
    OpaqueValue,
    OptionSetValue,
    RemoteExecutionContext,
    ascii_lower,
)
from shared.events.envelope import CLAIM_ORGANIZATION, InboundMessage
from shared.events.rules import Judgement
from shared.verdicts import Reason, Verdict

ENTRY_NAMESPACE = UUID("6b1f0f5e-2d1c-5a7e-9c44-3a9d2f0e8b17")
#: What replaces a value of a column named in AUDIT_REDACT_COLUMNS.
REDACTED = "[redacted]"


def iso_utc(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``: sortable as text, as the stores rely on."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcTimestamp = Annotated[datetime, PlainSerializer(iso_utc, return_type=str, when_used="json")]


class Change(BaseModel):
    """One column of the Target: its new value, and its old value from a pre-image if any.

    ``old_known`` says whether ``old`` was captured: true when a pre-image held the column
    (``old`` null then means it was empty), false when nothing held it (an Update whose
    pre-image lacks the column or that has none; a Create, which has no old values; a
    backfilled entry). None in entries stored before it existed (2026-12-06): readers then
    take an Update's null ``old`` as not captured (an image that held the column empty cannot
    be told apart in those entries) and a non-null one as captured."""

    model_config = ConfigDict(frozen=True)

    column: str
    old: Any = None
    new: Any = None
    old_known: bool | None = None

    def captured(self, message_name: str) -> bool:
        """Whether the old value is known (the rule above, for old entries too)."""
        if message_name == "Create":
            return False
        if self.old_known is not None:
            return self.old_known
        return self.old is not None


#: Fields set by the broker or at recording time: they differ between redeliveries and
#: re-posts of one event, so they never count when two entries of one event are compared.
BROKER_FIELDS = frozenset(
    {
        "message_id",
        "sequence_number",
        "enqueued_time",
        "delivery_count",
        "recorded_at",
        "seal",
        "regarding_read_at",
    }
)
#: What a look-up through the Web API decided (``regarding_source: web_api``): read again on a
#: redelivery, it may have changed meanwhile, so it is not compared either.
RESOLVED_FIELDS = frozenset(
    {"verdict", "reason", "regarding_logical_name", "regarding_id", "regarding_name"}
)
#: Where an entry comes from: a Service Bus message, or a read of the Web API (``backfill``).
Origin = Literal["event", "backfill"]


_TIMESTAMPS = ("operation_created_on", "enqueued_time", "recorded_at", "regarding_read_at")
#: What orjson would write otherwise than pydantic goes back to pydantic (``json_text``).
_EXACT_ONLY = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class AuditEntry(BaseModel):
    """One audit entry; field names are the contract of ``inspect`` and of every store."""

    model_config = ConfigDict(frozen=True)

    entry_id: str
    verdict: Verdict
    reason: Reason | None
    organization_id: str
    organization_name: str | None
    organization_claim: str | None
    message_name: str
    processsession_id: str
    processsession_name: str | None
    regarding_logical_name: str | None
    regarding_id: str | None
    regarding_name: str | None
    regarding_source: str | None
    user_id: str
    initiating_user_id: str
    correlation_id: str
    request_id: str | None
    operation_id: str
    depth: int
    stage: int
    mode: int
    operation_created_on: UtcTimestamp
    changes: list[Change]
    message_id: str | None
    sequence_number: int | None
    enqueued_time: UtcTimestamp | None
    delivery_count: int | None
    recorded_at: UtcTimestamp
    origin: Origin = "event"
    #: when the regarding was read through the Web API (``regarding_source: web_api``)
    regarding_read_at: UtcTimestamp | None = None
    #: ``v1:<key id>:<HMAC-SHA-256 hex>`` over the stored document (``shared.stores.seals``),
    #: set by the store that wrote the entry; None when no trail key was configured. The
    #: stored document itself holds ``seal: null``: the seal is kept beside it.
    seal: str | None = None

    def json_text(self) -> str:
        """The entry as the stores keep it: ``model_dump_json``'s document in 2/3 of its time.

        orjson writes what it can write exactly as pydantic would (JSON's own types, as
        ``audit_value`` makes every change); anything else in a change (a datetime, a Decimal,
        bytes, a set, a huge int, a non-text key...) makes it refuse, and pydantic writes it.
        """
        try:
            fields = dict(self.__dict__)
            fields["verdict"] = self.verdict.value
            fields["reason"] = self.reason.value if self.reason is not None else None
            for name in _TIMESTAMPS:
                if fields[name] is not None:
                    fields[name] = iso_utc(fields[name])
            fields["changes"] = [change.__dict__ for change in self.changes]
            return orjson.dumps(fields, option=_EXACT_ONLY).decode()
        except (TypeError, AttributeError):  # orjson.JSONEncodeError is a TypeError
            return self.model_dump_json()

    def to_json_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready values (GUIDs lower-case, datetimes UTC ISO-8601)."""
        return self.model_dump(mode="json")

    def event_content(self) -> dict[str, Any]:
        """What the event says, without what the broker or this service added: two entries
        with one ``entry_id`` are the same event exactly when this is equal."""
        excluded = set(BROKER_FIELDS)
        if self.regarding_source == "web_api":
            excluded |= RESOLVED_FIELDS
        content = self.model_dump(mode="json", exclude=excluded)
        # old_known derives from the message (is there a pre-image holding the column?), and
        # entries stored before it existed lack it: never a difference between two copies
        for change in content.get("changes") or []:
            change.pop("old_known", None)
        return content

    def differences(self, other: AuditEntry) -> list[str]:
        """The fields whose event content differs from ``other``'s."""
        mine, theirs = self.event_content(), other.event_content()
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))


def entry_id_of(organization_id: str, operation_id: str, session_id: str, message: str) -> str:
    """The deterministic key of one Dataverse event (see the module docstring), from the
    event's GUIDs as lower-case text and its message name."""
    name = f"{organization_id}:{operation_id}:{session_id}:{ascii_lower(message)}"
    return str(uuid5(ENTRY_NAMESPACE, name))


def audit_value(value: Any, formatted: str | None = None) -> Any:
    """A Dataverse value as JSON: lookups as {logical_name, id, name}, Money as a decimal
    string, choices as {value, label}, dates as UTC ISO-8601."""
    match value:
        case None | str() | bool() | int():
            return value
        case EntityReference():  # the most common complex values first: lookups, dates
            return {
                "logical_name": ascii_lower(value.logical_name),
                "id": str(value.id),
                "name": value.name,
            }
        case datetime():
            return iso_utc(value)
        case Decimal():
            return str(value)
        case OptionSetValue():
            return (
                {"value": value.value, "label": formatted} if formatted else {"value": value.value}
            )
        case Money():
            return str(value.value)
        case Entity():
            return {
                "logical_name": ascii_lower(value.logical_name),
                "id": str(value.id) if value.id else None,
                "attributes": {
                    k: audit_value(v, value.formatted_values.get(k))
                    for k, v in value.attributes.items()
                },
            }
        case EntityCollection():
            return {
                "entity_name": value.entity_name,
                "entities": [audit_value(e) for e in value.entities],
            }
        case AliasedValue():
            return {
                "entity_logical_name": value.entity_logical_name,
                "attribute_logical_name": value.attribute_logical_name,
                "value": audit_value(value.value),
            }
        case OpaqueValue():
            return {"type": value.type_name, "value": audit_value(value.data)}
        case list():
            return [audit_value(item) for item in value]
        case dict():
            return {str(k): audit_value(v) for k, v in value.items()}
        case _:
            return str(value)


def _deleted_values(
    context: RemoteExecutionContext, redact: frozenset[str]
) -> list[dict[str, Any]]:
    """A Delete's changes: each column its pre-image held, as the value it had when the
    row was deleted (old, known; new null). Other messages without a Target: none."""
    if ascii_lower(context.message_name) != "delete":
        return []
    seen: dict[str, dict[str, Any]] = {}
    for image in context.pre_entity_images.values():
        for column in sorted(image.attributes):
            if column in seen or column.lower() == "processsessionid":
                continue
            old = audit_value(image.attributes[column], image.formatted_values.get(column))
            if column.lower() in redact and old is not None:
                old = REDACTED
            seen[column] = {"column": column, "old": old, "new": None, "old_known": True}
    return [seen[column] for column in sorted(seen)]


def changes_of(
    context: RemoteExecutionContext, redact: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Every Target column but the primary key: new from Target, old from a pre-image.

    Columns in ``redact`` (lower-case names) keep their row, with both values replaced by
    ``REDACTED``, so the trail shows that personal data changed without holding it.
    """
    target = context.target
    if target is None:
        return _deleted_values(context, redact)
    primary_key = f"{ascii_lower(target.logical_name)}id"
    attributes, formatted = target.attributes, target.formatted_values
    # the first pre-image holding each column, in one pass over the images (asking every
    # image for every column is quadratic in a hostile body of many columns and images)
    holders: dict[str, Entity] = {}
    for image in context.pre_entity_images.values():
        for name in image.attributes:
            holders.setdefault(name, image)
    changes: list[dict[str, Any]] = []
    for column in sorted(attributes):
        lowered = column.lower()
        if lowered == primary_key:
            continue
        pre = holders.get(column)
        old = audit_value(pre.attributes[column], pre.formatted_values.get(column)) if pre else None
        new = audit_value(attributes[column], formatted.get(column))
        if lowered in redact:
            old = None if old is None else REDACTED
            new = None if new is None else REDACTED
        known = pre is not None
        changes.append({"column": column, "old": old, "new": new, "old_known": known})
    return changes


def _session_name(context: RemoteExecutionContext) -> str | None:
    sources = [context.target] if context.target else []
    sources += [*context.post_entity_images.values(), *context.pre_entity_images.values()]
    for entity in sources:
        name = entity.attributes.get("name")
        if isinstance(name, str):
            return name
    return None


def build_entry(
    context: RemoteExecutionContext,
    judgement: Judgement,
    message: InboundMessage,
    recorded_at: datetime,
    redact: frozenset[str] = frozenset(),
    read_at: datetime | None = None,
) -> AuditEntry:
    """The audit entry of an accepted or rejected event; ``read_at``: when the regarding was
    read through the Web API, if it was."""
    regarding = judgement.regarding
    reference = regarding.value if regarding else None
    organization_id = str(context.organization_id)
    operation_id = str(context.operation_id)
    session_id = str(context.record_id)
    session_name = _session_name(context)
    return AuditEntry(
        entry_id=entry_id_of(organization_id, operation_id, session_id, context.message_name),
        verdict=judgement.verdict,
        reason=judgement.reason,
        organization_id=organization_id,
        organization_name=context.organization_name,
        organization_claim=message.get_property(CLAIM_ORGANIZATION),
        message_name=context.message_name,
        processsession_id=session_id,
        # the session's name is its `name` column: redacting `name` redacts it here too
        processsession_name=REDACTED
        if "name" in redact and session_name is not None
        else session_name,
        regarding_logical_name=ascii_lower(reference.logical_name) if reference else None,
        regarding_id=str(reference.id) if reference else None,
        regarding_name=reference.name if reference else None,
        regarding_source=regarding.source.value if regarding else None,
        user_id=str(context.user_id),
        initiating_user_id=str(context.initiating_user_id),
        correlation_id=str(context.correlation_id),
        request_id=str(context.request_id) if context.request_id else None,
        operation_id=operation_id,
        depth=context.depth,
        stage=context.stage,
        mode=context.mode,
        operation_created_on=context.operation_created_on,
        changes=changes_of(context, redact),
        message_id=message.message_id,
        sequence_number=message.sequence_number,
        enqueued_time=message.enqueued_time,
        delivery_count=message.delivery_count,
        recorded_at=recorded_at,
        regarding_read_at=read_at,
    )
