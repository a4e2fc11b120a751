"""Fuzzing the decoder with hypothesis: whatever arrives, decode() returns a context or raises
the one decode exception with a reason code, and the pipeline never hits an internal error.

``make test`` runs a bounded number of examples (profile ``ci``); ``make fuzz`` runs the long
profile (``HYPOTHESIS_PROFILE=fuzz``).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dataverse import RemoteExecutionContext, decode
from shared.errors import MalformedMessage
from shared.events.envelope import InboundMessage
from shared.pipeline import evaluate
from shared.verdicts import Reason
from tests.conftest import SAMPLES, sample_document

JSON_SAMPLE = sample_document()
XML_SAMPLE = (SAMPLES / "xml-create-bankaccount.body").read_text()
MEMBERS = sorted(JSON_SAMPLE)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        ["/Date(1732600000000)/", "/Date(x)/", "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"]
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["__type", "Id", "LogicalName", "Value", "Attributes", "key", "value", "Name", "x"]
            ),
            inner,
            max_size=4,
        )
        | st.builds(
            lambda t, v: {"__type": t, "Value": v, "Id": v, "LogicalName": "account"},
            st.sampled_from(
                [
                    "EntityReference:x",
                    "OptionSetValue:x",
                    "Money:x",
                    "Entity:x",
                    "AliasedValue:x",
                    "EntityCollection:x",
                    "Other:x",
                    "",
                ]
            ),
            inner,
        )
    ),
    max_leaves=12,
)


def _check(body: bytes, content_type: str) -> None:
    result: RemoteExecutionContext | MalformedMessage
    try:
        result = decode(body, content_type)
    except MalformedMessage as exc:
        result = exc
    if isinstance(result, MalformedMessage):
        assert result.reason in Reason
        assert result.description
    else:
        assert isinstance(result, RemoteExecutionContext)
    decision = evaluate(InboundMessage(body=body, content_type=content_type))
    assert decision.reason is not Reason.INTERNAL_ERROR, decision.description


@st.composite
def mutated_contexts(draw: st.DrawFn) -> dict[str, Any]:
    """The sample context with members replaced, removed and attributes added, at random."""
    document: dict[str, Any] = json.loads(json.dumps(JSON_SAMPLE))
    for member in draw(st.lists(st.sampled_from(MEMBERS), max_size=3, unique=True)):
        if draw(st.booleans()):
            document.pop(member)
        else:
            document[member] = draw(json_values)
    parameters = document.get("InputParameters")
    if isinstance(parameters, list) and parameters and isinstance(parameters[0], dict):
        target = parameters[0].get("value")
        if isinstance(target, dict) and isinstance(target.get("Attributes"), list):
            for key in draw(st.lists(st.text(max_size=12), max_size=3)):
                target["Attributes"].append({"key": key, "value": draw(json_values)})
    return document


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(mutated_contexts())
def test_mutated_json_contexts(document):
    _check(json.dumps(document).encode(), "application/json")


@given(st.binary(max_size=400))
def test_random_bytes_as_json(body):
    _check(body, "application/json")


@given(st.binary(max_size=400))
def test_random_bytes_as_xml(body):
    _check(body, "application/xml")


@given(
    st.integers(0, len(XML_SAMPLE) - 1),
    st.integers(0, 40),
    st.text(alphabet=st.sampled_from(list('<>/="&;abi:xT1 ')), max_size=20),
)
def test_spliced_xml(start, length, insert):
    text = XML_SAMPLE[:start] + insert + XML_SAMPLE[start + length :]
    _check(text.encode(), "application/xml")


@given(
    st.sampled_from(
        [
            "b:string",
            "b:int",
            "b:boolean",
            "b:dateTime",
            "b:guid",
            "b:decimal",
            "Entity",
            "EntityReference",
            "OptionSetValue",
            "Money",
            "AliasedValue",
            "EntityCollection",
            "Nope",
            "",
        ]
    ),
    st.integers(0, 40),
)
def test_xml_type_hints_swapped(new_type, which):
    parts = XML_SAMPLE.split('i:type="')
    index = 1 + which % (len(parts) - 1)
    rest = parts[index].split('"', 1)[1]
    parts[index] = new_type + '"' + rest
    _check('i:type="'.join(parts).encode(), "application/xml")


@given(
    st.integers(0, len(json.dumps(JSON_SAMPLE)) - 1),
    st.integers(0, 30),
    st.text(alphabet=st.sampled_from(list('{}[],:"\\/0123456789aeDtu ')), max_size=15),
)
def test_spliced_json(start, length, insert):
    text = json.dumps(JSON_SAMPLE)
    _check((text[:start] + insert + text[start + length :]).encode(), "application/json")
