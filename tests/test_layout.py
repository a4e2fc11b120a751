"""The house stays findable: the command line by purpose in modules of a readable size, and a
README that stays an operator's guide (the rest lives in docs/)."""

from __future__ import annotations

from pathlib import Path

from shared.cli.main import GROUPS, build_parser

ROOT = Path(__file__).resolve().parent.parent


def test_no_module_of_the_command_line_grows_past_about_400_lines() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in (ROOT / "shared" / "cli").glob("*.py")
    }
    assert {name: size for name, size in sizes.items() if size > 420} == {}


def test_the_readme_is_an_operators_guide_of_about_300_lines() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 320


def test_help_lists_every_command_once_under_its_group() -> None:
    parser = build_parser()
    text = parser.format_help()
    groups = [name for name, _, _ in GROUPS]
    assert groups == ["ingest", "read", "prove", "complete", "operate"]
    positions = [text.index(f"\n  {group}: ") for group in groups]
    assert positions == sorted(positions)
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for command in subparsers.choices or ():
        assert text.count(f"\n    {command} ") == 1, command
    # each command sits under the group of the module that defines it
    read_block = text[text.index("\n  read: ") : text.index("\n  prove: ")]
    assert all(f"\n    {c} " in read_block for c in ("entries", "export", "timeline", "serve"))
