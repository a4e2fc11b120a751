"""The golden samples: each decides exactly as samples/README.md and expected.json say."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.pipeline import evaluate
from tests.conftest import SAMPLES, load_samples, run_cli

CASES = sorted(load_samples())


def _matches(entry: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        if key == "verdict":
            continue
        if key == "changed_columns":
            got = sorted({c["column"] for c in entry["changes"]} - {"processsessionid"})
            assert got == want
        else:
            assert entry[key] == want, key


@pytest.mark.parametrize("name", CASES)
def test_sample_decides_as_published(samples, name):
    sample = samples[name]
    decision = evaluate(sample.message)
    assert decision.verdict.value == sample.expected["verdict"]
    if decision.entry is not None:
        _matches(decision.entry.to_json_dict(), sample.expected)
    else:
        assert sample.expected["verdict"] in ("ignored", "malformed")


def test_sample_reasons(samples):
    reasons = {n: (evaluate(s.message).reason or "").__str__() for n, s in samples.items()}
    assert reasons == {
        "binary-create-bankaccount": "",
        "json-create-account": "regarding_not_bankaccount",
        "json-create-bankaccount": "",
        "json-delete": "",  # recorded as the session's deletion (its PreImage: a bank account)
        "json-other-entity": "not_processsession",
        "json-update-bankaccount": "",
        "json-update-no-regarding": "regarding_not_in_message",
        "malformed-truncated": "malformed_json",
        "xml-create-bankaccount": "",
    }


def test_update_regarding_comes_from_post_image(samples):
    entry = evaluate(samples["json-update-bankaccount"].message).entry
    assert entry is not None
    assert entry.regarding_source == "post_image"
    assert entry.operation_created_on.isoformat() == "2024-11-27T14:03:11+00:00"


@pytest.mark.parametrize("name", CASES)
def test_inspect_command_prints_one_json_object(name, tmp_path):
    result = run_cli(
        "--db",
        str(tmp_path / "a.db"),
        "inspect",
        str(SAMPLES / f"{name}.body"),
        "--properties",
        str(SAMPLES / f"{name}.properties.json"),
    )
    printed = json.loads(result.stdout)
    assert set(printed) == {"verdict", "reason", "entry"}
    expected = json.loads((SAMPLES / "expected.json").read_text())[name]
    assert printed["verdict"] == expected["verdict"]
    if printed["entry"] is not None:
        _matches(printed["entry"], expected)
    assert not (tmp_path / "a.db").exists(), "inspect must not write"
