"""Least privilege in the deployment: what main.bicep grants follows the features that are really on
(a feature without its group is off), and the operator reads no secret unless breaking glass."""

from __future__ import annotations

import re

import pytest

from tests.infra.bicep_eval import BicepModel
from tests.infra.bicep_files import INFRA, bicep_block, bicep_map_of_lists

MAIN = BicepModel(INFRA / "main.bicep", INFRA / "main.parameters.json")
GRAPH = (INFRA / "modules" / "graph-permissions.bicep").read_text(encoding="utf-8")
RBAC = (INFRA / "modules" / "rbac.bicep").read_text(encoding="utf-8")
FEATURE_PERMISSIONS = bicep_map_of_lists(GRAPH, "var featurePermissions = {")
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
ROTATION_ONLY = {"User-PasswordProfile.ReadWrite.All", "RoleManagement.Read.Directory"}


def azd(**environment: str) -> BicepModel:
    """main.bicep as `azd up` deploys it with these azd environment values (the rest unset)."""
    return BicepModel(INFRA / "main.bicep", INFRA / "main.parameters.json", environment)


def granted(model: BicepModel) -> set[str]:
    """The Graph permissions graph-permissions.bicep grants for the model's features."""
    features = model.object_var("features")
    return {p for feature, on in features.items() if on for p in FEATURE_PERMISSIONS[feature]}


def test_a_default_azd_up_grants_nothing_to_features_without_groups() -> None:
    model = azd()
    features = model.object_var("features")
    assert features == {"sync": False, "rotation": False, "passkeys": True, "enrollmentGroups": False,
                        "federation": False, "export": False, "notifications": False}
    assert not granted(model) & ROTATION_ONLY
    assert "GroupMember.Read.All" not in granted(model)  # sync is off without a sync group
    assert model.output("BRIDGE_DIRECTORY_ROLES") == ""


def test_rotation_with_its_group_gets_its_permissions_and_role() -> None:
    model = azd(BRIDGE_ROTATION_GROUP="Password rotation")
    assert model.object_var("features")["rotation"] is True
    assert granted(model) >= ROTATION_ONLY
    assert model.output("BRIDGE_DIRECTORY_ROLES") == "User Administrator"
    admins = azd(BRIDGE_ROTATION_GROUP="g", BRIDGE_ROTATION_DIRECTORY_ROLE="Privileged Authentication Administrator")
    assert admins.output("BRIDGE_DIRECTORY_ROLES") == "Privileged Authentication Administrator"


def test_a_switched_off_feature_gets_nothing_even_with_its_group() -> None:
    model = azd(BRIDGE_ROTATION_GROUP="Password rotation", BRIDGE_ENABLE_ROTATION="false")
    assert model.object_var("features")["rotation"] is False
    assert not granted(model) & ROTATION_ONLY
    assert model.output("BRIDGE_DIRECTORY_ROLES") == ""


def test_created_groups_turn_on_sync_rotation_and_the_enrollment_groups() -> None:
    model = azd(BRIDGE_CREATE_GROUPS="true")
    features = model.object_var("features")
    assert [features["sync"], features["rotation"], features["enrollmentGroups"]] == [True, True, True]
    assert {"Group.Create", "GroupMember.ReadWrite.All"} <= granted(model)
    no_passkeys = azd(BRIDGE_CREATE_GROUPS="true", BRIDGE_ENABLE_PASSKEYS="false")
    assert no_passkeys.object_var("features")["enrollmentGroups"] is False


def test_sync_groups_given_as_a_parameter_turn_sync_on() -> None:
    model = azd().with_params(syncGroups=["Bridge Sync"])
    assert model.object_var("features")["sync"] is True
    assert {"User.Read.All", "GroupMember.Read.All"} <= granted(model)


def test_the_grants_the_connection_and_the_roles_read_the_same_switches() -> None:
    main = MAIN.text
    assert re.search(r"module graphPermissions [^{]*\{[^}]*features: features\n", main, re.DOTALL)
    connection = bicep_block(main, "var mainConnection = {")
    for feature in ("sync", "rotation", "passkeys"):
        assert re.search(rf"{feature}: \{{\n\s*enabled: {feature}On\n", connection), feature
    assert "enabledFeatures = filter(objectKeys(featurePermissions), f => bool(features[?f] ?? false))" in GRAPH
    assert re.search(r"^output BRIDGE_DIRECTORY_ROLES string = rotationOn \?", main, re.MULTILINE)


def _resource(text: str, symbol: str) -> str:
    start = text.index(f"resource {symbol} ")
    return text[start:text.index("\n}\n", start)]


def test_the_operator_reads_no_secret_by_default() -> None:
    assert MAIN.params["operatorCanReadSecrets"] is False
    assert "operatorCanReadSecrets: operatorCanReadSecrets" in MAIN.text
    operator_officer = []
    for symbol, header in re.findall(r"^resource (\w+) 'Microsoft\.Authorization/roleAssignments@[^']+' = (.*)\{$",
                                     RBAC, re.MULTILINE):
        body = _resource(RBAC, symbol)
        if "keyVaultSecretsOfficer" in body and "principalId: operatorPrincipalId" in body:
            operator_officer.append(header)
    assert operator_officer == ["if (!empty(operatorPrincipalId) && operatorCanReadSecrets) "]
    writer = _resource(RBAC, "secretWriter")
    actions = re.findall(r"'(Microsoft\.KeyVault/[^']+)'", bicep_block(RBAC, "var secretWriterActions = ["))
    assert "secretWriterActions" in writer
    assert actions
    assert not [a for a in actions if "getSecret" in a or "*" in a], actions


@pytest.mark.parametrize("name", ["operatorCanReadSecrets"])
def test_the_break_glass_parameter_is_documented(name: str) -> None:
    deploy = (INFRA.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert name in deploy
    assert re.search(r"@description\('Optional\. Break glass", MAIN.text)
