"""reconcile and backfill, as a user runs them (``psaudit``), against the Web API double and
both real stores (SQLite, and the Table store on Azurite)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.dataverse.sessions import SessionRow
from shared.stores.sqlite import SqliteAuditStore
from shared.stores.table import TableAuditStore
from shared.trail.reconcile import backfill_entry
from shared.verdicts import Reason, Verdict
from tests.conftest import run_cli
from tests.dataverse_double import TOKEN, DataverseDouble
from tests.entries import make_entry

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SINCE, UNTIL = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
BANK = "6f9c2d4e-8a1b-4c3d-9e5f-0a1b2c3d4e5f"
ACCOUNT = "11112222-3333-4444-5555-666677778888"
ORG = "5d4f2b1e-7a3c-4e9b-8d6f-1c2b3a4d5e6f"


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


@pytest.fixture
def double():
    with DataverseDouble() as started:
        started.server_page_size = 3  # the listing takes several pages
        yield started
    assert started.violations == []


def _env(store, double: DataverseDouble, azurite=None) -> dict[str, str]:
    env = {"DATAVERSE_ACCESS_TOKEN": TOKEN, "DATAVERSE_URL": double.url}
    if isinstance(store, TableAuditStore):
        return {
            **env,
            "AUDIT_STORE": "table",
            "AUDIT_TABLE_NAME": store.table_name,
            "AUDIT_TABLE_CONNECTION_STRING": azurite.connection_string,
        }
    assert isinstance(store, SqliteAuditStore)
    return {**env, "AUDIT_STORE": "sqlite", "AUDIT_SQLITE_PATH": str(store.path)}


def _seed(double: DataverseDouble, store) -> dict[str, str]:
    """Sessions in and around the window, and the trail that records some of them."""
    ids = {name: _id(name) for name in ("covered", "missing", "behind", "deleted", "later")}
    for n in range(5):  # covered sessions: an entry 0.5 s after modifiedon
        session = _id(f"ok-{n}")
        double.add_session(session, modifiedon=T0 + timedelta(hours=n + 1))
        store.write(
            [
                make_entry(
                    100 + n,
                    session=session,
                    when=T0 + timedelta(hours=n + 1, seconds=0.5),
                    organization_id=ORG,
                )
            ]
        )
    double.add_session(ids["covered"], modifiedon=T0 + timedelta(hours=7))
    store.write([make_entry(1, session=ids["covered"], when=T0 + timedelta(hours=7, seconds=1))])
    double.add_session(
        ids["missing"],
        modifiedon=T0 + timedelta(hours=8),
        regarding=("sample_bankaccount", BANK),
        regarding_name="Savings",
    )
    double.add_session(
        ids["behind"],
        modifiedon=T0 + timedelta(hours=9),
        createdon=T0 - timedelta(days=3),
        regarding=("account", ACCOUNT),
    )
    store.write([make_entry(2, session=ids["behind"], when=T0 - timedelta(days=3))])
    # in the trail, deleted from Dataverse
    store.write([make_entry(3, session=ids["deleted"], when=T0 + timedelta(hours=10))])
    # in the trail, modified again after the window: exists, not reported
    double.add_session(ids["later"], modifiedon=T0 + timedelta(days=2))
    store.write([make_entry(4, session=ids["later"], when=T0 + timedelta(hours=11))])
    double.add_session(modifiedon=T0 - timedelta(hours=1))  # before the window
    return ids


@pytest.fixture(params=["sqlite", "table"])
def trail(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteAuditStore(tmp_path / "audit.sqlite3")
        yield store, None
        store.close()
    else:
        from tests.conftest import table_store

        azurite = request.getfixturevalue("azurite")
        store = table_store(azurite.connection_string)
        yield store, azurite
        store.delete_table()
        store.close()


def _reconcile(env: dict[str, str], *extra: str):
    done = run_cli(
        "reconcile", "--since", SINCE, "--until", UNTIL, "--format", "json", *extra,
        env=env, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_reconcile_finds_the_seeded_gaps_then_backfill_closes_them(double, trail) -> None:
    store, azurite = trail
    ids = _seed(double, store)
    env = _env(store, double, azurite)
    double.throttle(2, retry_after=1)  # service protection limits on the way
    status, found = _reconcile(env, "--page-size", "4")
    assert status == 1
    assert found["sessions"] == 8
    assert (found["since"], found["until"]) == (
        "2026-12-01T00:00:00.000Z",
        "2026-12-02T00:00:00.000Z",
    )
    assert found["missing"] == [
        {
            "processsession_id": ids["missing"],
            "modifiedon": "2026-12-01T08:00:00Z",
            "regarding_logical_name": "sample_bankaccount",
            "regarding_id": BANK,
        }
    ]
    assert [b["processsession_id"] for b in found["behind"]] == [ids["behind"]]
    assert found["behind"][0]["regarding_logical_name"] == "account"
    assert [o["processsession_id"] for o in found["only_in_trail"]] == [ids["deleted"]]
    pages = [s for s in double.seen if "processsessions?" in s.path]
    assert len(pages) >= 3  # page size 3 on the server: followed through every nextLink

    dry = run_cli("backfill", "--since", SINCE, "--until", UNTIL, "--dry-run", env=env, check=False)
    assert dry.returncode == 0, dry.stderr
    assert len(dry.stdout.splitlines()) == 2
    assert "would write 2" in dry.stderr
    assert _reconcile(env)[0] == 1  # nothing was written

    done = run_cli("backfill", "--since", SINCE, "--until", UNTIL, env=env, check=False)
    assert done.returncode == 0, done.stderr
    written = {e["processsession_id"]: e for e in map(json.loads, done.stdout.splitlines())}
    assert set(written) == {ids["missing"], ids["behind"]}
    missing = written[ids["missing"]]
    assert (missing["origin"], missing["verdict"], missing["reason"]) == (
        "backfill",
        "accepted",
        None,
    )
    assert (missing["regarding_logical_name"], missing["regarding_id"]) == (
        "sample_bankaccount",
        BANK,
    )
    assert missing["regarding_source"] == "web_api"
    assert missing["organization_id"] == ORG  # the trail's own organization
    assert all(c["old"] is None for c in missing["changes"])
    behind = written[ids["behind"]]
    assert (behind["verdict"], behind["reason"], behind["message_name"]) == (
        "rejected",
        "regarding_not_bankaccount",
        "Update",
    )

    again = run_cli("backfill", "--since", SINCE, "--until", UNTIL, env=env, check=False)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert "would write" not in again.stderr
    assert "wrote 0 new of 0" in again.stderr
    status, found = _reconcile(env)
    assert status == 0
    assert (found["missing"], found["behind"]) == ([], [])
    assert [o["processsession_id"] for o in found["only_in_trail"]] == [ids["deleted"]]


def test_a_live_event_of_a_backfilled_version_takes_its_place(double, tmp_path) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    session = _id("late")
    double.add_session(
        session, modifiedon=T0 + timedelta(hours=3), regarding=("sample_bankaccount", BANK)
    )
    env = _env(store, double)
    assert run_cli("backfill", "--since", SINCE, "--until", UNTIL, env=env).returncode == 0
    shown = run_cli("entries", "--session", session, "--format", "jsonl", env=env).stdout
    assert [json.loads(line)["origin"] for line in shown.splitlines()] == ["backfill"]
    # the live event of the same version arrives late: recorded, and shown in its place
    live = make_entry(9, session=session, when=T0 + timedelta(hours=3, seconds=1))
    assert store.write([live]) == 1
    shown = run_cli("entries", "--session", session, "--format", "jsonl", env=env).stdout
    assert [json.loads(line)["entry_id"] for line in shown.splitlines()] == [live.entry_id]
    assert run_cli("backfill", "--since", SINCE, "--until", UNTIL, env=env).stdout == ""
    store.close()


def test_backfill_never_writes_over_a_version_the_trail_now_holds(double, tmp_path) -> None:
    """Between the listing and the write a live event lands: the row is read again, the trail
    is asked again, and nothing is written for that version."""
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    session = double.add_session(modifiedon=T0 + timedelta(hours=2))
    from shared.dataverse.webapi import WebApi
    from shared.trail.reconcile import backfill

    api = WebApi(double.url, lambda: TOKEN)

    class LandsMeanwhile(SqliteAuditStore):
        calls = 0

        def by_session(self, *args, **kwargs):
            type(self).calls += 1
            if type(self).calls == 2:  # reconcile asked first; backfill asks again before writing
                store.write([make_entry(5, session=session, when=T0 + timedelta(hours=2))])
            return super().by_session(*args, **kwargs)

    racing = LandsMeanwhile(tmp_path / "audit.sqlite3")
    done = backfill(api, racing, T0, T0 + timedelta(days=1))
    assert done.entries == []
    assert done.skipped == [(session, "the trail holds this version now")]
    racing.close()
    store.close()


def test_reconcile_usage_and_connection_errors_exit_2(tmp_path) -> None:
    SqliteAuditStore(tmp_path / "a.sqlite3").close()
    env = {"AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"), "DATAVERSE_ACCESS_TOKEN": TOKEN}
    done = run_cli("reconcile", "--since", SINCE, "--until", UNTIL, env=env, check=False)
    assert done.returncode == 2
    assert "--environment" in done.stderr
    assert done.stdout == ""
    from devtools.processes import free_port

    for command in ("reconcile", "backfill"):
        done = run_cli(
            command, "--since", SINCE, "--until", UNTIL,
            "--environment", f"http://127.0.0.1:{free_port()}",
            env=env, check=False, timeout=90,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "no answer" in done.stderr
    done = run_cli(
        "reconcile", "--since", UNTIL, "--until", SINCE, "--environment", "https://x.example",
        env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not earlier than" in done.stderr


def test_a_refused_token_exits_2_and_is_never_printed(double, tmp_path) -> None:
    SqliteAuditStore(tmp_path / "a.sqlite3").close()
    env = {
        "AUDIT_SQLITE_PATH": str(tmp_path / "a.sqlite3"),
        "DATAVERSE_ACCESS_TOKEN": "WRONG-SECRET-TOKEN",
        "DATAVERSE_URL": double.url,
    }
    done = run_cli("reconcile", "--since", SINCE, "--until", UNTIL, env=env, check=False)
    assert done.returncode == 2
    assert "HTTP 401" in done.stderr
    assert "WRONG-SECRET-TOKEN" not in done.stderr + done.stdout


def test_reconcile_prints_a_table_on_request(double, tmp_path) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    missing = double.add_session(modifiedon=T0 + timedelta(hours=1))
    done = run_cli(
        "reconcile", "--since", SINCE, "--until", UNTIL, "--format", "table",
        env=_env(store, double), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "missing" in done.stdout
    assert missing in done.stdout
    assert "1 missing, 0 behind" in done.stderr
    store.close()


def test_a_backfilled_entry_is_judged_by_the_same_rule() -> None:
    def row(logical: str | None) -> SessionRow:
        return SessionRow(
            processsession_id=_id("s"),
            modifiedon="2026-12-01T01:00:00Z",
            modified=T0 + timedelta(hours=1),
            created=T0,
            regarding_logical_name=logical,
            regarding_id=BANK if logical else None,
            regarding_name=None,
            name="n",
            modified_by=None,
            columns={"name": "n", "_regardingobjectid_value": BANK if logical else None},
        )

    verdicts = {
        logical: (e.verdict.value, e.reason.value if e.reason else None)
        for logical in ("sample_bankaccount", "account", None)
        for e in [backfill_entry(row(logical), ORG, T0)]
    }
    assert verdicts == {
        "sample_bankaccount": ("accepted", None),
        "account": ("rejected", "regarding_not_bankaccount"),
        None: ("rejected", "regarding_empty"),
    }
    same = backfill_entry(row("account"), ORG, T0 + timedelta(days=1))
    assert same.entry_id == backfill_entry(row("account"), ORG, T0).entry_id


def _reconcile_json(store, double, *extra: str, check: bool = False):
    return run_cli(
        "reconcile", "--since", SINCE, "--until", UNTIL, "--format", "json", *extra,
        env=_env(store, double), check=check,
    )  # fmt: skip


def test_an_entry_dated_in_the_future_covers_nothing_and_is_reported(double, tmp_path) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    session = _id("forged-future")
    double.add_session(session, modifiedon=T0 + timedelta(hours=2))
    forged = make_entry(40, session=session, when=datetime(2100, 1, 1, tzinfo=UTC))
    store.write([forged])
    store.close()
    done = _reconcile_json(store, double)
    assert done.returncode == 1, done.stderr
    found = json.loads(done.stdout)
    # the trail holds no plausible entry of it: missing, and the forged entry is shown
    assert [row["processsession_id"] for row in found["missing"]] == [session]
    assert [e["entry_id"] for e in found["implausible"]] == [forged.entry_id]
    assert "1 entries dated in the future" in done.stderr


def test_a_session_listed_on_two_pages_counts_once(double, tmp_path) -> None:
    """A row modified while the listing is paged comes back on a later page: one session."""
    from tests.dataverse_double import iso

    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    store.close()
    session = _id("twice")
    double.add_session(session, modifiedon=T0 + timedelta(hours=1))
    for n in range(4):
        double.add_session(_id(f"filler-{n}"), modifiedon=T0 + timedelta(hours=2 + n))
    real_query = double.query

    served: list[str] = []

    def query(entity_set, params, prefer, base_url):  # the row moves on after page 1
        answer = real_query(entity_set, params, prefer, base_url)
        double.tables["processsessions"][session]["modifiedon"] = iso(T0 + timedelta(hours=9))
        served.extend(row["processsessionid"] for row in answer[1]["value"])
        return answer

    double.query = query
    found = json.loads(_reconcile_json(store, double).stdout)
    assert served.count(session) == 2  # listed on page 1 and again on page 2
    missing = [row["processsession_id"] for row in found["missing"]]
    assert missing.count(session) == 1
    assert len(missing) == len(set(missing)) == found["sessions"]


@pytest.mark.parametrize(
    ("since", "until"),
    [("0001-01-01", UNTIL), (SINCE, "9999-12-31T23:59:59Z"), ("1700-01-01", SINCE)],
)
def test_dates_dataverse_cannot_hold_are_a_usage_error(double, tmp_path, since, until) -> None:
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    store.close()
    done = run_cli(
        "reconcile", "--since", since, "--until", until,
        env=_env(store, double), check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "outside the dates Dataverse holds" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert double.seen == []


def test_a_kelvin_sign_bank_account_is_not_one(double, tmp_path) -> None:
    """A table named with U+212A (which str.lower() folds to 'k') is another table."""
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    session = _id("kelvin")
    double.add_session(
        session, modifiedon=T0 + timedelta(hours=1), regarding=("sample_ban\u212aaccount", BANK)
    )
    store.close()
    done = run_cli(
        "backfill", "--since", SINCE, "--until", UNTIL, "--dry-run",
        env=_env(store, double), check=False,
    )  # fmt: skip
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["verdict"], e["reason"]) for e in entries] == [
        ("rejected", "regarding_not_bankaccount")
    ]


@pytest.mark.parametrize("command", ["reconcile", "backfill"])
def test_a_missing_store_is_exit_2_and_nothing_is_created(double, tmp_path, command) -> None:
    path = tmp_path / "mistyped" / "audit.sqlite3"
    double.add_session(modifiedon=T0 + timedelta(hours=1))
    env = {"DATAVERSE_ACCESS_TOKEN": TOKEN, "DATAVERSE_URL": double.url}
    done = run_cli(
        command, "--since", SINCE, "--until", UNTIL, "--db", str(path), env=env, check=False
    )
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "AUDIT_STORE=table" in done.stderr
    assert not path.exists()
    assert not path.parent.exists()
    assert done.stdout == ""


def test_a_session_the_trail_holds_without_its_regarding_is_a_gap_backfill_closes(
    double, tmp_path
) -> None:
    """Dataverse links the session to a bank account; the trail holds its event only as
    rejected/regarding_not_in_message: reconcile lists it as unresolved (exit 1), backfill
    writes an entry read from the Web API, and the account's timeline shows it."""
    store = SqliteAuditStore(tmp_path / "audit.sqlite3")
    session = _id("no-regarding")
    double.add_session(
        session, modifiedon=T0 + timedelta(hours=3), regarding=("sample_bankaccount", BANK)
    )
    live = make_entry(
        41,
        session=session,
        when=T0 + timedelta(hours=3, seconds=1),
        verdict=Verdict.REJECTED,
        reason=Reason.REGARDING_NOT_IN_MESSAGE,
    )
    store.write([live])
    store.close()
    done = _reconcile_json(store, double)
    assert done.returncode == 1
    found = json.loads(done.stdout)
    assert [row["processsession_id"] for row in found["unresolved"]] == [session]
    assert found["missing"] == found["behind"] == []
    assert "1 without their regarding" in done.stderr
    assert str(store.path) in done.stderr  # the summary says which trail it compared
    written = run_cli("backfill", "--since", SINCE, "--until", UNTIL, env=_env(store, double))
    entries = [json.loads(line) for line in written.stdout.splitlines()]
    assert [(e["origin"], e["verdict"], e["regarding_id"]) for e in entries] == [
        ("backfill", "accepted", BANK)
    ]
    timeline = run_cli("timeline", BANK, "--format", "jsonl", env=_env(store, double))
    assert [json.loads(line)["processsession_id"] for line in timeline.stdout.splitlines()] == [
        session
    ]
    assert _reconcile_json(store, double).returncode == 0
