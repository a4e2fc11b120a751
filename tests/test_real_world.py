"""Real messages that others captured from Dataverse organizations and published, with their
published results (../shared/real-world, read from there: never copied into this repo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.events.envelope import from_files, properties_path_for
from shared.pipeline import evaluate

REAL_WORLD = Path(__file__).resolve().parents[2] / "shared" / "real-world"
EXPECTED = json.loads((REAL_WORLD / "expected.json").read_text()) if REAL_WORLD.exists() else {}
PEOPLE_ONLY = {"value_checks"}


@pytest.mark.skipif(not REAL_WORLD.exists(), reason="../shared/real-world is not beside the repo")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_real_message_gets_its_published_result(name: str) -> None:
    body = REAL_WORLD / f"{name}.body"
    decision = evaluate(from_files(body, properties_path_for(body)))
    expected = EXPECTED[name]
    assert decision.verdict.value == expected["verdict"], decision.description
    assert (decision.reason.value if decision.reason else None) == expected.get("reason")
    if decision.entry is None:
        return
    entry = decision.entry.to_json_dict()
    for field, value in expected.items():
        if field in ("verdict", "reason") or field in PEOPLE_ONLY or field.endswith("_note"):
            continue
        if field == "changed_columns":
            assert sorted(c["column"] for c in entry["changes"]) == value
            continue
        assert entry[field] == value, field
