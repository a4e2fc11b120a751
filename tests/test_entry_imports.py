"""What the Functions entry point loads: the operator's tools (rich, Jinja2, the CLI, the page)
and the Web API client stay out of a cold start. ``requests`` is loaded by azure-servicebus
itself (its management client), which the Service Bus extension imports: measured against
that baseline, the app adds none of these."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("rich", "requests", "jinja2", "shared.cli", "shared.web.page", "shared.dataverse.webapi")


def _loaded(statement: str) -> set[str]:
    script = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_the_entry_point_loads_no_operator_tool_beyond_what_the_extension_loads() -> None:
    baseline = _loaded("import azure.functions, azurefunctions.extensions.bindings.servicebus")
    app = _loaded("import function_app\nfunction_app.app.get_functions()")
    added = app - baseline
    assert [m for m in TOOLS if m in added] == []
    assert "rich" not in app
    assert "jinja2" not in app
