"""DataContractSerializer XML (``application/xml``) -> plain values for the models.

The dialect (reference §4): elements mirror the JSON members; collections are
``KeyValuePairOf...`` items with ``key``/``value`` children; typed values carry ``i:type``
(``Entity``, ``b:string``, ``b:dateTime``...); nulls are ``i:nil="true"``. Namespace prefixes
are arbitrary, so elements and ``i:type`` values are matched by local name.

Two parsers, one result: a body with no ``<!`` cannot hold a DTD, so the C parser builds its
tree (``fast_tree``); any other body, and any body that one refuses or finds too deep, goes to
defusedxml (``_parse_tree``), which refuses DTDs and entity declarations and checks the depth
while parsing, before a hostile tree is complete, and words the refusal.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element, ParseError, fromstring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse
from pydantic import ValidationError

from shared.dataverse.json_format import (
    IMAGE_COLLECTIONS,
    PARAMETER_COLLECTIONS,
    PARENT,
    describe_validation,
    schema_violation,
)
from shared.dataverse.model import (
    AliasedValue,
    Entity,
    EntityCollection,
    EntityReference,
    Money,
    OpaqueValue,
    OptionSetValue,
)
from shared.dataverse.numbers import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    NumberError,
    xml_decimal,
    xml_double,
    xml_integer,
)
from shared.errors import MalformedMessage
from shared.verdicts import Reason

_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_TYPE = _XSI + "type"
_NIL = _XSI + "nil"
_XS_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,7}))?(Z|[+-]\d\d:\d\d)?", re.ASCII
)
_GUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", re.ASCII)
#: The .NET integral types by their xs: name, with their ranges.
_INTEGERS = {
    "int": (INT32_MIN, INT32_MAX),
    "long": (INT64_MIN, INT64_MAX),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-128, 127),
    "unsignedByte": (0, 255),
    "unsignedShort": (0, 2**16 - 1),
    "unsignedInt": (0, 2**32 - 1),
    "unsignedLong": (0, 2**64 - 1),
}
#: Context members that are Int32 on the wire.
_INT32_MEMBERS = {"Depth", "Stage", "Mode", "IsolationMode"}
_DECLARED_ENCODING = re.compile(rb"""\A\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")


@functools.lru_cache(maxsize=1024)  # a context repeats a few dozen tags; hostile ones evict
def local(tag: str) -> str:
    """``{namespace}Name`` -> ``Name``."""
    return tag.rsplit("}", 1)[-1]


def parse(raw: bytes, max_depth: int) -> dict[str, Any]:
    """Parse an XML body into the context's plain members (collections become dicts)."""
    declared = _DECLARED_ENCODING.match(raw[:200])
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise MalformedMessage(
            Reason.MALFORMED_XML,
            f"XML declares encoding {declared.group(1).decode('ascii', 'replace')!r}; "
            "Dataverse sends UTF-8 only",
        )
    root = fast_tree(raw, max_depth)
    return root_members(_parse_tree(raw, max_depth) if root is None else root)


def fast_tree(raw: bytes, max_depth: int) -> Element | None:
    """The element tree through the C parser, or None whenever the reference parser
    (defusedxml, which drives expat from Python, event by event) must decide and word it.

    Safe without defusedxml: a body holding no ``<!`` has no DOCTYPE, so no entity other than
    the five predefined ones can be declared or expanded and nothing external is fetched (and
    no comment or CDATA section either: those, too, go to the reference parser). Depth is
    counted level by level on the finished tree, at most ``max_depth + 1`` levels.
    """
    if b"!" in raw and b"<!" in raw:  # the one-byte search is 20x faster; "!" is rare
        return None
    try:
        root = fromstring(raw)  # noqa: S314 - no "<!": no DTD, no entity (docstring)
    except ParseError:
        return None
    level, depth = [root], 0
    while level:
        depth += 1
        if depth > max_depth:
            return None
        level = [child for element in level for child in element]
    return root


def root_members(root: Element) -> dict[str, Any]:
    """The members of a RemoteExecutionContext root element (XML or binary XML)."""
    if local(root.tag) != "RemoteExecutionContext":
        raise MalformedMessage(
            Reason.NOT_EXECUTION_CONTEXT,
            f"XML root element is <{local(root.tag)}>, not <RemoteExecutionContext>",
        )
    return context_members(root, "/RemoteExecutionContext")


def _parse_tree(raw: bytes, max_depth: int) -> Element:
    depth = 0
    root: Element | None = None
    try:
        for event, element in iterparse(io.BytesIO(raw), events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if root is None:
                    root = element
                if depth > max_depth:
                    raise MalformedMessage(
                        Reason.NESTING_TOO_DEEP,
                        f"XML nests more than {max_depth} elements deep at "
                        f"<{local(element.tag)}> (real contexts use ~20)",
                    )
            else:
                depth -= 1
    except DefusedXmlException as exc:
        raise MalformedMessage(
            Reason.XML_FORBIDDEN_CONSTRUCT,
            f"XML holds a forbidden construct ({type(exc).__name__}): DTDs, entity "
            "declarations and external references are refused",
        ) from exc
    except ParseError as exc:
        line, column = exc.position
        raise MalformedMessage(
            Reason.MALFORMED_XML, f"XML does not parse: {exc.msg} (line {line}, column {column})"
        ) from exc
    if root is None:  # pragma: no cover - expat reports "no element found" first
        raise MalformedMessage(Reason.MALFORMED_XML, "XML has no root element")
    return root


def _is_nil(element: Element, path: str = "") -> bool:
    """``i:nil="true"``; a nil element that has content is refused (which would win?)."""
    if element.get(_NIL) not in ("true", "1"):
        return False
    if len(element) or (element.text or "").strip():
        schema_violation(path or local(element.tag), 'i:nil="true" element has content')
    return True


def context_members(root: Element, path: str) -> dict[str, Any]:
    """Turn one (possibly nested) RemoteExecutionContext element into model input."""
    members: dict[str, Any] = {}
    for child in root:
        name = local(child.tag)
        where = f"{path}/{name}"
        if name in members:
            schema_violation(where, "member appears twice")
        if _is_nil(child, where):
            members[name] = None
        elif name in _INT32_MEMBERS:
            members[name] = _integer(child.text or "", "int", where)
        elif name in PARAMETER_COLLECTIONS:
            members[name] = {
                key: value_of(v, f"{where}[{key!r}]") for key, v in pairs(child, where)
            }
        elif name in IMAGE_COLLECTIONS:
            members[name] = {key: entity(v, f"{where}[{key!r}]") for key, v in pairs(child, where)}
        elif name == "ParentContext":
            members[PARENT] = (child, where)  # decoded when first read
        elif name == "OwningExtension":
            members[name] = entity_reference(child, where)
        elif name == "OperationCreatedOn":
            members[name] = xs_datetime(child.text or "", where)
        elif len(child):
            schema_violation(where, "expected a simple value, found child elements")
        else:
            members[name] = child.text or ""
    return members


def pairs(collection: Element, path: str) -> Iterator[tuple[str, Element]]:
    """``KeyValuePairOf...`` items as (key, value element); keys must be unique."""
    seen: set[str] = set()
    for index, item in enumerate(collection):
        key_el = value_el = None
        if len(item) == 2:  # the usual <key/><value/>, without a search for each
            first, second = item
            if local(first.tag) == "key" and local(second.tag) == "value":
                key_el, value_el = first, second
        if key_el is None:
            children = _Children(item, f"{path}[{index}]")
            key_el, value_el = children.child("key"), children.child("value")
        if key_el is None or value_el is None:
            schema_violation(f"{path}[{index}]", "expected <key> and <value> children")
        key = key_el.text or ""
        if key in seen:
            schema_violation(path, f"duplicate key {key!r}")
        seen.add(key)
        yield key, value_el


def _type_of(element: Element) -> str | None:
    hint = element.get(_TYPE)
    return hint.rsplit(":", 1)[-1] if hint else None


class _Children:
    """An element's children by local name, read in one pass. A name given twice is refused
    when it is asked for (the verdict must not depend on which comes first); other children
    are ignored, as newer Dataverse builds add members."""

    __slots__ = ("_found", "_path", "_twice")

    def __init__(self, element: Element, path: str = "") -> None:
        self._path = path
        self._found: dict[str, Element] = {}
        self._twice: set[str] = set()
        for child in element:
            name = local(child.tag)
            if name in self._found:
                self._twice.add(name)
            else:
                self._found[name] = child

    def child(self, name: str) -> Element | None:
        """The one child of that local name, or None."""
        if name in self._twice:
            schema_violation(f"{self._path}/{name}", "element appears twice")
        return self._found.get(name)

    def text(self, name: str) -> str | None:
        """That child's text ("" when empty), or None when it is absent or nil."""
        child = self.child(name)
        if child is None or _is_nil(child, f"{self._path}/{name}"):
            return None
        return child.text or ""


def _string_pair(children: _Children) -> dict[str, str | None]:
    return {"key": children.text("key"), "value": children.text("value")}


def _integer(text: str, type_name: str, path: str) -> int:
    low, high = _INTEGERS[type_name]
    try:
        return xml_integer(text, low, high)
    except NumberError as exc:
        schema_violation(path, f"not a valid {type_name}: {exc}")


def _optional_integer(text: str | None, path: str) -> int | None:
    return None if text is None else _integer(text, "int", path)


def value_of(element: Element, path: str) -> Any:
    """A typed value (``i:type``) of an attribute or a parameter."""
    if _is_nil(element, path):
        return None
    type_name = _type_of(element)
    text = element.text or ""
    try:
        match type_name:
            case None | "string" | "anyURI" | "char":
                return text if not len(element) else generic(element)
            case "guid":
                if not _GUID.fullmatch(text.strip()):
                    schema_violation(path, f"not a GUID: {text[:40]!r}")
                return text.strip().lower()
            case "boolean":
                if text.strip() not in ("true", "false", "1", "0"):
                    schema_violation(path, f"not an xs:boolean: {text[:40]!r}")
                return text.strip() in ("true", "1")
            case "dateTime":
                return xs_datetime(text, path)
            case t if t in _INTEGERS:
                return _integer(text, t, path)
            case "decimal":
                return xml_decimal(text)
            case "double" | "float":
                return xml_double(text)
            case "Entity":
                return entity(element, path)
            case "EntityReference":
                return entity_reference(element, path)
            case "OptionSetValue":
                value = _Children(element, path).text("Value")
                return OptionSetValue(value=_optional_integer(value, f"{path}/Value"))
            case "Money":
                return Money(value=xml_decimal(_Children(element, path).text("Value") or ""))
            case "EntityCollection":
                children = _Children(element, path)
                items = children.child("Entities")
                return EntityCollection(
                    entity_name=children.text("EntityName"),
                    entities=[
                        entity(e, f"{path}/Entities[{i}]")
                        for i, e in enumerate(items if items is not None else [])
                    ],
                    more_records=children.text("MoreRecords") == "true",
                    total_record_count=_optional_integer(
                        children.text("TotalRecordCount"), f"{path}/TotalRecordCount"
                    ),
                )
            case "AliasedValue":
                children = _Children(element, path)
                inner = children.child("Value")
                return AliasedValue(
                    attribute_logical_name=children.text("AttributeLogicalName"),
                    entity_logical_name=children.text("EntityLogicalName"),
                    value=None if inner is None else value_of(inner, f"{path}/Value"),
                )
            case "ArrayOfKeyValuePairOfstringstring":
                return [_string_pair(_Children(item)) for item in element]
            case _:
                return OpaqueValue(type_name=str(type_name), data=generic(element))
    except (ValueError, InvalidOperation) as exc:
        if isinstance(exc, ValidationError):
            schema_violation(path, f"not a valid {type_name}: {describe_validation(exc)}")
        if isinstance(exc, NumberError):
            schema_violation(path, f"not a valid {type_name}: {exc}")
        schema_violation(path, f"not a valid {type_name}: {text[:40]!r}")


def generic(element: Element) -> Any:
    """An element this service does not model, kept as text or nested dicts."""
    if _is_nil(element):
        return None
    if not len(element):
        return element.text or ""
    return {local(child.tag): generic(child) for child in element}


def entity(element: Element, path: str) -> Entity:
    """An ``<Entity>``-shaped element: a Target, an image, or a collection item."""
    attributes: dict[str, Any] = {}
    formatted: dict[str, str | None] = {}
    children = _Children(element, path)
    attrs_el = children.child("Attributes")
    if attrs_el is not None:
        for key, value_el in pairs(attrs_el, f"{path}/Attributes"):
            attributes[key] = value_of(value_el, f"{path}/Attributes[{key!r}]")
    formatted_el = children.child("FormattedValues")
    if formatted_el is not None:
        for key, value_el in pairs(formatted_el, f"{path}/FormattedValues"):
            where = f"{path}/FormattedValues[{key!r}]"
            formatted[key] = None if _is_nil(value_el, where) else value_el.text or ""
    try:
        return Entity(
            logical_name=children.text("LogicalName"),
            id=children.text("Id"),
            attributes=attributes,
            formatted_values=formatted,
        )
    except ValidationError as exc:
        schema_violation(path, f"not a valid Entity: {describe_validation(exc)}")


def entity_reference(element: Element, path: str) -> EntityReference:
    """An ``<EntityReference>``-shaped element (a lookup value)."""
    children = _Children(element, path)
    try:
        return EntityReference(
            logical_name=children.text("LogicalName"),
            id=children.text("Id"),
            name=children.text("Name"),
        )
    except ValidationError as exc:
        schema_violation(path, f"not a valid EntityReference: {describe_validation(exc)}")


def xs_datetime(text: str, path: str) -> datetime:
    """``xs:dateTime`` -> UTC datetime; no zone designator means UTC (reference §3.6)."""
    match = _XS_DATETIME.fullmatch(text.strip())
    if match is None:
        schema_violation(path, f"not an xs:dateTime: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        naive = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro
        )
        if not zone or zone == "Z":
            return naive.replace(tzinfo=UTC)
        return datetime.fromisoformat(naive.isoformat() + zone).astimezone(UTC)
    except (ValueError, OverflowError):
        schema_violation(path, f"xs:dateTime out of range: {text[:40]!r}")
