"""A small MC-NBFX writer for tests: element trees -> .NET Binary XML records.

Independent of the reader (it shares no code with shared/dataverse/binary_xml.py), it writes
the record forms the Service Bus writer uses for names and text (ShortElement, Element,
PrefixElement[A-Z], ShortXmlns/Xmlns, ShortAttribute/Attribute/PrefixAttribute[A-Z],
Chars8/16/32 and UnicodeChars8 text, EndElement and the WithEndElement forms), so hypothesis can
check that reading what it writes gives the same tree back.
"""

from __future__ import annotations

import struct
from xml.etree.ElementTree import Element


def mb31(value: int) -> bytes:
    out = bytearray()
    while True:
        part = value & 0x7F
        value >>= 7
        out.append(part | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return mb31(len(raw)) + raw


def chars(text: str, end: bool = False, unicode: bool = False) -> bytes:
    """A text record: Chars8/16/32 (UTF-8) or UnicodeChars8 (UTF-16), the WithEndElement form
    when ``end``."""
    if unicode:
        raw = text.encode("utf-16-le")
        if len(raw) < 256:
            return bytes([0xB6 | end, len(raw)]) + raw
    raw = text.encode("utf-8")
    if len(raw) < 256:
        return bytes([0x98 | end, len(raw)]) + raw
    if len(raw) < 65536:
        return bytes([0x9A | end]) + struct.pack("<H", len(raw)) + raw
    return bytes([0x9C | end]) + struct.pack("<i", len(raw)) + raw


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, name = tag[1:].split("}", 1)
        return namespace, name
    return None, tag


def write(root: Element, prefixes: dict[str, str] | None = None) -> bytes:
    """The records of ``root``; ``prefixes`` maps namespace -> prefix ("" for the default)."""
    prefixes = prefixes or {}
    out = bytearray()
    _element(root, prefixes, set(), out, unicode=False)
    return bytes(out)


def _element(
    element: Element, prefixes: dict[str, str], declared: set[str], out: bytearray, unicode: bool
) -> None:
    namespace, name = _split(element.tag)
    prefix = prefixes[namespace] if namespace else ""
    if not prefix:
        out += b"\x40" + string(name)
    elif len(prefix) == 1 and "a" <= prefix <= "z":
        out += bytes([0x5E + ord(prefix) - ord("a")]) + string(name)
    else:
        out += b"\x41" + string(prefix) + string(name)
    inner = set(declared)
    needed: list[str | None] = [namespace] if namespace else []
    needed += [_split(key)[0] for key in element.attrib if key.startswith("{")]
    for uri in needed:
        if uri and uri not in inner:
            inner.add(uri)
            declared_prefix = prefixes[uri]
            if declared_prefix:
                out += b"\x09" + string(declared_prefix) + string(uri)
            else:
                out += b"\x08" + string(uri)
    for key, value in element.attrib.items():
        attr_namespace, attr_name = _split(key)
        attr_prefix = prefixes[attr_namespace] if attr_namespace else ""
        if not attr_prefix:
            out += b"\x04" + string(attr_name)
        elif len(attr_prefix) == 1:
            out += bytes([0x26 + ord(attr_prefix) - ord("a")]) + string(attr_name)
        else:
            out += b"\x05" + string(attr_prefix) + string(attr_name)
        out += chars(value)
    children = list(element)
    if element.text and not children:
        out += chars(element.text, end=True, unicode=unicode)
        return
    if element.text:
        out += chars(element.text, unicode=unicode)
    for child in children:
        _element(child, prefixes, inner, out, unicode=not unicode)
        if child.tail:
            out += chars(child.tail)
    out += b"\x01"
