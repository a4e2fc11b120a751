"""The deployment templates against the code: no Bicep compiler runs here, so the tests read
the templates as text and check that the app settings they set are exactly the ones the code
and the Functions host read, and that the names they use exist in the app."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import AliasChoices

from shared.settings import Settings
from tests.conftest import registered_functions

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = (ROOT / "infra" / "resources.bicep").read_text()

# Read by the Functions host or its extensions, not by this code (Learn: identity-based
# connections, Flex Consumption, Application Insights with Entra auth, disabling functions).
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "ServiceBusConnection__credential",
    "ServiceBusConnection__clientId",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
}
# Read by azure-identity's DefaultAzureCredential to pick the user-assigned identity.
IDENTITY_SETTINGS = {"AZURE_CLIENT_ID"}
# Settings the code reads that Azure does not need: defaults, or development/worker only.
NOT_IN_AZURE = {
    "AUDIT_SQLITE_PATH",  # SQLite is the one-machine store
    "AUDIT_SQLITE_BUSY_TIMEOUT",
    "AUDIT_SEAL_PATH",  # the SQLite trail's window records; Azure keeps them in Blob Storage
    "AUDIT_TABLE_CONNECTION_STRING",  # Azurite / development; Azure uses the identity
    "AUDIT_MAX_BODY_BYTES",
    "AUDIT_MAX_NESTING_DEPTH",  # defaults fit Service Bus Standard
    "SERVICEBUS_CONNECTION_STRING",
    "ServiceBusConnection",  # worker / development only
    "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",  # the worker's name for the Functions setting
    "AUDIT_SEAL_CONNECTION_STRING",  # Azurite / development; Azure uses the identity
    "AUDIT_PAGE_CHARS",  # the default fits the instance's memory
    "AUDIT_LIBRARY_LOG_LEVEL",  # WARNING, the default, is what Azure should run
    "AUDIT_LOOKUP_ATTEMPTS",  # the default: 5 of the queue's 10 deliveries
    "DATAVERSE_MAX_ANSWER_BYTES",  # the Web API client's bounds: defaults fit Dataverse
    "DATAVERSE_MAX_PAGES",
    "DATAVERSE_TIMER_BUDGET_SECONDS",
}


def bicep_app_settings() -> set[str]:
    block = RESOURCES.split("name: 'appsettings'", 1)[1].split("properties: {", 1)[1]
    block = block.split("\n    }\n", 1)[0]
    return {
        m.group(1) or m.group(2)
        for m in re.finditer(r"^\s+(?:'([^']+)'|(\w+)):", block, re.MULTILINE)
    }


def code_settings() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        else:
            names.add(name.upper())
    return names


def binding_settings() -> set[str]:
    names = set()
    for function in registered_functions():
        for binding in json.loads(function.get_function_json())["bindings"]:
            for value in binding.values():
                names.update(re.findall(r"%(\w+)%", str(value)))
    return names


def function_names() -> set[str]:
    return {f.get_function_name() for f in registered_functions()}


def test_the_templates_set_exactly_the_settings_that_are_read():
    in_bicep = bicep_app_settings()
    disabled = {
        f"AzureWebJobs.{name}.Disabled"
        for name in ("process_session_queue", "process_session_topic")
    }
    read = (
        (code_settings() - NOT_IN_AZURE)
        | binding_settings()
        | HOST_SETTINGS
        | IDENTITY_SETTINGS
        | disabled
    )
    assert in_bicep == read


def test_disabled_settings_name_registered_functions():
    for setting in re.findall(r"'AzureWebJobs\.(\w+)\.Disabled'", RESOURCES):
        assert setting in function_names()


def test_no_key_or_connection_string_in_the_app_settings():
    block = RESOURCES.split("name: 'appsettings'", 1)[1].split("\n    }\n", 1)[0]
    assert "listKeys" not in block
    assert "AccountKey" not in block
    assert "SharedAccessKey" not in block
    assert "AUDIT_TABLE_CONNECTION_STRING" not in block


def test_roles_the_identity_needs_are_assigned():
    roles = dict(re.findall(r"(\w+): '([0-9a-f-]{36})'", RESOURCES))
    assert roles["serviceBusDataReceiver"] == "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
    assert roles["storageTableDataContributor"] == "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    assert roles["storageBlobDataOwner"] == "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
    for role in roles:
        assert f"roles.{role})" in RESOURCES, f"{role} is defined but never assigned"


def test_dataverse_gets_a_send_only_rule():
    rules = re.findall(r"rights: \[ ([^\]]*) \]", RESOURCES)
    assert rules == ["'Send'", "'Send'"]


def test_azd_layout():
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert "host: function" in azure_yaml
    assert "language: python" in azure_yaml
    assert (ROOT / "infra" / "main.bicep").exists()
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())
    main = (ROOT / "infra" / "main.bicep").read_text()
    for name in parameters["parameters"]:
        assert f"param {name} " in main
    assert "runtime: { name: 'python', version: '3.11' }" in RESOURCES


def test_local_settings_example_names_known_settings():
    example = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    known = (
        code_settings()
        | binding_settings()
        | HOST_SETTINGS
        | {
            "FUNCTIONS_WORKER_RUNTIME",
            "AzureWebJobsStorage",
            "PYTHON_ISOLATE_WORKER_DEPENDENCIES",
            "AzureWebJobs.process_session_topic.Disabled",
        }
    )
    assert set(example) - known == set()


def test_local_settings_example_lists_every_setting_the_code_reads():
    """Derived from the settings model, so the example cannot drift: each setting appears
    under one of its names (the Service Bus connection in its identity form only)."""
    example = set(json.loads((ROOT / "local.settings.json.example").read_text())["Values"])
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = (
            {str(choice) for choice in alias.choices}
            if isinstance(alias, AliasChoices)
            else {name.upper()}
        )
        if name == "servicebus_connection_string":
            continue  # a secret: the example shows the identity-based connection instead
        if not names & example:
            missing.append(sorted(names)[0])
    assert missing == []


MAIN = (ROOT / "infra" / "main.bicep").read_text()


def test_every_main_parameter_is_wired_from_azd_and_reaches_its_use():
    """Each parameter of main.bicep is set by main.parameters.json (from an azd variable) or
    has a default, and each one that is a setting reaches its app setting."""
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    declared = re.findall(r"^param (\w+) (\w+)( = .*)?$", MAIN, re.MULTILINE)
    for name, _, default in declared:
        assert name in parameters or default, f"{name}: no value from azd and no default"
        if name in ("location", "tags", "environmentName", "resourceGroupName"):
            continue
        assert f"{name}: {name}" in MAIN, f"{name} is not passed to resources.bicep"
    settings = {
        "allowedOrganizationIds": "ALLOWED_ORGANIZATION_IDS",
        "redactColumns": "AUDIT_REDACT_COLUMNS",
    }
    for parameter, setting in settings.items():
        assert f"{setting}: {parameter}" in RESOURCES
    assert parameters["redactColumns"]["value"] == "${AUDIT_REDACT_COLUMNS=}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID=}"
    assert "@metadata({ azd: { type: 'location' } })" in MAIN


def test_the_operator_gets_the_roles_the_operations_guide_uses():
    for role in ("storageTableDataReader", "serviceBusDataReceiver", "serviceBusDataSender"):
        assert re.search(
            rf"if \(!empty\(principalId\)\) \{{[^}}]*roles\.{role}\)[^}}]*principalId: principalId",
            RESOURCES,
            re.DOTALL,
        ), role


def test_the_deployed_package_leaves_out_what_only_people_and_tests_read():
    ignored = set((ROOT / ".funcignore").read_text().split())
    for name in (
        "README.md",
        "docs",
        "samples",
        "package.json",
        "package-lock.json",
        "azure.yaml",
        "*.egg-info",
        "tests",
        "bench",
        "devtools",
    ):
        assert name in ignored, name


def test_operator_roles_take_the_principal_type_azd_gives() -> None:
    """azd sets AZURE_PRINCIPAL_TYPE (ServicePrincipal in CI): a hard-coded 'User' fails there."""
    assert "principalType: 'User'" not in RESOURCES
    assert RESOURCES.count("principalType: principalType") == 3
    assert '"${AZURE_PRINCIPAL_TYPE=User}"' in (ROOT / "infra" / "main.parameters.json").read_text()


def test_the_location_is_one_of_the_flex_consumption_regions() -> None:
    allowed = re.search(r"@allowed\(\[(.*?)\]\)\s*@metadata\(\{ azd: \{ type: 'location' \} \}\)",
                        MAIN, re.S)  # fmt: skip
    assert allowed is not None
    regions = re.findall(r"'([a-z0-9]+)'", allowed.group(1))
    assert {"eastus", "northeurope", "swedencentral"} <= set(regions)


def test_silence_failures_and_backlog_are_alerted() -> None:
    """Heartbeats for both timers (a timer that fails logs nothing), failed executions, and a
    Service Bus backlog; the guide lists each alert the template creates."""
    assert "name: 'reconcile'" in RESOURCES
    assert "line: 'reconcile_trail:'" in RESOURCES
    assert "window: 'PT26H'" in RESOURCES
    assert "line: 'seal_trail:'" in RESOURCES
    assert "window: 'PT2H'" in RESOURCES
    assert "requests | where success == false" in RESOURCES
    assert "metricName: 'ActiveMessages'" in RESOURCES
    guide = (ROOT / "docs" / "operations.md").read_text()
    for alert in re.findall(r"name: 'alert-([a-z-]+?)-(?:\$\{token\})'", RESOURCES):
        assert f"alert-{alert}-" in guide, alert
    for beat in ("reconcile", "seal"):
        assert f"alert-{beat}-silent-" in guide
    # each timer's success line is what its heartbeat counts
    assert '"reconcile_trail: %s to %s' in (ROOT / "functions" / "reconcile_trail.py").read_text()
    assert '"seal_trail: ' in (ROOT / "functions" / "trail_seal.py").read_text()
