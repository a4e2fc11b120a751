"""The .NET Binary XML reader (MC-NBFX, ``application/msbin1``): specification vectors, the
binary/XML twins, every truncation, crafted hostile records and round trips with a writer."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.dataverse import binary_xml, decode
from shared.errors import MalformedMessage
from shared.events.envelope import from_files, properties_path_for
from shared.pipeline import evaluate
from shared.verdicts import Reason, Verdict
from tests.conftest import SAMPLES
from tests.msbin1_writer import chars, mb31, string, write

MSBIN1 = "application/msbin1"
TWINS = Path(__file__).resolve().parents[2] / "shared" / "samples-msbin1"
needs_twins = pytest.mark.skipif(not TWINS.exists(), reason="../shared/samples-msbin1 is absent")


def tree(body: bytes, max_depth: int = 100) -> ET.Element:
    return binary_xml.parse(body, max_depth)


def xml_text(element: ET.Element) -> str:
    """The element as canonical XML text (what a text reader of the same document holds)."""
    return ET.tostring(element, encoding="unicode")


def refused(body: bytes, reason: Reason = Reason.MALFORMED_BINARY_XML) -> str:
    with pytest.raises(MalformedMessage) as raised:
        tree(body)
    assert raised.value.reason is reason, raised.value.description
    return raised.value.description


# --- [MC-NBFX] section 3, "Structure Examples": the bytes and the XML they represent ----------
SPEC_STRUCTURE_EXAMPLES = [
    ("EndElement", "40 03 64 6F 63 01", "<doc />"),
    ("Array", "40 03 64 6F 63 03 40 03 61 72 72 01 8B 03 33 33 88 88 DD DD 01",
     "<doc><arr>13107</arr><arr>-30584</arr><arr>-8739</arr></doc>"),
    ("ShortAttribute", "40 03 64 6F 63 04 04 61 74 74 72 84 01", '<doc attr="false" />'),
    ("Attribute",
     "40 03 64 6F 63 09 03 70 72 65 0A 68 74 74 70 3A 2F 2F 61 62 63 05 03 70 72 65 04 61 74 74 72 84 01",
     '<doc xmlns:ns0="http://abc" ns0:attr="false" />'),
    ("ShortXmlnsAttribute", "40 03 64 6F 63 08 0A 68 74 74 70 3A 2F 2F 61 62 63 01",
     '<ns0:doc xmlns:ns0="http://abc" />'),
    ("XmlnsAttribute", "40 03 64 6F 63 09 01 70 0A 68 74 74 70 3A 2F 2F 61 62 63 01", "<doc />"),
]  # fmt: skip
# The spec's Array row is a bare Array record (three <arr> elements at top level); it is wrapped
# in <doc> here because a document has one root. The Comment row (02 07 "comment") is checked
# inside an element below. Dictionary rows (ShortDictionaryAttribute 06, DictionaryAttribute 07)
# are refused: see test_dictionary_records_are_refused.


@pytest.mark.parametrize(("record", "hexbytes", "xml"), SPEC_STRUCTURE_EXAMPLES)
def test_the_specifications_structure_examples(record, hexbytes, xml):
    assert xml_text(tree(bytes.fromhex(hexbytes))) == xml, record


def test_the_specifications_comment_example_is_skipped_inside_an_element():
    body = bytes.fromhex("40 03 64 6F 63 02 07 63 6F 6D 6D 65 6E 74 01")
    assert xml_text(tree(body)) == "<doc />"


# Record pages of [MC-NBFX] 2.2.3: "if value is X, this is interpreted as the following
# characters". The value bytes follow the record type, little-endian, inside <doc>.
SPEC_TEXT_EXAMPLES = [
    ("2.2.3.5 Int8Text, value 0x80", "89 80", "-128"),
    ("2.2.3.6 Int16Text, value 0x8000", "8B 00 80", "-32768"),
    ("2.2.3.26 BoolText, value 0", "B5 00", "false"),
    ("2.2.3.26 BoolText, value 1", "B5 01", "true"),
    # 2.2.3.11 DecimalText prints value 0x00000000004F2D800000000000060000 as 5.123456, but
    # 0x4F2D80 is 5188992: the example's mantissa has a typo (0x4E2D80 = 5123456). Both the
    # layout (scale 6, sign 0, Hi32 0, Lo64) and the corrected mantissa are checked.
    ("2.2.3.11 DecimalText, corrected", "95 " + (0x4E2D80 << 64 | 6 << 16).to_bytes(16, "little").hex(), "5.123456"),
    ("2.2.3.11 DecimalText, as printed", "95 " + (0x4F2D80 << 64 | 6 << 16).to_bytes(16, "little").hex(), "5.188992"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "record", "text"), SPEC_TEXT_EXAMPLES)
def test_the_specifications_text_record_examples(where, record, text):
    assert tree(bytes.fromhex("40 03 64 6F 63 " + record)).text == text, where


# Built from the record definitions (2.2.3.x) and checked against what .NET's XmlConvert writes
# (the binary/XML twins below hold every one of these written by the real .NET writer).
DEFINED_TEXT = [
    ("ZeroText", "81", "0"), ("OneText", "83", "1"), ("FalseText", "85", "false"),
    ("TrueText", "87", "true"), ("Int32Text", "8D " + struct.pack("<i", -2147483648).hex(), "-2147483648"),
    ("Int64Text", "8F " + struct.pack("<q", 2**40).hex(), "1099511627776"),
    ("UInt64Text", "B3 " + struct.pack("<Q", 2**64 - 1).hex(), "18446744073709551615"),
    ("FloatText", "91 " + struct.pack("<f", 1.1).hex(), "1.1"),
    ("DoubleText", "93 " + struct.pack("<d", 0.1).hex(), "0.1"),
    ("DoubleText 17 digits", "93 " + struct.pack("<d", 2.7182818284590451).hex(), "2.7182818284590451"),
    ("DoubleText exponent", "93 " + struct.pack("<d", 1e20).hex(), "1E+20"),
    ("DoubleText infinity", "93 " + struct.pack("<d", float("inf")).hex(), "INF"),
    ("DateTimeText Utc", "97 " + struct.pack("<Q", 638_741_151_061_234_567 | 1 << 62).hex(), "2025-02-02T17:45:06.1234567Z"),
    ("DateTimeText Unspecified", "97 " + struct.pack("<Q", 638_741_151_060_000_000).hex(), "2025-02-02T17:45:06"),
    ("Chars8Text", "99 05 68 65 6C 6C 6F", "hello"),
    ("Chars16Text", "9B 05 00 68 65 6C 6C 6F", "hello"),
    ("Chars32Text", "9D 05 00 00 00 68 65 6C 6C 6F", "hello"),
    ("Bytes8Text", "9F 03 00 01 02", "AAEC"),
    ("EmptyText", "A9", ""),
    ("UnicodeChars8Text", "B7 04 " + "é€".encode("utf-16-le").hex(), "é€"),
    ("UuidText", "B1 " + bytes(range(16)).hex(), "03020100-0504-0706-0809-0a0b0c0d0e0f"),
    ("UniqueIdText", "AD " + bytes(range(16)).hex(), "urn:uuid:03020100-0504-0706-0809-0a0b0c0d0e0f"),
    ("TimeSpanText", "AF " + struct.pack("<q", 937_840_050_000).hex(), "P1DT2H3M4.005S"),
    ("TimeSpanText negative", "AF " + struct.pack("<q", -3_440_000_000).hex(), "-PT5M44S"),
    ("StartListText", "A4 82 98 01 61 A6 01", "1 a"),
]  # fmt: skip


@pytest.mark.parametrize(("record", "hexbytes", "text"), DEFINED_TEXT)
def test_each_text_record_reads_as_xmlconvert_writes_it(record, hexbytes, text):
    assert tree(bytes.fromhex("40 03 64 6F 63 " + hexbytes)).text == text, record


def test_multibyteint31_examples_from_the_definition():
    # 2.1.2: 0x7F = 7F; 0x80 = 80 01; 0x3FFF = FF 7F; 0x4000 = 80 80 01; 0x7FFFFFFF = FF FF FF FF 07
    for value, encoded in [(0x7F, "7F"), (0x80, "80 01"), (0x3FFF, "FF 7F"),
                           (0x4000, "80 80 01"), (0x7FFFFFFF, "FF FF FF FF 07")]:  # fmt: skip
        assert mb31(value) == bytes.fromhex(encoded)
    name = "n" * 200
    assert tree(b"\x40" + string(name) + b"\x01").tag == name  # a two-byte length


# --- the binary/XML twins written by the .NET writer (../shared/samples-msbin1) --------------


def _normalised(element: ET.Element) -> list[tuple[str, str, str]]:
    """Every element's tag, attributes and text, with xs:dateTime texts as UTC instants (the XML
    twin writes Local values with their offset; binary XML holds them as UTC ticks, and clamps
    a Local MinValue to 0001-01-01T00:00:00Z) and -0 as 0 (the binary writer stores -0.0 as
    Zero)."""
    out = []
    for node in element.iter():
        text = (node.text or "").strip()
        kind = node.get("{http://www.w3.org/2001/XMLSchema-instance}type", "")
        local = node.tag.rsplit("}", 1)[-1]
        if text and (kind.endswith(":dateTime") or local in ("dateTime", "OperationCreatedOn")):
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            try:
                moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
            except OverflowError:
                moment = datetime.min.replace(tzinfo=UTC)
            text = moment.isoformat()
        out.append((node.tag, repr(sorted(node.attrib.items())), "0" if text == "-0" else text))
    return out


def _pairs() -> list[Path]:
    if not TWINS.exists():
        return []
    bodies = list(TWINS.glob("*.body")) + list((TWINS / "twins-of-samples").glob("*.body"))
    return sorted(b for b in bodies if not b.name.endswith(".xmltwin.body"))


@needs_twins
@pytest.mark.parametrize("body", _pairs(), ids=lambda p: p.name)
def test_each_binary_body_reads_as_its_xml_twin(body: Path):
    twin = body.with_name(body.name.removesuffix(".body") + ".xmltwin.body")
    binary_tree = tree(body.read_bytes())
    if body.name.startswith("b07"):  # control characters: legal in binary XML, not in XML 1.0
        with pytest.raises(ET.ParseError):
            ET.fromstring(twin.read_bytes())
        assert "\x07" in "".join(binary_tree.itertext())
        return
    assert _normalised(binary_tree) == _normalised(ET.fromstring(twin.read_bytes()))


@needs_twins
@pytest.mark.parametrize("body", _pairs(), ids=lambda p: p.name)
def test_each_binary_body_gets_its_twins_verdict_and_entry(body: Path):
    twin = body.with_name(body.name.removesuffix(".body") + ".xmltwin.body")
    binary = evaluate(from_files(body, properties_path_for(body)))
    if body.name.startswith(("b06", "b07")):  # the twin cannot be read; the binary body must be
        assert binary.verdict is Verdict.ACCEPTED, binary.description
        return
    xml = evaluate(from_files(twin, properties_path_for(twin)))
    assert (binary.verdict, binary.reason) == (xml.verdict, xml.reason), binary.description
    if binary.entry is None or xml.entry is None:
        assert binary.entry is xml.entry is None
        return
    broker = {"recorded_at", "message_id", "sequence_number", "enqueued_time", "delivery_count"}
    assert binary.entry.model_dump(exclude=broker) == xml.entry.model_dump(exclude=broker)


def test_the_bundled_binary_sample_is_accepted_with_its_published_facts(samples):
    sample = samples["binary-create-bankaccount"]
    decision = evaluate(sample.message)
    assert decision.verdict is Verdict.ACCEPTED
    assert decision.entry is not None
    assert str(decision.entry.regarding_id) == sample.expected["regarding_id"]


# --- hostile input -------------------------------------------------------------------------


def test_every_truncation_of_a_body_is_refused():
    body = (SAMPLES / "binary-create-bankaccount.body").read_bytes()
    for cut in range(len(body)):
        with pytest.raises(MalformedMessage) as raised:
            tree(body[:cut])
        assert raised.value.reason is Reason.MALFORMED_BINARY_XML
        assert "at byte" in raised.value.description or cut == 0


DOC = "40 03 64 6F 63 "
HOSTILE = [
    ("reserved record 0x00", "00", "reserved record type 0x00"),
    ("reserved record 0x78", DOC + "78 01", "reserved record type 0x78"),
    ("reserved record 0xBE", DOC + "BE", "reserved record type 0xBE"),
    ("reserved record 0xFF", DOC + "FF", "reserved record type 0xFF"),
    ("ShortDictionaryAttribute (spec row 06)", "40 03 64 6F 63 06 08 86 01", "dictionary"),
    ("DictionaryAttribute (spec row 07)",
     "40 03 64 6F 63 09 03 70 72 65 0A 68 74 74 70 3A 2F 2F 61 62 63 07 03 70 72 65 00 86 01", "dictionary"),
    ("ShortDictionaryElement", "42 02 01", "dictionary"),
    ("PrefixDictionaryElementA", "44 02 01", "dictionary"),
    ("DictionaryText", DOC + "AA 02 01", "dictionary"),
    ("QNameDictionaryText", DOC + "BC 01 02 01", "dictionary"),
    ("MultiByteInt31 continued past 5 bytes", "40 80 80 80 80 80 01", "over 31 bits"),
    ("MultiByteInt31 over 31 bits", "40 FF FF FF FF 0F", "over 31 bits"),
    ("name longer than the body", "40 7F 64 6F 63", "runs past the end"),
    ("Chars32 negative length", DOC + "9D FF FF FF FF", "negative length"),
    ("Chars8 past the end", DOC + "99 09 61", "runs past the end"),
    ("invalid UTF-8", DOC + "99 02 C3 28 01", "invalid UTF-8"),
    ("UTF-8 surrogate", DOC + "99 03 ED A0 80 01", "invalid UTF-8"),
    ("odd UTF-16", DOC + "B7 03 61 00 62", "odd length"),
    ("lone UTF-16 surrogate", DOC + "B7 02 00 D8", "invalid UTF-16"),
    ("undeclared prefix", "5F 03 64 6F 63 01", "prefix 'b' is not declared"),
    ("text outside the root", "99 01 61", "text outside the root"),
    ("a second root", DOC + "01 40 01 65 01", "a second root element"),
    ("end without start", "01", "not open"),
    ("elements left open", DOC + "40 01 65", "element(s) open"),
    ("attribute outside an element", DOC + "01 04 01 61 81", "outside an element start"),
    ("WithEndElement text in an attribute", "40 03 64 6F 63 04 01 61 99 01 78 01", "where a text record must be"),
    ("Bool 2", DOC + "B5 02", "neither 0 nor 1"),
    ("DateTime kind 3", DOC + "97 " + struct.pack("<Q", 3 << 62).hex(), "invalid DateTime"),
    ("Decimal scale 29", DOC + "95 " + (29 << 16).to_bytes(16, "little").hex(), "invalid Decimal"),
    ("Array count x size past the end", DOC + "03 40 01 61 01 8D FF FF FF FF 07 00 01", "past the end"),
    ("Array of a non-array type", DOC + "03 40 01 61 01 99 01 61 01", "cannot be an Array item"),
    ("Array without EndElement", DOC + "03 40 01 61 8D 01 00 00 00 00 01", "followed by EndElement"),
    ("empty name", "40 00 01", "empty name"),
    ("xmlns twice", "40 03 64 6F 63 08 01 61 08 01 62 01", "declared twice"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "hexbytes", "says"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_records_are_refused_with_the_offset(what, hexbytes, says):
    description = refused(bytes.fromhex(hexbytes))
    assert says in description, what
    assert "at byte" in description


def test_the_101st_nested_element_is_refused_as_it_opens():
    nested = b"".join(b"\x40\x01e" for _ in range(101))
    with pytest.raises(MalformedMessage) as raised:
        tree(nested + b"\x01" * 101)
    assert raised.value.reason is Reason.NESTING_TOO_DEEP
    assert len(list(tree(b"".join(b"\x40\x01e" for _ in range(100)) + b"\x01" * 100).iter())) == 100


def test_namespace_declarations_are_capped_per_body():
    declarations = b"".join(b"\x09" + string(f"p{n}") + string("u") for n in range(1_001))
    with pytest.raises(MalformedMessage, match="more than 1,000 namespace declarations"):
        binary_xml.parse(b"\x40\x01r" + declarations + b"\x01", 100)
    children = b"".join(b"\x40\x01e\x09\x01q\x01u\x01" for _ in range(1_001))  # one each
    with pytest.raises(MalformedMessage, match="namespace declarations"):
        binary_xml.parse(b"\x40\x01r" + children + b"\x01", 100)


def test_elements_are_capped_and_arrays_are_counted_before_they_expand():
    many = b"\x40\x01r" + b"\x40\x01e\x01" * 11 + b"\x01"
    with pytest.raises(MalformedMessage, match="more than 10 elements"):
        binary_xml.parse(many, 100, max_elements=10)
    array = b"\x40\x01r\x03\x40\x01a\x01\xb5" + mb31(50) + b"\x01" * 50 + b"\x01"
    with pytest.raises(MalformedMessage, match="more than 10 elements"):
        binary_xml.parse(array, 100, max_elements=10)
    assert len(binary_xml.parse(array, 100)) == 50


def test_decode_routes_msbin1_and_never_sniffs():
    body = (SAMPLES / "binary-create-bankaccount.body").read_bytes()
    assert decode(body, "Application/MSBIN1; charset=x").message_name == "Create"
    with pytest.raises(MalformedMessage) as raised:
        decode(body, "application/json")
    assert raised.value.reason is Reason.MALFORMED_JSON
    with pytest.raises(MalformedMessage) as raised:
        decode(b"", MSBIN1)
    assert raised.value.reason is Reason.MALFORMED_BINARY_XML


# --- round trips with the test writer -------------------------------------------------------

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC_é東", min_size=1, max_size=8)
TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=300
)
NAMESPACES = {"urn:default": "", "urn:b": "b", "urn:pre": "pre"}


@st.composite
def trees(draw, depth: int = 0) -> ET.Element:
    namespace = draw(st.sampled_from(list(NAMESPACES)))
    attributes = draw(
        st.dictionaries(
            st.tuples(st.sampled_from([None, "urn:b", "urn:pre"]), NAMES).map(
                lambda pair: f"{{{pair[0]}}}{pair[1]}" if pair[0] else pair[1]
            ),
            TEXT,
            max_size=3,
        )
    )
    element = ET.Element(f"{{{namespace}}}{draw(NAMES)}", attributes)
    children = draw(st.lists(trees(depth + 1), max_size=3)) if depth < 4 else []
    element.extend(children)
    element.text = draw(st.one_of(st.none(), TEXT.filter(bool)))
    for child in children:
        child.tail = draw(st.one_of(st.none(), TEXT.filter(bool)))
    return element


@given(trees())
def test_reading_what_the_writer_wrote_gives_the_tree_back(original: ET.Element):
    assert xml_text(tree(write(original, NAMESPACES))) == xml_text(original)


@given(trees(), st.data())
def test_any_cut_of_a_written_tree_is_refused_cleanly(original: ET.Element, data):
    body = write(original, NAMESPACES)
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(MalformedMessage) as raised:
        tree(body[:cut])
    assert raised.value.reason is Reason.MALFORMED_BINARY_XML


def test_long_texts_use_the_16_and_32_bit_length_forms():
    for size in (255, 256, 65535, 65536):
        body = b"\x40\x01e" + chars("x" * size, end=True)
        assert tree(body).text == "x" * size
