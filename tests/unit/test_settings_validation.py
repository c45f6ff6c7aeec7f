"""Every app setting of local.settings.sample.json refuses a bad value with an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import load_settings
from shared.errors import Configuration
from tests.unit.test_config import aliases

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))["Values"]
GUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
KEY = "a2V5a2V5a2V5"  # base64 of a made-up key

#: Bad values for each setting: what an operator mistypes, and what the checks must not let through.
BAD: dict[str, list[str]] = {
    "FUNCTIONS_WORKER_RUNTIME": ["dotnet-isolated"],
    "AzureWebJobsStorage": ["not a connection string", "AccountName=acct",
                            f"AccountName=acct;AccountKey={KEY};Colour=blue",
                            "AccountName=acct;AccountKey=not*base64",
                            f"AccountName=acct;AccountKey={KEY};TableEndpoint=http://acct.table.example/",
                            f"DefaultEndpointsProtocol=ftp;AccountName=acct;AccountKey={KEY}"],
    "AzureWebJobsStorage__accountName": ["My_Account", "ab", "a" * 25],
    "AzureWebJobsStorage__tableServiceUri": ["http://acct.table.core.windows.net", "acct.table.core.windows.net",
                                             "https://acct.table.core.windows.net/?sv=1&sig=x"],
    "AzureWebJobsStorage__queueServiceUri": ["ftp://acct.queue.core.windows.net", "https:///devstoreaccount1"],
    "CONNECTIONS": ["[{", '[{"name": "Not A Slug", "tenantId": "' + GUID + '"}]', '{"name": "x"}'],
    "CONNECTIONS_FILE": ["/nonexistent/connections.json"],
    "KEY_VAULT_URL": ["http://kv.vault.azure.net", "kv.vault.azure.net", "https://kv.example.com",
                      "https://kv.vault.azure.net/secrets/pwd", "https://user:pw@kv.vault.azure.net",
                      "https://kv.vault.azure.net.example.com"],
    "AZURE_CLIENT_ID": ["not-a-guid", "{" + GUID + "}"],
    "SYNC_SCHEDULE": ["*/15 * * * *", "0 */15 * * * * *", "0 61 * * * *", "every 15 minutes", "00:15:00"],
    "ROTATION_SCHEDULE": ["5 * * * *", "0 5 * * * MONDAYS"],
    "FEDERATION_SCHEDULE": ["30 2 * * *", "0 30 25 * * *"],
    "LOCAL_ENTRA_URL": ["http://entra.example", "127.0.0.1:8443", "https://127.0.0.1:8443/v1.0"],
    "LOCAL_CA_FILE": ["/nonexistent/ca.pem"],
    "NOTIFICATION_BASE_URL": ["http://func-bridge.azurewebsites.net", "func-bridge.azurewebsites.net",
                              "https://func-bridge.azurewebsites.net?code=1"],
    "LOG_FORMAT": ["xml"],
    "LOG_LEVEL": ["LOUD", "info"],
    "APPLICATIONINSIGHTS_CONNECTION_STRING": ["InstrumentationKey=abc", "IngestionEndpoint=https://in.example/",
                                              f"InstrumentationKey={GUID};IngestionEndpoint=http://in.example/"],
    "WEBSITE_AUTH_ENABLED": ["maybe"],
    "MAX_BODY_BYTES": ["12", "lots", str(64 * 1024 * 1024)],
    "DRY_RUN": ["sometimes"],
    "PASSKEY_POLICY_MAX_AGE_SECONDS": ["-1", "3601", "half a minute"],
    "FIDO_MDS_URL": ["http://mds3.fidoalliance.org/", "mds3.fidoalliance.org"],
    "FIDO_MDS_ROOT_CERT": ["not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"],
    "EVENTS_SCHEDULE": ["* * * * *", "every minute"],
    "EVENTGRID_TOPIC_ENDPOINT": ["http://evgt.westeurope-1.eventgrid.azure.net/api/events",
                                "https://evgt.westeurope-1.eventgrid.azure.net",
                                "https://evgt.example.com/api/events",
                                "https://evgt.westeurope-1.eventgrid.azure.net/api/events?api-version=2018-01-01"],
    "EVENTGRID_TOPIC_KEY": ["short", "a key with spaces in it, clearly", "k" * 200],
}

MAY_HOLD_SECRETS = {"AzureWebJobsStorage", "APPLICATIONINSIGHTS_CONNECTION_STRING", "CONNECTIONS", "KEY_VAULT_URL",
                    "EVENTGRID_TOPIC_KEY",
                    "AzureWebJobsStorage__tableServiceUri", "AzureWebJobsStorage__queueServiceUri"}

#: Values the checks must accept: sovereign clouds, Azurite, the local stand-ins.
GOOD: dict[str, list[str]] = {
    "KEY_VAULT_URL": ["https://kv.vault.azure.net", "https://kv.vault.usgovcloudapi.net/", "https://kv.vault.azure.cn",
                      "https://127.0.0.1:8444"],
    "SYNC_SCHEDULE": ["0 */15 * * * *", "*/30 * * * * *", "0 0 9-17 * * Mon-Fri", "0 0 0 1 1 *"],
    "EVENTGRID_TOPIC_ENDPOINT": ["https://evgt.westeurope-1.eventgrid.azure.net/api/events",
                                 "https://evgt.usgovvirginia-1.eventgrid.azure.us/api/events",
                                 "https://127.0.0.1:8445/api/events"],
    "EVENTGRID_TOPIC_KEY": ["OGaVtNOatD2UnNQtGrksd5NHgfIqm3DAbYeoY-gni08",
                            "dGhpcyBpcyBub3QgYSByZWFsIGtleSBidXQgaXQgaXMgYmFzZTY0IQ=="],
    "AzureWebJobsStorage": ["UseDevelopmentStorage=true",
                            f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};"
                            "EndpointSuffix=core.usgovcloudapi.net",
                            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
                            "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
                            "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"],
    "AzureWebJobsStorage__tableServiceUri": ["https://acct.table.core.chinacloudapi.cn",
                                             "http://127.0.0.1:10002/devstoreaccount1"],
    "LOCAL_ENTRA_URL": ["https://127.0.0.1:8443", "http://localhost:8443", "https://entra.test:8443"],
    "NOTIFICATION_BASE_URL": ["https://func-bridge.azurewebsites.net", "http://127.0.0.1:7071",
                              "https://bridge.example.com/prefix"],
    "APPLICATIONINSIGHTS_CONNECTION_STRING": [
        f"InstrumentationKey={GUID};IngestionEndpoint=https://usgovvirginia-1.in.applicationinsights.azure.us/;"
        "LiveEndpoint=https://usgovvirginia.livediagnostics.monitor.azure.us/;ApplicationId=abc"],
}


@pytest.fixture
def sample_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in aliases():
        monkeypatch.delenv(name, raising=False)
    for name, value in SAMPLE.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_every_sample_setting_and_every_setting_the_app_reads_has_bad_values() -> None:
    assert set(BAD) == set(SAMPLE) | set(aliases())


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in BAD.items() for v in values])
def test_a_bad_value_stops_the_app_naming_the_setting(sample_environment: pytest.MonkeyPatch, name: str,
                                                      value: str) -> None:
    sample_environment.setenv(name, value)
    with pytest.raises(Configuration) as caught:
        load_settings().load_connections()
    assert caught.value.setting == name
    assert name in caught.value.detail
    if name in MAY_HOLD_SECRETS:  # never echoed: a connection string holds a key, a URL a password
        assert value not in caught.value.detail


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in GOOD.items() for v in values])
def test_good_values_pass(sample_environment: pytest.MonkeyPatch, name: str, value: str) -> None:
    sample_environment.setenv(name, value)
    load_settings().load_connections()


def test_an_account_key_never_appears_in_the_error(sample_environment: pytest.MonkeyPatch) -> None:
    secret = "c2VjcmV0LWtleS1vZi10aGUtYWNjb3VudA=="
    sample_environment.setenv("AzureWebJobsStorage", f"AccountName=acct;AccountKey={secret};TableEndpoint=ftp://x")
    with pytest.raises(Configuration) as caught:
        load_settings()
    assert secret not in caught.value.detail
    assert "TableEndpoint" in caught.value.detail
