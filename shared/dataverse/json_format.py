"""DataContractJsonSerializer JSON (``application/json``) -> plain values for the models.

The dialect (reference §3): collections are lists of ``{"key", "value"}`` pairs; complex
values in ``object`` slots carry a ``"__type": "Name:namespace"`` hint; dates are strings
``/Date(ms±hhmm)/``. A suffixed date means ms + offset: Dataverse's UTC wall clocks reach the
serializer with the Unspecified kind and are written as if server-local (reference §3.6, from
real captures), so adding the offset back gives Dataverse's own value and agrees with the XML
form. Only that exact form is a date; any other string is text.

Two parsers, one result: msgspec's C parser takes the usual body (``fast_document``) and hands
anything it cannot vouch for to the standard library's ``json`` with hooks
(``reference_document``), which decides and words every refusal.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

import msgspec
from pydantic import ValidationError

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
    DECIMAL_DIGITS,
    NumberError,
    OutOfRange,
    check_number,
    parse_json_float,
    parse_json_int,
)
from shared.errors import MalformedMessage
from shared.verdicts import Reason

PARAMETER_COLLECTIONS = ("InputParameters", "OutputParameters", "SharedVariables")
IMAGE_COLLECTIONS = ("PreEntityImages", "PostEntityImages")
#: Where a format leaves the raw ParentContext (and its path) for decode() to load lazily.
PARENT = "__parent__"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(r"/Date\((-?[0-9]+)(?:([+-])([0-9]{2})([0-9]{2}))?\)/", re.ASCII)
#: .NET DateTime spans years 1-9999: no more than 15 digits of milliseconds.
_MAX_DATE_DIGITS = 15
_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_COLON_ESCAPE = re.compile(rb"\\u003[aA]")
_QUOTING_ESCAPES = re.compile(rb'\\[\\"]')
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def schema_violation(path: str, problem: str) -> NoReturn:
    """Raise the decode error for a body that parses but is not a valid context."""
    raise MalformedMessage(Reason.SCHEMA_VIOLATION, f"{path}: {problem}")


def nesting_depth(body: bytes, limit: int = 1000) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text outside strings, without parsing it; any
    depth over ``limit`` is reported as ``limit + 1``."""
    return _depth(_QUOTING_ESCAPES.sub(b"", body), limit)


_BRACKET_RUNS = re.compile(rb"[\[{]+|[\]}]+")
_OPENERS = frozenset(b"[{")


def _skeleton(unescaped: bytes) -> bytes:
    """The brackets of a body outside its strings (escaped backslashes and quotes dropped)."""
    quoted = unescaped.translate(None, _NOT_STRUCTURE)
    skeleton = quoted.replace(b'""', b"")  # strings holding no bracket, the usual case
    if b'"' in skeleton:  # some string holds a bracket: pair the quotes properly
        skeleton = _STRING.sub(b"", quoted)
    return skeleton


def _running_depth(skeleton: bytes, limit: int) -> int:
    """The deepest the brackets of ``skeleton`` nest (a closer with nothing open is ignored,
    an opener never closed still counts), capped at ``limit + 1``.

    One pass over runs of openers and of closers, found by a C regex: a real body has a few
    hundred runs; a hostile one at most one per bracket, and work stays linear in the body
    (peeling innermost pairs level by level, as before, was linear only per level).
    """
    depth = deepest = 0
    for run in _BRACKET_RUNS.findall(skeleton):
        if run[0] in _OPENERS:
            depth += len(run)
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return limit + 1
        else:
            depth = max(0, depth - len(run))
    return deepest


def _depth(unescaped: bytes, limit: int) -> int:
    """``nesting_depth`` of a body whose escaped backslashes and quotes are already dropped:
    keep only quotes and brackets, drop string literals (C-speed bytes operations), then
    follow the runs of brackets."""
    return _running_depth(_skeleton(unescaped), limit)


#: Passes of innermost-pair peeling tried before the exact scan: a real body is cleared in a
#: few (C-speed bytes operations, cheaper than the scan's Python step per run of brackets).
_PEEL_PASSES = 6


def _deeper_than(unescaped: bytes, limit: int) -> bool:
    """``_depth(unescaped, limit) > limit``, usually without the exact scan: after ``k`` passes
    that each peel every innermost ``[]``/``{}`` pair, no position is open deeper than ``k``
    plus the openers left, so once that is within the limit the body is not too deep."""
    skeleton = _skeleton(unescaped)
    remaining = skeleton
    for passes in range(_PEEL_PASSES + 1):
        if passes + remaining.count(b"[") + remaining.count(b"{") <= limit:
            return False
        remaining = remaining.replace(b"[]", b".").replace(b"{}", b".").replace(b".", b"")
    return _running_depth(skeleton, limit) > limit


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate member {dup!r} in one JSON object")
    return obj


def _fast_float(literal: str) -> Decimal:
    """``parse_json_float``, but an OutOfRange literal stops the fast parse."""
    value = parse_json_float(literal)
    if isinstance(value, OutOfRange):
        raise ValueError(f"{value} is outside every .NET numeric type")
    return value


_FAST_DECODER = msgspec.json.Decoder(float_hook=_fast_float)
_FAST_ENCODER = msgspec.json.Encoder()
#: Digits as ``0``, all else as a space: a run of DECIMAL_DIGITS zeros is a digit run that long
#: (an integer literal that long is OutOfRange for the reference parser; msgspec would read it).
_DIGITS_ONLY = bytes.maketrans(
    bytes(range(256)), bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
)
_LONG_DIGIT_RUN = b"0" * DECIMAL_DIGITS


def fast_document(raw: bytes, max_depth: int) -> Any | None:
    """The parsed document through msgspec's C parser, or None whenever the reference parser
    (``reference_document``) might answer differently; it then decides and words the refusal.

    Exact, not heuristic: a nesting over the limit, a run of 29+ digits (the reference
    parser's OutOfRange integers) or anything msgspec refuses (lone surrogates, NaN, bad syntax)
    goes to the reference parser. So does any duplicate member, which msgspec, like every C
    JSON parser for Python, silently collapses. Those are found by counting colons: in valid
    JSON each member has exactly one colon outside strings, and re-encoding writes every
    string's colons back as literal colons, so the body's colons (its literal ones plus its
    ``\\u003a`` escapes) and the re-encoded document's are as many exactly when no object lost
    a member. A literal beyond every .NET number also goes to the reference parser
    (``_fast_float``).
    """
    unescaped = _QUOTING_ESCAPES.sub(b"", raw)  # for the depth and the colon escapes alike
    if _deeper_than(unescaped, max_depth) or _LONG_DIGIT_RUN in raw.translate(_DIGITS_ONLY):
        return None
    try:
        document = _FAST_DECODER.decode(raw)
        reencoded = _FAST_ENCODER.encode(document)
    except (msgspec.MsgspecError, ValueError, TypeError, OverflowError, RecursionError):
        return None
    # with escaped backslashes dropped, every \u003a left is a colon escape
    colons = raw.count(b":") + len(_COLON_ESCAPE.findall(unescaped))
    return None if colons != reencoded.count(b":") else document


def reference_document(text: str, raw: bytes, max_depth: int) -> Any:
    """The document through the standard library's parser, with every check worded."""
    if nesting_depth(raw, max_depth) > max_depth:
        raise MalformedMessage(
            Reason.NESTING_TOO_DEEP,
            f"JSON nests more than {max_depth} levels deep, the limit (real contexts use ~20)",
        )
    try:
        document = json.loads(
            text,
            parse_float=parse_json_float,
            parse_int=parse_json_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_members,
        )
    except json.JSONDecodeError as exc:
        raise MalformedMessage(
            Reason.MALFORMED_JSON,
            f"JSON does not parse: {exc.msg} (line {exc.lineno}, column {exc.colno}, "
            f"character {exc.pos} of {len(text)})",
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(Reason.MALFORMED_JSON, f"JSON does not parse: {exc}") from exc
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(document, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedMessage(
                Reason.MALFORMED_JSON, "JSON string holds a lone UTF-16 surrogate escape"
            ) from exc
    return document


def parse(text: str, raw: bytes, max_depth: int) -> dict[str, Any]:
    """Parse a JSON body into the context's plain members (collections become dicts)."""
    document = fast_document(raw, max_depth)
    if document is None:
        document = reference_document(text, raw, max_depth)
    if not isinstance(document, dict) or "MessageName" not in document:
        kind = type(document).__name__ if not isinstance(document, dict) else "object"
        raise MalformedMessage(
            Reason.NOT_EXECUTION_CONTEXT,
            f"JSON root is {'an ' + kind if kind == 'object' else 'a ' + kind} without "
            "MessageName: not a RemoteExecutionContext",
        )
    return context_members(document, "$")


def context_members(obj: dict[str, Any], path: str) -> dict[str, Any]:
    """Turn one (possibly nested) RemoteExecutionContext object into model input."""
    members = dict(obj)
    for name in PARAMETER_COLLECTIONS:
        if name in obj:
            members[name] = {
                key: value_of(raw, f"{path}.{name}[{key!r}]")
                for key, raw in pairs(obj[name], f"{path}.{name}")
            }
    for name in IMAGE_COLLECTIONS:
        if name in obj:
            members[name] = {
                key: entity(raw, f"{path}.{name}[{key!r}]")
                for key, raw in pairs(obj[name], f"{path}.{name}")
            }
    if isinstance(obj.get("OperationCreatedOn"), str):
        members["OperationCreatedOn"] = date(
            obj["OperationCreatedOn"], f"{path}.OperationCreatedOn"
        )
    if obj.get("OwningExtension") is not None:
        members["OwningExtension"] = entity_reference(
            obj["OwningExtension"], f"{path}.OwningExtension"
        )
    parent = members.pop("ParentContext", None)
    if parent is not None:
        if not isinstance(parent, dict):
            schema_violation(f"{path}.ParentContext", "expected an object or null")
        members[PARENT] = (parent, f"{path}.ParentContext")  # decoded when first read
    return members


def pairs(raw: Any, path: str) -> list[tuple[str, Any]]:
    """A DataContract key/value list as (key, raw value) pairs; keys must be unique.

    The usual list (objects with a string ``key``, keys unique) is read in one comprehension;
    anything else goes through ``_checked_pairs``, which finds and words the problem.
    """
    if type(raw) is list:
        try:
            result = [(item["key"], item.get("value")) for item in raw]
        except (TypeError, KeyError, AttributeError):
            return _checked_pairs(raw, path)
        keys = {key for key, _ in result if type(key) is str}
        if len(keys) == len(result):
            return result
    return _checked_pairs(raw, path)


def _checked_pairs(raw: Any, path: str) -> list[tuple[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        schema_violation(path, f"expected a list of key/value pairs, got {_kind(raw)}")
    result: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            schema_violation(f"{path}[{index}]", 'expected {"key": <string>, "value": ...}')
        key = item["key"]
        if key in seen:
            schema_violation(path, f"duplicate key {key!r}")
        seen.add(key)
        result.append((key, item.get("value")))
    return result


def date(text: str, path: str) -> datetime:
    """``/Date(ms)/`` -> UTC; ``/Date(ms±hhmm)/`` -> ms + offset, in UTC (reference §3.6)."""
    match = _DATE.fullmatch(text)
    if match is None:
        schema_violation(path, f"expected /Date(milliseconds)/, got {_excerpt(text)}")
    return _moment(match, text, path)


def _moment(match: re.Match[str], text: str, path: str) -> datetime:
    """The moment of a ``_DATE`` match: only the exact form is a date (``value_of`` keeps any
    other string as text; ``date`` refuses it)."""
    millis, sign, hours, minutes = match.groups()
    if len(millis.lstrip("-")) > _MAX_DATE_DIGITS:
        schema_violation(path, f"date out of range: {_excerpt(text)}")
    offset = None
    if sign and (hours != "00" or minutes != "00"):  # +0000, the usual suffix, adds nothing
        if int(hours) > 23 or int(minutes) > 59:
            schema_violation(path, f"date offset is not ±hhmm: {_excerpt(text)}")
        offset = timedelta(hours=int(hours), minutes=int(minutes))
    try:
        moment = _EPOCH + timedelta(0, 0, 0, int(millis))
        if offset is not None:
            moment += offset if sign == "+" else -offset
    except OverflowError:
        schema_violation(path, f"date out of range: {_excerpt(text)}")
    if not 1 <= moment.year <= 9999:  # pragma: no cover - bounded by the digit count
        schema_violation(path, f"date out of range: {_excerpt(text)}")
    return moment


def value_of(raw: Any, path: str) -> Any:
    """Any value of an ``object`` slot (an attribute or a parameter)."""
    if type(raw) is str:
        if raw.startswith("/Date("):
            match = _DATE.fullmatch(raw)
            return raw if match is None else _moment(match, raw, path)
        return raw
    if raw is None:
        return raw
    if isinstance(raw, dict):
        return _complex(raw, path)
    if isinstance(raw, list):
        return [value_of(item, f"{path}[{i}]") for i, item in enumerate(raw)]
    if isinstance(raw, OutOfRange):
        schema_violation(path, f"number {raw} is outside every .NET numeric type")
    if isinstance(raw, int | Decimal) and not isinstance(raw, bool):
        try:
            return check_number(raw)
        except NumberError as exc:
            schema_violation(path, str(exc))
    return raw  # bool


def _complex(raw: dict[str, Any], path: str) -> Any:
    hint = raw.get("__type")
    if hint is not None and not isinstance(hint, str):
        schema_violation(path, "__type must be a string")
    type_name = hint.split(":", 1)[0] if hint else _shape(raw)
    try:
        match type_name:
            case "Entity":
                return entity(raw, path)
            case "EntityReference":
                return entity_reference(raw, path)
            case "OptionSetValue":
                return OptionSetValue(value=raw.get("Value"))
            case "Money":
                return Money(value=raw.get("Value"))
            case "EntityCollection":
                items = raw.get("Entities") or []
                if not isinstance(items, list):
                    schema_violation(f"{path}.Entities", "expected a list")
                return EntityCollection(
                    entity_name=raw.get("EntityName"),
                    entities=[entity(e, f"{path}.Entities[{i}]") for i, e in enumerate(items)],
                    more_records=bool(raw.get("MoreRecords")),
                    total_record_count=raw.get("TotalRecordCount"),
                )
            case "AliasedValue":
                return AliasedValue(
                    attribute_logical_name=raw.get("AttributeLogicalName"),
                    entity_logical_name=raw.get("EntityLogicalName"),
                    value=value_of(raw.get("Value"), f"{path}.Value"),
                )
            case "":
                return {k: value_of(v, f"{path}.{k}") for k, v in raw.items()}
            case _:
                data = {k: value_of(v, f"{path}.{k}") for k, v in raw.items() if k != "__type"}
                return OpaqueValue(type_name=type_name, data=data)
    except ValidationError as exc:
        schema_violation(path, f"not a valid {type_name}: {describe_validation(exc)}")


def _shape(raw: dict[str, Any]) -> str:
    """Type of a complex value without a hint (hand-made or pretty-printed input)."""
    if "LogicalName" in raw and "Attributes" in raw:
        return "Entity"
    if "LogicalName" in raw and "Id" in raw:
        return "EntityReference"
    return ""


def entity(raw: Any, path: str) -> Entity:
    """An Entity object: a Target, an image, or an EntityCollection item."""
    if not isinstance(raw, dict):
        schema_violation(path, f"expected an Entity object, got {_kind(raw)}")
    attributes = {
        key: value_of(value, f"{path}.Attributes[{key!r}]")
        for key, value in pairs(raw.get("Attributes"), f"{path}.Attributes")
    }
    formatted: dict[str, str | None] = {}
    for key, value in pairs(raw.get("FormattedValues"), f"{path}.FormattedValues"):
        if value is not None and not isinstance(value, str):  # a null label stays null
            schema_violation(f"{path}.FormattedValues[{key!r}]", "expected a string or null")
        formatted[key] = value
    try:
        return Entity(
            logical_name=raw.get("LogicalName"),
            id=raw.get("Id"),
            attributes=attributes,
            formatted_values=formatted,
        )
    except ValidationError as exc:
        schema_violation(path, f"not a valid Entity: {describe_validation(exc)}")


def entity_reference(raw: Any, path: str) -> EntityReference:
    """An EntityReference object (a lookup value)."""
    if not isinstance(raw, dict):
        schema_violation(path, f"expected an EntityReference object, got {_kind(raw)}")
    try:
        return EntityReference(
            logical_name=raw.get("LogicalName"), id=raw.get("Id"), name=raw.get("Name")
        )
    except ValidationError as exc:
        schema_violation(path, f"not a valid EntityReference: {describe_validation(exc)}")


def describe_validation(exc: ValidationError, limit: int = 3) -> str:
    """Pydantic's errors as one short line: ``Field: problem (got 'x')``."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "value"
        got = error.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {_excerpt(got)})"
        parts.append(f"{where}: {error['msg']}{shown}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _kind(raw: Any) -> str:
    return "null" if raw is None else type(raw).__name__


def _excerpt(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
