""".NET Binary XML (MC-NBFX, ``application/msbin1``) -> the same element tree as the XML path.

The Plug-in Registration Tool's default message format for a Service Bus endpoint is
.NETBinary: the DataContractSerializer's XML infoset written with
``XmlDictionaryWriter.CreateBinaryWriter(stream, null, null, false)``. MC-NBFX records map one to
one onto that infoset, so this reader builds ``xml.etree`` elements and ``xml_format`` walks them
exactly as it walks an XML body. Text records are turned into the text .NET's ``XmlConvert``
writes for them, so a binary body and its XML twin give the same verdict and entry.

Hostile input: every length is checked against the bytes left before reading; end of input
inside a record or with elements open, reserved or misplaced records, dictionary records (the
writer Service Bus uses passes no dictionary, and .NET's own null-dictionary reader refuses
them), over-long MultiByteInt31 values, invalid UTF-8/UTF-16 and undeclared prefixes are refused;
nesting is limited as for XML, elements are capped, and an Array's count x item size is checked
before it is expanded. Every failure is one ``MalformedMessage`` (``malformed_binary_xml``, or
``nesting_too_deep``) with the byte offset.
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NoReturn
from xml.etree.ElementTree import Element, SubElement

from shared.errors import MalformedMessage
from shared.verdicts import Reason

#: Elements (including Array items) one body may hold. A real context has a few hundred (the
#: largest capture here: 324 in 96 KB); the densest real layout, about 27 bytes an element,
#: stays under 10,000 in 256 KiB. Each element costs the reader about 1.5 us of Python.
MAX_ELEMENTS = 25_000
#: Namespace declarations one body may hold; a real context declares about ten. Each costs a
#: scope change, so an unbounded count is work a hostile sender chooses.
MAX_DECLARATIONS = 1_000
XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
_MAX_TICKS = 3_155_378_975_999_999_999  # DateTime.MaxValue.Ticks
_TICKS_MASK = (1 << 62) - 1
_TICKS_PER_DAY = 864_000_000_000
_EPOCH = datetime(1, 1, 1)

_INT8, _INT16, _INT32, _INT64 = (
    struct.Struct("<b"),
    struct.Struct("<h"),
    struct.Struct("<i"),
    struct.Struct("<q"),
)
_UINT16, _UINT64 = struct.Struct("<H"), struct.Struct("<Q")
_FLOAT, _DOUBLE = struct.Struct("<f"), struct.Struct("<d")


def _refuse(offset: int, problem: str) -> NoReturn:
    raise MalformedMessage(Reason.MALFORMED_BINARY_XML, f"{problem} at byte {offset}")


class _Reader:
    """A cursor over the body that never reads past its end."""

    __slots__ = ("data", "pos", "size")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.size = len(data)

    def byte(self) -> int:
        if self.pos >= self.size:
            _refuse(self.pos, "binary XML ends inside a record")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, count: int) -> bytes:
        if count < 0 or count > self.size - self.pos:
            _refuse(self.pos, f"length {count} runs past the end of the body")
        start = self.pos
        self.pos += count
        return self.data[start : self.pos]

    def unpack(self, layout: struct.Struct) -> int | float:
        value: int | float = layout.unpack(self.take(layout.size))[0]
        return value

    def mb31(self) -> int:
        """MultiByteInt31: 7 bits a byte, at most 5 bytes, at most 2**31 - 1."""
        start = self.pos
        value = 0
        for shift in (0, 7, 14, 21, 28):
            part = self.byte()
            if shift == 28 and part > 0x07:
                _refuse(start, "MultiByteInt31 over 31 bits")
            value |= (part & 0x7F) << shift
            if not part & 0x80:
                return value
        _refuse(start, "MultiByteInt31 longer than 5 bytes")  # pragma: no cover - see above

    def utf8(self, count: int) -> str:
        start = self.pos
        try:
            return self.take(count).decode("utf-8")
        except UnicodeDecodeError as exc:
            _refuse(start + exc.start, f"invalid UTF-8 ({exc.reason})")

    def utf16(self, count: int) -> str:
        start = self.pos
        if count % 2:
            _refuse(start, f"UTF-16 text of an odd length ({count} bytes)")
        try:
            return self.take(count).decode("utf-16-le")
        except UnicodeDecodeError as exc:
            _refuse(start + exc.start, f"invalid UTF-16 ({exc.reason})")

    def string(self) -> str:
        """A String: MultiByteInt31 byte length, then UTF-8."""
        pos = self.pos
        if pos < self.size and self.data[pos] < 0x80:  # the usual one-byte length, ASCII name
            end = pos + 1 + self.data[pos]
            raw = self.data[pos + 1 : end]
            if end <= self.size and raw.isascii():
                self.pos = end
                return raw.decode("ascii")
        return self.utf8(self.mb31())


# --- text as XmlConvert writes it ---------------------------------------------------------


def _shortest(value: float, short: int, long: int, fits: Callable[[float], bool]) -> str:
    """.NET Framework's "R": G<short> if it round-trips, else G<long>; INF, -INF, NaN."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "INF" if value > 0 else "-INF"
    text = f"{value:.{short}g}"
    if not fits(float(text)):
        text = f"{value:.{long}g}"
    return text.replace("e", "E")


def double_text(value: float) -> str:
    return _shortest(value, 15, 17, lambda parsed: parsed == value)


def float_text(value: float) -> str:
    return _shortest(value, 7, 9, lambda parsed: _FLOAT.unpack(_FLOAT.pack(parsed))[0] == value)


def decimal_text(raw: bytes, offset: int) -> str:
    """A 16-byte System.Decimal (wReserved, scale, sign, Hi32, Lo64), scale kept."""
    reserved, scale, sign, high, low = struct.unpack("<HBBIQ", raw)
    if reserved or scale > 28 or sign not in (0, 0x80):
        _refuse(offset, "invalid Decimal")
    mantissa = (high << 64) | low
    digits = tuple(int(d) for d in str(mantissa))
    value = Decimal((1 if sign and mantissa else 0, digits, -scale))
    return format(value, "f")


def datetime_text(raw: int, offset: int) -> str:
    """62 bits of ticks + 2 bits of kind: Utc and Local (already UTC ticks) get ``Z``;
    Unspecified has no designator (read as UTC, like the XML twin)."""
    ticks, kind = raw & _TICKS_MASK, raw >> 62
    if kind == 2:
        # Local: UTC ticks, which near the ends of the range may be "negative" (stored in the
        # top day of the 62-bit range, as .NET's ToBinary does) or past MaxValue; .NET's
        # FromBinary clamps such values to the range, and so does this.
        if ticks > _TICKS_MASK + 1 - _TICKS_PER_DAY:
            ticks -= _TICKS_MASK + 1
        ticks = min(max(ticks, 0), _MAX_TICKS)
    if kind == 3 or ticks > _MAX_TICKS:
        _refuse(offset, "invalid DateTime")
    moment = _EPOCH + timedelta(microseconds=ticks // 10)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    fraction = f"{ticks % 10_000_000:07d}".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + ("Z" if kind else "")


def timespan_text(ticks: int) -> str:
    """XmlConvert's xs:duration for a TimeSpan: ``P1DT2H3M4.005S``, ``-PT5M44S``, ``PT0S``."""
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    seconds, fraction = divmod(ticks, 10_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or fraction:
        digits = f"{fraction:07d}".rstrip("0")
        time += f"{seconds}" + (f".{digits}" if digits else "") + "S"
    text = sign + "P" + (f"{days}D" if days else "")
    if time:
        text += "T" + time
    return text if (days or time) else "PT0S"


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


#: Text record type (even form) -> (fixed size or None, reader of the value as text).
_TextReader = Callable[[_Reader, int], str]


def _fixed(layout: struct.Struct, render: Callable[[int | float], str]) -> _TextReader:
    return lambda reader, _offset: render(reader.unpack(layout))


def _bool(reader: _Reader, offset: int) -> str:
    value = reader.byte()
    if value > 1:
        _refuse(offset, f"Bool value {value} is neither 0 nor 1")
    return "true" if value else "false"


def _chars(length: Callable[[_Reader], int], decode: str) -> _TextReader:
    def read(reader: _Reader, offset: int) -> str:
        count = length(reader)
        return reader.utf8(count) if decode == "utf-8" else reader.utf16(count)

    return read


def _bytes(length: Callable[[_Reader], int]) -> _TextReader:
    return lambda reader, _offset: base64.b64encode(reader.take(length(reader))).decode("ascii")


def _int32_length(reader: _Reader) -> int:
    start = reader.pos
    count = int(reader.unpack(_INT32))
    if count < 0:
        _refuse(start, f"negative length {count}")
    return count


def _u8(reader: _Reader) -> int:
    return reader.byte()


def _u16(reader: _Reader) -> int:
    return int(reader.unpack(_UINT16))


def _dictionary(reader: _Reader, offset: int) -> str:
    _refuse_dictionary(offset)


def _refuse_dictionary(offset: int) -> NoReturn:
    _refuse(
        offset,
        "dictionary string record: the .NET writer Service Bus uses passes no dictionary, "
        "so a body that refers to one was not written by Dataverse",
    )


TEXT_RECORDS: dict[int, _TextReader] = {
    0x80: lambda reader, offset: "0",
    0x82: lambda reader, offset: "1",
    0x84: lambda reader, offset: "false",
    0x86: lambda reader, offset: "true",
    0x88: _fixed(_INT8, str),
    0x8A: _fixed(_INT16, str),
    0x8C: _fixed(_INT32, str),
    0x8E: _fixed(_INT64, str),
    0x90: _fixed(_FLOAT, lambda v: float_text(float(v))),
    0x92: _fixed(_DOUBLE, lambda v: double_text(float(v))),
    0x94: lambda reader, offset: decimal_text(reader.take(16), offset),
    0x96: lambda reader, offset: datetime_text(int(reader.unpack(_UINT64)), offset),
    0x98: _chars(_u8, "utf-8"),
    0x9A: _chars(_u16, "utf-8"),
    0x9C: _chars(_int32_length, "utf-8"),
    0x9E: _bytes(_u8),
    0xA0: _bytes(_u16),
    0xA2: _bytes(_int32_length),
    0xA8: lambda reader, offset: "",
    0xAA: _dictionary,
    0xAC: lambda reader, offset: "urn:uuid:" + _guid(reader.take(16)),
    0xAE: _fixed(_INT64, lambda v: timespan_text(int(v))),
    0xB0: lambda reader, offset: _guid(reader.take(16)),
    0xB2: _fixed(_UINT64, str),
    0xB4: _bool,
    0xB6: _chars(_u8, "utf-16"),
    0xB8: _chars(_u16, "utf-16"),
    0xBA: _chars(_int32_length, "utf-16"),
    0xBC: _dictionary,
}
START_LIST, END_LIST = 0xA4, 0xA6
#: Array item record types (WithEndElement form) -> item size in bytes.
ARRAY_ITEMS = {0xB5: 1, 0x8B: 2, 0x8D: 4, 0x8F: 8, 0x91: 4, 0x93: 8, 0x95: 16, 0x97: 8,
               0xAF: 8, 0xB1: 16}  # fmt: skip


def _text(reader: _Reader, record: int, offset: int) -> str:
    """One text record (even form) or a list of them, as text."""
    if record == START_LIST:
        items = []
        while (item := reader.byte()) != END_LIST:
            if item == START_LIST or item not in TEXT_RECORDS:
                _refuse(reader.pos - 1, f"record 0x{item:02X} inside a text list")
            items.append(TEXT_RECORDS[item](reader, reader.pos - 1))
        return " ".join(items)
    if record not in TEXT_RECORDS:
        _refuse(offset, f"record 0x{record:02X} where a text record must be")
    return TEXT_RECORDS[record](reader, offset)


# --- elements -------------------------------------------------------------------------------


_PREFIXES = tuple(chr(ord("a") + n) for n in range(26))
#: Text records of one byte (ZeroText, OneText, FalseText, TrueText; not their
#: WithEndElement forms) and the text each stands for.
_ONE_BYTE_TEXT = {0x80: "0", 0x82: "1", 0x84: "false", 0x86: "true"}
_ONE_BYTE_RUN = re.compile(rb"[\x80\x82\x84\x86]+")
#: Resolved tags a parse remembers; a hostile body with endless names stops adding there.
_MAX_CACHED_TAGS = 1024


class _Builder:
    """Records -> an element tree, with namespace scopes, depth and element limits."""

    def __init__(self, data: bytes, max_depth: int, max_elements: int) -> None:
        self.reader = _Reader(data)
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.elements = 0
        self.declarations = 0
        self.root: Element | None = None
        self.closed = False
        #: The namespace scope in force: one dict changed in place as elements open and close
        #: (each open element keeps what its declarations replaced), so that neither a copy
        #: per element nor a chain walked per lookup grows with a hostile body.
        self.scope: dict[str, str] = {"xml": XML_NAMESPACE}
        #: Open elements, each with the prefixes it declared and what they had meant before.
        self.stack: list[tuple[Element, list[tuple[str, str | None]] | None]] = []
        #: Element tags by (prefix, namespace, name): a real context repeats a few dozen.
        self.tags: dict[tuple[str, str | None, str], str] = {}
        #: Text records in a row are gathered and joined once (appending each to the element
        #: would copy the text so far every time: quadratic in a run of one-byte records).
        self.text_target: Element | None = None
        self.text_is_tail = False
        self.text_parts: list[str] = []

    def build(self) -> Element:
        reader = self.reader
        data, size = reader.data, reader.size
        while reader.pos < size:
            offset = reader.pos
            record = data[offset]  # in bounds: the loop condition
            reader.pos = offset + 1
            # the two usual element starts read inline (_name holds every element record)
            if 0x5E <= record <= 0x77:  # PrefixElement a-z
                self._open(_PREFIXES[record - 0x5E], reader.string(), offset)
            elif record == 0x01:
                self._end(offset)
            elif record == 0x40:  # ShortElement
                self._open("", reader.string(), offset)
            elif 0x41 <= record <= 0x5D:  # Element, or a dictionary record _name refuses
                self._start(record, offset)
            elif record == 0x02:
                reader.string()  # a comment: not part of the infoset the walk reads
            elif record == 0x03:
                self._array(offset)
            elif record in _ONE_BYTE_TEXT:  # a run of them is read at once: linear, not per record
                end = _ONE_BYTE_RUN.match(data, offset).end()  # type: ignore[union-attr]
                self._add_text("".join(map(_ONE_BYTE_TEXT.__getitem__, data[offset:end])), offset)
                reader.pos = end
            elif 0x80 <= record <= 0xBD:
                self._add_text(_text(reader, record & ~1, offset), offset)
                if record & 1:  # the WithEndElement form
                    self._end(offset)
            elif 0x04 <= record <= 0x3F:
                _refuse(offset, f"attribute record 0x{record:02X} outside an element start")
            else:
                _refuse(offset, f"reserved record type 0x{record:02X}")
        self._flush_text()
        if self.stack:
            _refuse(reader.pos, f"binary XML ends with {len(self.stack)} element(s) open")
        if self.root is None:
            _refuse(reader.pos, "binary XML has no root element")
        return self.root

    def _name(self, record: int, offset: int) -> tuple[str, str]:
        reader = self.reader
        if record == 0x40:
            return "", reader.string()
        if record == 0x41:
            return reader.string(), reader.string()
        if 0x5E <= record <= 0x77:
            return _PREFIXES[record - 0x5E], reader.string()
        _refuse_dictionary(offset)

    def _attributes(self) -> tuple[dict[str, str], list[tuple[str, str, str, int]]]:
        """xmlns declarations and (prefix, name, value, offset) of the attributes that follow."""
        reader = self.reader
        declared: dict[str, str] = {}
        attributes: list[tuple[str, str, str, int]] = []
        while reader.pos < reader.size and 0x04 <= reader.data[reader.pos] <= 0x3F:
            offset = reader.pos
            record = reader.byte()
            if record in (0x08, 0x09):
                prefix = reader.string() if record == 0x09 else ""
                if prefix in declared:
                    _refuse(offset, f"xmlns:{prefix} declared twice on one element")
                self.declarations += 1
                if self.declarations > MAX_DECLARATIONS:
                    _refuse(offset, f"more than {MAX_DECLARATIONS:,} namespace declarations")
                declared[prefix] = reader.string()
                continue
            if record == 0x04:
                prefix, name = "", reader.string()
            elif record == 0x05:
                prefix, name = reader.string(), reader.string()
            elif 0x26 <= record <= 0x3F:
                prefix, name = _PREFIXES[record - 0x26], reader.string()
            else:
                _refuse_dictionary(offset)
            value_offset = reader.pos
            attributes.append((prefix, name, _text(reader, reader.byte(), value_offset), offset))
        return declared, attributes

    def _open(self, prefix: str, name: str, offset: int) -> Element:
        """Read the element's attributes, resolve its names and open it."""
        if self.closed:
            _refuse(offset, "a second root element")
        if len(self.stack) >= self.max_depth:
            raise MalformedMessage(
                Reason.NESTING_TOO_DEEP,
                f"binary XML nests more than {self.max_depth} elements deep at <{name}> "
                f"(byte {offset}; real contexts use ~20)",
            )
        self.elements += 1
        if self.elements > self.max_elements:
            _refuse(offset, f"more than {self.max_elements:,} elements")
        if self.text_target is not None:
            self._flush_text()
        reader = self.reader
        if reader.pos < reader.size and 0x04 <= reader.data[reader.pos] <= 0x3F:
            declared, attributes = self._attributes()
        else:
            declared, attributes = {}, []
        scope = self.scope
        replaced = None
        if declared:
            replaced = [(prefix, scope.get(prefix)) for prefix in declared]
            scope.update(declared)
        attrib: dict[str, str] = {}
        for attr_prefix, attr_name, value, attr_offset in attributes:
            key = self._qualified(scope, attr_prefix, attr_name, attr_offset, attribute=True)
            if key in attrib:
                _refuse(attr_offset, f"attribute {attr_name!r} twice on one element")
            attrib[key] = value
        known = (prefix, scope.get(prefix), name)
        tag = self.tags.get(known)
        if tag is None:
            tag = self._qualified(scope, prefix, name, offset)
            if len(self.tags) < _MAX_CACHED_TAGS:
                self.tags[known] = tag
        if self.stack:
            element = SubElement(self.stack[-1][0], tag, attrib)
        else:
            element = self.root = Element(tag, attrib)
        self.stack.append((element, replaced))
        return element

    @staticmethod
    def _qualified(
        scope: dict[str, str], prefix: str, name: str, offset: int, attribute: bool = False
    ) -> str:
        if not name:
            _refuse(offset, "empty name")
        if attribute and not prefix:
            return name  # an unprefixed attribute is in no namespace
        namespace = scope.get(prefix)
        if namespace is None:
            if not prefix:
                return name
            _refuse(offset, f"prefix {prefix!r} is not declared")
        return f"{{{namespace}}}{name}" if namespace else name

    def _start(self, record: int, offset: int) -> None:
        prefix, name = self._name(record, offset)
        self._open(prefix, name, offset)

    def _end(self, offset: int) -> None:
        if not self.stack:
            _refuse(offset, "end of an element that is not open")
        if self.text_target is not None:
            self._flush_text()
        _, replaced = self.stack.pop()
        if replaced:  # the element's declarations go out of scope
            for prefix, meaning in replaced:
                if meaning is None:
                    del self.scope[prefix]
                else:
                    self.scope[prefix] = meaning
        if not self.stack:
            self.closed = True

    def _add_text(self, text: str, offset: int) -> None:
        """Text goes to the open element's text, or after its last child (that child's tail);
        it is gathered here and set once the run of text records ends."""
        if not self.stack:
            _refuse(offset, "text outside the root element")
        element = self.stack[-1][0]
        target = element[-1] if len(element) else element
        if target is not self.text_target:
            self._flush_text()
            self.text_target, self.text_is_tail = target, target is not element
        self.text_parts.append(text)

    def _flush_text(self) -> None:
        target = self.text_target
        if target is not None:
            text = "".join(self.text_parts)
            if self.text_is_tail:
                target.tail = (target.tail or "") + text
            else:
                target.text = (target.text or "") + text
            self.text_target, self.text_parts = None, []

    def _array(self, offset: int) -> None:
        """Array: an element start with its attributes, EndElement, an item type, a count and
        the items; expands to one element per item."""
        reader = self.reader
        start = reader.pos
        record = reader.byte()
        if not 0x40 <= record <= 0x77:
            _refuse(start, "an Array record must start with an element record")
        prefix, name = self._name(record, start)
        template = self._open(prefix, name, start)
        self._end(start)
        if reader.byte() != 0x01:
            _refuse(reader.pos - 1, "an Array's element must be followed by EndElement")
        parent = self.stack[-1][0] if self.stack else None
        if parent is None:
            _refuse(offset, "an Array outside the root element")
        parent.remove(template)
        self.elements -= 1
        item_offset = reader.pos
        item_type = reader.byte()
        size = ARRAY_ITEMS.get(item_type)
        if size is None:
            _refuse(item_offset, f"record 0x{item_type:02X} cannot be an Array item")
        count = reader.mb31()
        if count * size > reader.size - reader.pos:
            _refuse(reader.pos, f"Array of {count:,} items runs past the end of the body")
        if self.elements + count > self.max_elements:
            _refuse(offset, f"more than {self.max_elements:,} elements")
        self.elements += count
        read = TEXT_RECORDS[item_type & ~1]
        for _ in range(count):
            item = Element(template.tag, template.attrib)
            item.text = read(reader, reader.pos)
            parent.append(item)


def parse(body: bytes, max_depth: int, max_elements: int = MAX_ELEMENTS) -> Element:
    """Read a .NET Binary XML body into the element tree its XML twin would parse to."""
    if not body:
        raise MalformedMessage(Reason.MALFORMED_BINARY_XML, "body is empty")
    return _Builder(body, max_depth, max_elements).build()
