"""App settings and connection documents: every error names the setting and the field to fix."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from shared.config import (
    Cloud,
    Settings,
    cloud_profile,
    load_settings,
    parse_connections,
)
from shared.errors import Configuration

ROOT = Path(__file__).resolve().parents[2]
TENANT = "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
CLIENT = "5a7b9c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d"


def aliases() -> list[str]:
    """The app setting name of every Settings field."""
    names = []
    for info in Settings.model_fields.values():
        alias: Any = info.validation_alias
        names.append(alias.choices[0] if hasattr(alias, "choices") else str(alias))
    return names


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in aliases():
        monkeypatch.delenv(name, raising=False)


def conn(**overrides: Any) -> dict[str, Any]:
    return {"name": "contoso", "tenantId": TENANT, **overrides}


def test_defaults_need_no_settings() -> None:
    settings = load_settings()
    assert settings.max_body_bytes == 65536
    assert settings.auth_enabled is False
    assert settings.sync_schedule == "0 */15 * * * *"
    assert settings.load_connections() == []
    assert settings.passkey_policy_max_age_seconds == 30
    assert settings.fido_mds_url == "https://mds3.fidoalliance.org/"
    # The FIDO Alliance's MDS3 root, GlobalSign Root CA - R3.
    assert hashlib.sha256(settings.mds_root_der).hexdigest().startswith("cbb522d7")


@pytest.mark.parametrize(("name", "value"), [("MAX_BODY_BYTES", "12"), ("MAX_BODY_BYTES", "lots"),
                                             ("LOG_FORMAT", "xml"), ("LOG_LEVEL", "LOUD"),
                                             ("WEBSITE_AUTH_ENABLED", "maybe"),
                                             ("PASSKEY_POLICY_MAX_AGE_SECONDS", "-1"),
                                             ("PASSKEY_POLICY_MAX_AGE_SECONDS", "3601"),
                                             ("FIDO_MDS_URL", "http://mds.example/"),
                                             ("FIDO_MDS_ROOT_CERT", "-----BEGIN CERTIFICATE-----\nAAAA\n"),
                                             ("FIDO_MDS_ROOT_CERT", "not base64!")])
def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(Configuration) as caught:
        load_settings()
    assert caught.value.setting == name
    assert name in caught.value.detail


def test_unresolved_key_vault_reference_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTIONS", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/c/)")
    with pytest.raises(Configuration) as caught:
        load_settings()
    assert caught.value.setting == "CONNECTIONS"
    assert "Key Vault Secrets User" in caught.value.detail


def test_connections_accept_a_list_one_document_or_a_wrapper() -> None:
    assert parse_connections(json.dumps([conn()]))[0].name == "contoso"
    assert parse_connections(json.dumps(conn()))[0].tenant_id == TENANT
    assert len(parse_connections(json.dumps({"connections": [conn(), conn(name="fabrikam")]}))) == 2


def test_connection_defaults_are_safe() -> None:
    parsed = parse_connections(json.dumps(conn(domains=[" Contoso.COM "])))[0]
    assert parsed.cloud is Cloud.GLOBAL
    assert parsed.auth.kind == "managedIdentity"
    assert parsed.domains == ["contoso.com"]
    assert not any(f.enabled for f in (parsed.features.sync, parsed.features.rotation, parsed.features.passkeys))


@pytest.mark.parametrize(("document", "field"), [
    (conn(tenantId="not-a-guid"), "connection 'contoso'.tenantId"),
    (conn(name="Bad Name"), "connection 'Bad Name'.name"),
    (conn(cloud="mars"), "connection 'contoso'.cloud"),
    (conn(colour="blue"), "connection 'contoso'.colour"),
    (conn(auth={"kind": "clientSecret", "clientId": CLIENT}), "connection 'contoso'.auth.secretName"),
    (conn(auth={"kind": "password"}), "connection 'contoso'.auth"),
    (conn(features={"sync": {"enabled": True}}), "connection 'contoso'.features.sync"),
    (conn(features={"rotation": {"enabled": True, "group": "g", "passwordLength": 8}}),
     "connection 'contoso'.features.rotation.passwordLength"),
    ({"tenantId": TENANT}, "connections[0].name"),
])
def test_a_bad_connection_names_its_field(document: dict[str, Any], field: str) -> None:
    with pytest.raises(Configuration) as caught:
        parse_connections(json.dumps([document]))
    assert caught.value.setting == "CONNECTIONS"
    assert field in caught.value.detail


def test_duplicate_connection_names_are_refused() -> None:
    with pytest.raises(Configuration, match="'contoso' is used twice"):
        parse_connections(json.dumps([conn(), conn()]))


def test_invalid_json_says_where() -> None:
    with pytest.raises(Configuration, match=r"CONNECTIONS is not valid JSON: .* line 1 column"):
        parse_connections("[{")


def test_connections_file_is_read_and_its_errors_name_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "connections.json"
    path.write_text(json.dumps([conn()]))
    monkeypatch.setenv("CONNECTIONS_FILE", str(path))
    assert load_settings().load_connections()[0].name == "contoso"
    path.write_text("[1]")
    with pytest.raises(Configuration) as bad:
        load_settings().load_connections()
    assert bad.value.setting == "CONNECTIONS_FILE"
    monkeypatch.setenv("CONNECTIONS_FILE", str(tmp_path / "absent.json"))
    with pytest.raises(Configuration, match=r"CONNECTIONS_FILE: .*no readable file") as missing:
        load_settings().load_connections()
    assert missing.value.setting == "CONNECTIONS_FILE"


def test_cloud_profiles_point_at_their_endpoints() -> None:
    assert cloud_profile(Cloud.GLOBAL).graph_v1 == "https://graph.microsoft.com/v1.0"
    assert cloud_profile(Cloud.USGOV).authority == "https://login.microsoftonline.us"
    assert cloud_profile(Cloud.CHINA).vault_scope == "https://vault.azure.cn/.default"
    local = cloud_profile(Cloud.LOCAL, local_entra_url="https://127.0.0.1:9999/")
    assert local.authority == local.graph == "https://127.0.0.1:9999"
    assert local.graph_beta == "https://127.0.0.1:9999/beta"
    # The simulator issues tokens for the public resource names.
    assert local.graph_scope == "https://graph.microsoft.com/.default"


def test_local_profile_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_ENTRA_URL", "https://127.0.0.1:8555")
    assert load_settings().profile(Cloud.LOCAL).graph_v1 == "https://127.0.0.1:8555/v1.0"


def test_the_sample_settings_hold_every_setting_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(aliases()) <= set(values), f"missing from the sample: {set(aliases()) - set(values)}"
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    demo = settings.load_connections()
    assert [c.name for c in demo] == ["demo"]
    assert demo[0].cloud is Cloud.LOCAL
    assert demo[0].auth.kind == "managedIdentity"


def test_the_sample_demo_connection_is_the_simulators_demo_tenant() -> None:
    from local.entra.demo import DEMO_TENANT_ID

    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert parse_connections(values["CONNECTIONS"])[0].tenant_id == DEMO_TENANT_ID
