"""The Bicep and the code agree: every app setting the code reads, every queue (with its poison
queue) and table it uses, and every Graph permission each feature needs are in infra/."""

from __future__ import annotations

import re
from enum import Enum
from types import ModuleType
from typing import Any

import pytest
from pydantic import AliasChoices

from shared.config import Settings
from shared.topology import Queue, Table
from tests.infra.bicep_files import (
    INFRA,
    bicep_map_of_lists,
    bicep_string_list,
    bicep_text,
)

MAIN = (INFRA / "main.bicep").read_text(encoding="utf-8")
FUNCTION_APP = (INFRA / "modules" / "function-app.bicep").read_text(encoding="utf-8")
GRAPH = (INFRA / "modules" / "graph-permissions.bicep").read_text(encoding="utf-8")

#: Settings that only make sense on a developer machine, or that Azure replaces with an identity.
LOCAL_ONLY = {"CONNECTIONS_FILE", "LOCAL_ENTRA_URL", "LOCAL_CA_FILE", "AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME",
              "EVENTGRID_TOPIC_KEY"}


def _setting_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias)
    return names


def _app_setting_keys() -> set[str]:
    """Keys of the bridge's app settings object (main.bicep) and the host's (function-app.bicep)."""
    keys = set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:", _block(MAIN, "var bridgeSettings = {"), re.MULTILINE))
    settings_block = FUNCTION_APP[FUNCTION_APP.index("name: 'appsettings'") :]
    settings_block = settings_block[: settings_block.index("\n  }\n")]
    keys |= set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:", settings_block, re.MULTILINE))
    return keys


def _block(text: str, header: str) -> str:
    start = text.index(header)
    return text[start : text.index("\n}", start)]


def test_settings_are_known() -> None:
    names = _setting_names()
    assert {"CONNECTIONS", "KEY_VAULT_URL", "AzureWebJobsStorage__accountName"} <= names


def test_every_setting_the_code_reads_is_an_app_setting() -> None:
    missing = sorted(_setting_names() - LOCAL_ONLY - _app_setting_keys())
    assert not missing, f"app settings missing from infra/: {missing}"


def test_local_only_settings_are_named_and_not_set() -> None:
    comments = bicep_text(comments=True)
    for name in LOCAL_ONLY:
        assert name in _setting_names(), f"{name} is no longer read by shared/config.py; drop it here"
        named = re.search(rf"^//.*\b{re.escape(name)}\b", comments, re.MULTILINE)
        assert named, f"{name}: say in main.bicep why it is not set"
        assert name not in _app_setting_keys()


def test_identity_based_host_storage() -> None:
    keys = _app_setting_keys()
    host = {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId"}
    assert host <= keys
    assert "allowSharedKeyAccess: false" in bicep_text()


def test_connections_come_from_a_key_vault_reference() -> None:
    assert re.search(r"CONNECTIONS: '@Microsoft\.KeyVault\(", MAIN)


def test_queues_and_poison_queues_match_the_topology() -> None:
    assert bicep_string_list(MAIN, "var workQueues = [") == [q.value for q in Queue]
    assert bicep_string_list(MAIN, "var poisonQueues = [") == [q.poison for q in Queue]
    assert "queueNames: concat(workQueues, poisonQueues)" in MAIN


def test_tables_match_the_topology() -> None:
    assert bicep_string_list(MAIN, "var tables = [") == [t.value for t in Table]
    assert "tableNames: tables" in MAIN


def test_every_feature_has_a_parameter_and_permissions() -> None:
    granted = bicep_map_of_lists(GRAPH, "var featurePermissions = {")
    features = set(re.findall(r"^\s*([A-Za-z]+): (?:enable[A-Z]\w*|[a-z]\w*On)$", _block(MAIN, "var features = {"),
                              re.MULTILINE))
    assert features == set(granted)
    for feature in features:
        assert re.search(rf"^param enable{feature[0].upper()}{feature[1:]} bool", MAIN, re.MULTILINE)
        assert granted[feature], f"feature {feature} grants nothing"


# ---- the per-feature permission table the connection test (doctor) uses ----

_PERMISSION = re.compile(r"^[A-Z][A-Za-z]*(?:-[A-Za-z]+)?(?:\.[A-Za-z]+)+$")
_ROLE = re.compile(r"^[A-Z][A-Za-z ]* Administrator$")


def _strings(value: Any, depth: int = 0) -> set[str]:
    """Every string inside `value`: containers, enums, dataclasses and pydantic models included."""
    if depth > 6:
        return set()
    if isinstance(value, Enum):
        return _strings(value.value, depth + 1)
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        found: set[str] = set()
        for k, v in value.items():
            found |= _strings(k, depth + 1) | _strings(v, depth + 1)
        return found
    if isinstance(value, list | tuple | set | frozenset):
        return set().union(*(_strings(v, depth + 1) for v in value)) if value else set()
    fields = getattr(value, "__dataclass_fields__", None) or getattr(type(value), "model_fields", None)
    if fields:
        return set().union(*(_strings(getattr(value, f, None), depth + 1) for f in fields))
    return set()


def _key_name(key: Any) -> str:
    raw = key.value if isinstance(key, Enum) else key
    return re.sub(r"[^a-z]", "", str(raw).lower())


#: Other names the permission table may give a feature, to the Bicep switch's name (normalised).
_FEATURE_ALIASES = {"enrollment": "enrollmentgroups", "enrollmentstate": "enrollmentgroups",
                    "enrollmentstategroups": "enrollmentgroups", "groups": "enrollmentgroups"}


def _module_table(module: ModuleType) -> dict[str, set[str]]:
    """Feature name (normalised) to the Graph permissions the module says it needs.

    A table is any public dict of the module with at least two keys naming Bicep features; every
    key of such a table must then name a feature, so a new feature cannot slip past the Bicep.
    """
    wanted = {_key_name(k) for k in bicep_map_of_lists(GRAPH, "var featurePermissions = {")}
    table: dict[str, set[str]] = {}
    for name in dir(module):
        value = getattr(module, name)
        if name.startswith("_") or not isinstance(value, dict):
            continue
        keys = {k: _FEATURE_ALIASES.get(_key_name(k), _key_name(k)) for k in value}
        if len(set(keys.values()) & wanted) < 2:
            continue
        unknown = sorted(str(k) for k, feature in keys.items() if feature not in wanted)
        assert not unknown, f"{module.__name__}.{name} names features the Bicep has no switch for: {unknown}"
        for key, entry in value.items():
            table.setdefault(keys[key], set()).update(s for s in _strings(entry) if _PERMISSION.match(s))
    return table


@pytest.fixture(scope="module")
def permissions_module() -> ModuleType:
    """shared/domain/permissions.py: the per-feature permission table, owned by the gateway's area."""
    module: ModuleType = pytest.importorskip(
        "shared.domain.permissions", reason="shared/domain/permissions.py has not landed yet")
    return module


def test_bicep_grants_what_each_feature_needs(permissions_module: ModuleType) -> None:
    granted = {_key_name(k): set(v) for k, v in bicep_map_of_lists(GRAPH, "var featurePermissions = {").items()}
    needed = _module_table(permissions_module)
    assert needed, "found no feature -> permissions table in shared.domain.permissions"
    problems = []
    for feature, perms in sorted(needed.items()):
        missing = sorted(perms - granted.get(feature, set()))
        if missing:
            problems.append(f"{feature}: {missing}")
    assert not problems, "Graph permissions a feature needs but the Bicep does not grant: " + "; ".join(problems)


def test_the_hook_knows_every_directory_role_the_features_need(permissions_module: ModuleType) -> None:
    from infra.hooks.postprovision import ROLE_TEMPLATE_IDS

    roles = {s for s in _strings({n: getattr(permissions_module, n) for n in dir(permissions_module)
                                   if not n.startswith("_")}) if _ROLE.match(s)}
    unknown = sorted(roles - set(ROLE_TEMPLATE_IDS))
    assert not unknown, f"directory roles the post-provision hook cannot assign: {unknown}"


# ---- what the function definitions refer to: queue names, %Setting% names, connections ----

_FUNCTION_SOURCES = [*sorted((INFRA.parent / "functions").rglob("*.py")), INFRA.parent / "function_app.py"]


def _function_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in _FUNCTION_SOURCES if p.exists())


def test_queues_named_by_triggers_are_made() -> None:
    made = set(bicep_string_list(MAIN, "var workQueues = [")) | set(bicep_string_list(MAIN, "var poisonQueues = ["))
    named = set(re.findall(r"queue_name\s*=\s*[\"']([^\"'%]+)[\"']", _function_source()))
    assert not sorted(named - made), f"queues used by functions but not made by infra/: {sorted(named - made)}"


def test_settings_named_by_bindings_are_set() -> None:
    # The host resolves %Name% in trigger and binding arguments from app settings.
    named = set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", _function_source()))
    missing = sorted(named - _app_setting_keys())
    assert not missing, f"%Setting% names used by functions but not set in infra/: {missing}"


def test_binding_connections_have_identity_settings() -> None:
    # connection="X" means the host reads X__accountName (identity) or X (connection string).
    named = set(re.findall(r"connection\s*=\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']", _function_source()))
    keys = _app_setting_keys()
    missing = sorted(n for n in named if f"{n}__accountName" not in keys and n not in keys)
    assert not missing, f"binding connections without settings in infra/: {missing}"


def test_the_host_caps_request_bodies_at_max_body_bytes() -> None:
    """In Azure the Functions host's own cap applies on every route before a function runs: it is the app's."""
    settings = _block(MAIN, "var bridgeSettings = {")
    assert "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: string(maxBodyBytes)" in settings
    assert "MAX_BODY_BYTES: string(maxBodyBytes)" in settings
