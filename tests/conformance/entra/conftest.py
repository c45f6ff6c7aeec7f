"""A Graph client with an application token from the simulator, shared by the conformance modules."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from local.tls import TlsFiles
from tests.fixtures.entra import EntraFixture


@pytest.fixture(scope="module")
def graph(entra: EntraFixture, tls_files: TlsFiles) -> Iterator[httpx.Client]:
    token = httpx.post(f"{entra.url}/{entra.tenant_id}/oauth2/v2.0/token", verify=tls_files.client_context(), data={
        "grant_type": "client_credentials", "client_id": entra.client_id, "client_secret": entra.client_secret,
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
    with httpx.Client(base_url=f"{entra.url}/v1.0", verify=tls_files.client_context(),
                      headers={"authorization": f"Bearer {token}", "client-request-id": "conformance"}) as client:
        yield client
