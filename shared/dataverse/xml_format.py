"""DataContractSerializer XML (``application/xml``) -> plain values for the models.

The dialect (reference §4): elements mirror the JSON members; collections are
``KeyValuePairOf...`` items with ``key``/``value`` children; typed values carry ``i:type``
(``Entity``, ``b:string``, ``b:dateTime``...); nulls are ``i:nil="true"``. Namespace prefixes
are arbitrary, so elements and ``i:type`` values are matched by local name. DTDs and entity
declarations are refused (defusedxml), and depth is checked while parsing, before a tree of
a hostile document is complete.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element, ParseError

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
from shared.errors import MalformedMessage
from shared.verdicts import Reason

_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_TYPE = _XSI + "type"
_NIL = _XSI + "nil"
_XS_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?"
)
_INTEGERS = {
    "int",
    "long",
    "short",
    "byte",
    "unsignedByte",
    "unsignedShort",
    "unsignedInt",
    "unsignedLong",
}
_DECIMALS = {"decimal", "double", "float"}


def local(tag: str) -> str:
    """``{namespace}Name`` -> ``Name``."""
    return tag.rsplit("}", 1)[-1]


def parse(raw: bytes, max_depth: int) -> dict[str, Any]:
    """Parse an XML body into the context's plain members (collections become dicts)."""
    root = _parse_tree(raw, max_depth)
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


def _is_nil(element: Element) -> bool:
    return element.get(_NIL) in ("true", "1")


def context_members(root: Element, path: str) -> dict[str, Any]:
    """Turn one (possibly nested) RemoteExecutionContext element into model input."""
    members: dict[str, Any] = {}
    for child in root:
        name = local(child.tag)
        where = f"{path}/{name}"
        if name in members:
            schema_violation(where, "member appears twice")
        if _is_nil(child):
            members[name] = None
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
        for part in item:
            if local(part.tag) == "key":
                key_el = part
            elif local(part.tag) == "value":
                value_el = part
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


def _child(element: Element, name: str) -> Element | None:
    for child in element:
        if local(child.tag) == name:
            return child
    return None


def _text(element: Element, name: str) -> str | None:
    child = _child(element, name)
    if child is None or _is_nil(child):
        return None
    return child.text or ""


def value_of(element: Element, path: str) -> Any:
    """A typed value (``i:type``) of an attribute or a parameter."""
    if _is_nil(element):
        return None
    type_name = _type_of(element)
    text = element.text or ""
    try:
        match type_name:
            case None | "string" | "anyURI" | "char":
                return text if not len(element) else generic(element)
            case "guid":
                return text.strip().lower()
            case "boolean":
                if text.strip() not in ("true", "false", "1", "0"):
                    schema_violation(path, f"not an xs:boolean: {text[:40]!r}")
                return text.strip() in ("true", "1")
            case "dateTime":
                return xs_datetime(text, path)
            case t if t in _INTEGERS:
                return int(text)
            case t if t in _DECIMALS:
                return Decimal(text.strip())
            case "Entity":
                return entity(element, path)
            case "EntityReference":
                return entity_reference(element, path)
            case "OptionSetValue":
                return OptionSetValue(value=_text(element, "Value"))
            case "Money":
                return Money(value=(_text(element, "Value") or "").strip())
            case "EntityCollection":
                items = _child(element, "Entities")
                return EntityCollection(
                    entity_name=_text(element, "EntityName"),
                    entities=[
                        entity(e, f"{path}/Entities[{i}]")
                        for i, e in enumerate(items if items is not None else [])
                    ],
                    more_records=_text(element, "MoreRecords") == "true",
                    total_record_count=_text(element, "TotalRecordCount"),
                )
            case "AliasedValue":
                inner = _child(element, "Value")
                return AliasedValue(
                    attribute_logical_name=_text(element, "AttributeLogicalName"),
                    entity_logical_name=_text(element, "EntityLogicalName"),
                    value=None if inner is None else value_of(inner, f"{path}/Value"),
                )
            case "ArrayOfKeyValuePairOfstringstring":
                return [
                    {"key": _text(item, "key"), "value": _text(item, "value")} for item in element
                ]
            case _:
                return OpaqueValue(type_name=str(type_name), data=generic(element))
    except (ValueError, InvalidOperation) as exc:
        if isinstance(exc, ValidationError):
            schema_violation(path, f"not a valid {type_name}: {describe_validation(exc)}")
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
    formatted: dict[str, str] = {}
    attrs_el = _child(element, "Attributes")
    if attrs_el is not None:
        for key, value_el in pairs(attrs_el, f"{path}/Attributes"):
            attributes[key] = value_of(value_el, f"{path}/Attributes[{key!r}]")
    formatted_el = _child(element, "FormattedValues")
    if formatted_el is not None:
        for key, value_el in pairs(formatted_el, f"{path}/FormattedValues"):
            formatted[key] = value_el.text or ""
    try:
        return Entity(
            logical_name=_text(element, "LogicalName"),
            id=_text(element, "Id"),
            attributes=attributes,
            formatted_values=formatted,
        )
    except ValidationError as exc:
        schema_violation(path, f"not a valid Entity: {describe_validation(exc)}")


def entity_reference(element: Element, path: str) -> EntityReference:
    """An ``<EntityReference>``-shaped element (a lookup value)."""
    try:
        return EntityReference(
            logical_name=_text(element, "LogicalName"),
            id=_text(element, "Id"),
            name=_text(element, "Name"),
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
