"""Pydantic models of ``Microsoft.Xrm.Sdk.RemoteExecutionContext`` and the values it carries.

Both wire formats (``json_format``, ``xml_format``) turn their dialect into these models, so
the rules and the audit see one clean shape. ``ParentContext`` is kept raw and decoded on first
read (``parent_context``). Collections that Dataverse sends as key/value
lists are dicts here, in message order. Unknown members are ignored, since newer Dataverse
builds add members (reference §3.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_pascal

from shared.dataverse.numbers import Int32, check_decimal

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(name: str) -> str:
    """Lower-case A-Z only: Dataverse logical and message names are ASCII, and ``str.lower``
    would fold look-alikes (KELVIN SIGN U+212A -> ``k``) into a name they are not."""
    return name.translate(_ASCII_LOWER)


def _as_utc(value: datetime) -> datetime:
    """A datetime with no zone is UTC (xs:dateTime Unspecified, reference §3.6)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _a_datetime(value: object) -> object:
    """A DateTime member reaches the model as a datetime (JSON ``/Date(ms)/`` text and XML
    ``xs:dateTime`` are converted by their walks); anything else, a JSON number for one, is
    what .NET's serializers refuse."""
    if not isinstance(value, datetime):
        raise ValueError(
            f"a DateTime is /Date(ms)/ text (JSON) or xs:dateTime (XML), not {type(value).__name__}"
        )
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_a_datetime), AfterValidator(_as_utc)]

#: The text forms .NET's Guid reads: N (32 digits), D (8-4-4-4-12), B ({D}) and P ((D)).
#: Python's UUID also takes ``urn:uuid:``, hyphens anywhere and non-ASCII digits.
_GUID_FORMS = re.compile(
    r"[0-9a-fA-F]{32}"
    r"|(?P<b>\{)?(?P<p>\()?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}(?(b)\})(?(p)\))",
    re.ASCII,
)


def _dotnet_guid(value: object) -> object:
    """The D form (36 characters) goes on to pydantic-core's strict parser as it is, the usual
    case; the other forms .NET reads are checked here and passed on as D; anything else is
    refused, so Python's and Rust's wider tastes (``urn:uuid:``) never decide."""
    if isinstance(value, str) and len(value) != 36:
        text = value.strip(" \t\r\n")
        match = _GUID_FORMS.fullmatch(text)
        if match is None or (match.group("b") and match.group("p")):
            raise ValueError(
                f"{value[:60]!r} is not a GUID as .NET reads one (32 hex digits, 8-4-4-4-12, "
                "or that in braces or parentheses)"
            )
        return str(UUID(text.strip("{}()")))
    return value


#: A GUID member: only the forms .NET reads.
Guid = Annotated[UUID, BeforeValidator(_dotnet_guid)]


class _WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_pascal,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        arbitrary_types_allowed=True,
    )


class EntityReference(_WireModel):
    """A lookup: ``regardingobjectid``, ``ownerid``, ``OwningExtension``..."""

    logical_name: str
    id: Guid
    name: str | None = None


class OptionSetValue(_WireModel):
    """A choice, state or status value (an Int32 on the wire)."""

    value: Int32


class Money(_WireModel):
    """A currency amount, kept as Decimal so it is never rounded."""

    value: Annotated[Decimal, AfterValidator(check_decimal)]


class AliasedValue(_WireModel):
    """A column of a linked table, returned by a query."""

    attribute_logical_name: str | None = None
    entity_logical_name: str | None = None
    value: Any = None


class OpaqueValue(_WireModel):
    """A typed value this service does not model (e.g. a multi-select choice), kept verbatim."""

    type_name: str
    data: Any = None


class Entity(_WireModel):
    """A record: the Create/Update ``Target`` or an entity image."""

    logical_name: str
    id: Guid | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    #: Labels of choices, lookups and dates; a null label is kept as null.
    formatted_values: dict[str, str | None] = Field(default_factory=dict)


class EntityCollection(_WireModel):
    """A list of records, e.g. a RetrieveMultiple result."""

    entity_name: str | None = None
    entities: list[Entity] = Field(default_factory=list)
    more_records: bool = False
    total_record_count: Int32 | None = None


class RemoteExecutionContext(_WireModel):
    """The execution context Dataverse posts for one event (reference §3.2)."""

    message_name: str
    primary_entity_name: str
    primary_entity_id: Guid
    organization_id: Guid
    organization_name: str | None = None
    operation_id: Guid
    operation_created_on: UtcDatetime
    correlation_id: Guid
    request_id: Guid | None = None
    user_id: Guid
    initiating_user_id: Guid
    business_unit_id: Guid | None = None
    depth: Int32
    stage: Int32
    mode: Int32
    isolation_mode: Int32 | None = None
    initiating_user_agent: str | None = None
    secondary_entity_name: str | None = None
    input_parameters: dict[str, Any] = Field(default_factory=dict)
    output_parameters: dict[str, Any] = Field(default_factory=dict)
    shared_variables: dict[str, Any] = Field(default_factory=dict)
    pre_entity_images: dict[str, Entity] = Field(default_factory=dict)
    post_entity_images: dict[str, Entity] = Field(default_factory=dict)
    owning_extension: EntityReference | None = None
    _parent_loader: Callable[[], RemoteExecutionContext] | None = PrivateAttr(default=None)

    @property
    def parent_context(self) -> RemoteExecutionContext | None:
        """The calling pipeline's context, decoded when first read.

        The verdict never reads it (reference §3.7), so decoding it eagerly would double the
        work of every message; a malformed parent raises MalformedMessage here, when read.
        """
        return self._parent_loader() if self._parent_loader is not None else None

    @property
    def record_id(self) -> UUID:
        """The primary record's id: PrimaryEntityId, or, where that is the empty GUID (which
        virtual tables post, with the id in the Target), the Target's id."""
        if self.primary_entity_id.int == 0 and self.target is not None and self.target.id:
            return self.target.id
        return self.primary_entity_id

    @property
    def target(self) -> Entity | None:
        """The ``Target`` input parameter when it is an Entity (Create, Update)."""
        value = self.input_parameters.get("Target")
        return value if isinstance(value, Entity) else None
