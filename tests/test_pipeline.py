"""handle(): settlement per message, and nothing completed before its entry is stored."""

from __future__ import annotations

from shared import pipeline as pipeline_module
from shared.pipeline import Pipeline
from shared.verdicts import Reason, Settlement, Verdict
from tests.pipeline_doubles import FlakyStore


def _by_name(samples, outcomes):
    return {name: o for name, o in zip(samples, outcomes, strict=True)}


def test_samples_settle_by_their_own_outcome(store, samples):
    outcomes = _by_name(samples, Pipeline(store).handle([s.message for s in samples.values()]))
    settlements = {name: o.settlement for name, o in outcomes.items()}
    assert settlements == {
        "binary-create-bankaccount": Settlement.COMPLETE,
        "json-create-account": Settlement.COMPLETE,
        "json-create-bankaccount": Settlement.COMPLETE,
        "json-delete": Settlement.COMPLETE,
        "json-other-entity": Settlement.COMPLETE,
        "json-update-bankaccount": Settlement.COMPLETE,
        "json-update-no-regarding": Settlement.COMPLETE,
        "malformed-truncated": Settlement.DEAD_LETTER,
        "xml-create-bankaccount": Settlement.COMPLETE,
    }
    assert outcomes["malformed-truncated"].dead_letter_reason == "malformed_json"
    assert "line 1" in outcomes["malformed-truncated"].description
    assert store.count() == 7


def test_store_outage_retries_every_message_with_an_entry_then_stores_each_once(store, samples):
    flaky = FlakyStore(store)
    pipe = Pipeline(flaky)
    messages = [s.message for s in samples.values()]
    flaky.down = True
    outcomes = pipe.handle(messages)
    retried = [o for o in outcomes if o.settlement is Settlement.RETRY]
    assert len(retried) == 7
    assert all(o.decision.entry is not None for o in retried)
    assert all("simulated outage" in (o.description or "") for o in retried)
    assert store.count() == 0
    # messages without an entry are not held hostage by the outage
    assert {o.settlement for o in outcomes if o.decision.entry is None} == {
        Settlement.COMPLETE,
        Settlement.DEAD_LETTER,
    }
    flaky.down = False
    redelivered = [o.message for o in retried]
    assert {o.settlement for o in pipe.handle(redelivered)} == {Settlement.COMPLETE}
    assert pipe.handle(redelivered)
    assert store.count() == 7


def test_a_bug_dead_letters_that_message_only(store, samples, monkeypatch):
    real = pipeline_module.build_entry

    def explode_on_xml(context, judgement, message, recorded_at, redact):
        if message.content_type == "application/xml":
            raise KeyError("boom")
        return real(context, judgement, message, recorded_at, redact)

    monkeypatch.setattr(pipeline_module, "build_entry", explode_on_xml)
    outcomes = _by_name(samples, Pipeline(store).handle([s.message for s in samples.values()]))
    broken = outcomes["xml-create-bankaccount"]
    assert broken.decision.verdict is Verdict.MALFORMED
    assert broken.decision.reason is Reason.INTERNAL_ERROR
    assert broken.settlement is Settlement.DEAD_LETTER
    assert store.count() == 6


def test_same_event_twice_in_one_batch_stores_one_entry(store, samples):
    message = samples["json-create-bankaccount"].message
    outcomes = Pipeline(store).handle([message, message])
    assert [o.settlement for o in outcomes] == [Settlement.COMPLETE] * 2
    assert store.count() == 1


def test_empty_batch_is_fine(store):
    assert Pipeline(store).handle([]) == []


def test_open_organization_filter_warns_at_start(store, caplog):
    with caplog.at_level("WARNING", logger="shared.trust"):
        Pipeline(store)
    assert "ALLOWED_ORGANIZATION_IDS is empty" in caplog.text
