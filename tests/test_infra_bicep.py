"""The templates read with a real Bicep parser (pycep, the one checkov uses), point by point
against what docs/operations.md says they do: a guide and a template that disagree on a
region, a setting or a role fail here."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "operations.md").read_text()


@cache
def bicep(name: str) -> dict[str, Any]:
    return dict(BicepParser().parse(text=(ROOT / "infra" / name).read_text()))


def resources() -> dict[str, Any]:
    return dict(bicep("resources.bicep")["resources"])


def _body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's properties, under its condition or loop if it has one."""
    config = resource["config"]
    return dict(config["config"]) if "condition" in config or "loop_type" in config else config


def _holds(condition: Any, params: dict[str, Any]) -> bool:
    """A pycep condition tree evaluated with these parameter values (the operators the
    templates use: not, and, or, empty, a parameter)."""
    if isinstance(condition, str):
        return bool(params[condition])
    if "operator" in condition:
        operator = condition["operator"]
        operands = operator["operands"]
        if operator["type"] == "not":
            return not _holds(operands["bool_value"], params)
        if operator["type"] == "and":
            return _holds(operands["operand_1"], params) and _holds(operands["operand_2"], params)
        if operator["type"] == "or":
            return _holds(operands["operand_1"], params) or _holds(operands["operand_2"], params)
    if "function" in condition and condition["function"]["type"] == "empty":
        return not params[condition["function"]["parameters"]["item_to_test"]]
    raise AssertionError(f"a condition this test does not read: {condition}")


def _exists(resource: dict[str, Any], params: dict[str, Any]) -> bool:
    condition = resource["config"].get("condition")
    return condition is None or _holds(condition, params)


def _role_of(resource: dict[str, Any]) -> str:
    name = _body(resource)["properties"]["roleDefinitionId"]["function"]["parameters"]
    return str(name["resource_name_1"]["operator"]["operands"]["operand_2"])


def _principal(resource: dict[str, Any]) -> Any:
    return _body(resource)["properties"]["principalId"]


# -- the region ------------------------------------------------------------------------------


def test_every_region_the_guide_names_is_one_the_template_allows() -> None:
    location = bicep("main.bicep")["parameters"]["location"]
    allowed = next(d["argument"] for d in location["decorators"] if d["type"] == "allowed")
    named = re.findall(r"AZURE_LOCATION\s+([a-z0-9]+)", GUIDE)
    assert named, "the guide names a region"
    assert [region for region in named if region not in allowed] == []


# -- Key Vault references ----------------------------------------------------------------------


def test_every_key_vault_reference_waits_for_the_apps_vault_role() -> None:
    settings = _body(resources()["functionApp__appSettings"])
    referencing = [
        name
        for name, value in settings["properties"].items()
        if "@Microsoft.KeyVault(" in json.dumps(value)
    ]
    assert set(referencing) == {"AUDIT_TRAIL_KEY", "AUDIT_TRAIL_PREVIOUS_KEYS"}
    assert "vaultRole" in settings["dependsOn"]
    assert "trailPreviousKeysSecret" in settings["dependsOn"]
    role = resources()["vaultRole"]
    assert _role_of(role) == "keyVaultSecretsUser"
    assert _body(role)["scope"] == "vault"


def test_every_secret_has_a_content_type() -> None:
    secrets = {
        name: _body(resource)
        for name, resource in resources().items()
        if resource["type"] == "Microsoft.KeyVault/vaults/secrets"
    }
    assert set(secrets) == {"trailKeySecret", "trailPreviousKeysSecret"}
    for body in secrets.values():
        assert body["properties"]["contentType"]


# -- the operator's roles ----------------------------------------------------------------------

#: the guide's table (section 1.1): role -> (scope resource, only when operatorMayRepair)
OPERATOR_ROLES = {
    "storageTableDataReader": ("storage", False),
    "storageBlobDataReader": ("sealContainer", False),
    "keyVaultSecretsUser": ("vault", False),
    "storageTableDataContributor": ("storage", True),
}
ROLE_NAMES = {
    "storageTableDataReader": "Storage Table Data Reader",
    "storageBlobDataReader": "Storage Blob Data Reader",
    "keyVaultSecretsUser": "Key Vault Secrets User",
    "storageTableDataContributor": "Storage Table Data Contributor",
}


def _operator_roles(params: dict[str, Any]) -> dict[str, str]:
    found = {}
    for resource in resources().values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        if _principal(resource) == "operatorPrincipalId" and _exists(resource, params):
            found[_role_of(resource)] = str(_body(resource)["scope"])
    return found


@pytest.mark.parametrize(
    ("operator", "may_repair"), [("", False), ("", True), ("x", False), ("x", True)]
)
def test_the_operator_gets_exactly_the_guides_roles(operator: str, may_repair: bool) -> None:
    params = {"operatorPrincipalId": operator, "operatorMayRepair": may_repair}
    expected = {
        role: scope
        for role, (scope, repair) in OPERATOR_ROLES.items()
        if operator and (may_repair or not repair)
    }
    assert _operator_roles(params) == expected


def test_the_guide_names_each_operator_role_and_its_scope() -> None:
    table = GUIDE.split("### 1.1", 1)[1].split("\n## ", 1)[0]
    for role, (scope, repair) in OPERATOR_ROLES.items():
        rows = [line for line in table.splitlines() if f"| {ROLE_NAMES[role]} |" in line]
        assert rows, role
        assert ("OPERATOR_MAY_REPAIR" in rows[0]) is repair
        words = {"storage": "storage account", "sealContainer": "seal container", "vault": "vault"}
        assert words[scope] in rows[0], rows[0]
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    for name, variable in (
        ("operatorPrincipalId", "OPERATOR_PRINCIPAL_ID"),
        ("operatorMayRepair", "OPERATOR_MAY_REPAIR"),
    ):
        assert variable in parameters[name]["value"]
        assert variable in GUIDE


def test_role_ids_are_the_built_in_roles_they_are_named_after() -> None:
    """Azure's built-in role ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles)."""
    roles = bicep("resources.bicep")["variables"]["roles"]["value"]
    assert roles["storageBlobDataReader"] == "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    assert roles["storageBlobDataContributor"] == "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    assert roles["storageTableDataReader"] == "76199698-9eea-4c19-bc75-cec21354c6b6"
    assert roles["storageTableDataContributor"] == "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    assert roles["keyVaultSecretsUser"] == "4633458b-17de-408a-b874-0445c86b69e6"


# -- diagnostic settings -------------------------------------------------------------------------

DIAGNOSTICS = {
    "vault": {"AuditEvent"},
    "tableService": {"StorageWrite", "StorageDelete"},
    "blobService": {"StorageWrite", "StorageDelete"},
    "sealBlobService": {"StorageWrite", "StorageDelete"},
    "serviceBus": {"OperationalLogs"},
}


def test_each_diagnostic_setting_sends_its_categories_to_the_workspace() -> None:
    found = {}
    for resource in resources().values():
        if resource["type"] != "Microsoft.Insights/diagnosticSettings":
            continue
        body = _body(resource)
        workspace = body["properties"]["workspaceId"]["operator"]["operands"]
        assert (workspace["operand_1"], workspace["operand_2"]) == ("logs", "id")
        found[body["scope"]] = {log["category"] for log in body["properties"]["logs"]}
    assert found == DIAGNOSTICS
    for category in ("AuditEvent", "StorageWrite", "StorageDelete", "OperationalLogs"):
        assert category in GUIDE


# -- the seal account ----------------------------------------------------------------------------


def test_the_seal_policy_is_written_only_while_unlocked_on_an_account_of_its_own() -> None:
    found = resources()
    policy = found["sealRetention"]
    assert _exists(policy, {"sealPolicyLocked": False})
    assert not _exists(policy, {"sealPolicyLocked": True})
    container = _body(found["sealContainer"])
    assert _body(found["sealBlobService"])["parent"] == "sealStorage"
    assert container["parent"] == "sealBlobService"
    writer = found["sealWriterRole"]
    assert (_role_of(writer), _body(writer)["scope"]) == (
        "storageBlobDataContributor",
        "sealContainer",
    )
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert "SEAL_POLICY_LOCKED" in parameters["sealPolicyLocked"]["value"]
    assert "azd env set SEAL_POLICY_LOCKED true" in GUIDE


# -- settings the guide names ----------------------------------------------------------------------


def test_every_setting_the_guide_names_is_one_the_code_or_the_template_knows() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        known |= {str(c) for c in getattr(alias, "choices", [])}
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    known |= set(re.findall(r"\$\{([A-Z_]+)", json.dumps(parameters)))
    # read by the Web API client and `register` from the environment, not settings
    known |= {"DATAVERSE_ACCESS_TOKEN", "DATAVERSE_SAS_KEY"}
    named = set(re.findall(r"\b((?:AUDIT|DATAVERSE|OPERATOR|SEAL)_[A-Z_]+)\b", GUIDE))
    assert sorted(named - known) == []


def test_host_logging_fits_opentelemetry_mode() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    logging = host["logging"]
    assert "applicationInsights" not in logging  # samplingSettings do nothing in this mode
    levels = logging["logLevel"]
    assert levels["default"] == "Warning"
    for timer in ("seal_trail", "reconcile_trail"):  # their heartbeat lines stay
        assert levels[f"Function.{timer}.User"] == "Information"
    assert levels["Host.Results"] == "Information"  # the failed-executions alert reads requests


def test_azd_state_is_never_committed() -> None:
    assert ".azure/" in (ROOT / ".gitignore").read_text().split()
