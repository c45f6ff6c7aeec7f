"""When the audit sink anchors: at once, then at most once a minute, a late anchor after the last
record, and again after a vault failure (fakes of storage and the vault; the interval shortened)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from shared.adapters.audit import TableAuditSink, VaultAuditAnchors, VaultAuditKeys, anchor_secret
from shared.errors import Configuration, Throttled
from shared.services.ports import SecretVersion
from tests.fakes import FakeClock, FakeEntityStore, FakeSecretStore


class FlakyVault(FakeSecretStore):
    """Refuses the next `fail` writes of anchors with a 429."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.fail = 0

    async def put(self, name: str, value: str, *, tags: Mapping[str, str],
                  content_type: str | None = None) -> SecretVersion:
        if name.startswith("audit-anchor-") and self.fail:
            self.fail -= 1
            raise Throttled("Key Vault throttled the request", retry_after=60, scope="keyvault")
        return await super().put(name, value, tags=tags, content_type=content_type)


async def test_anchors_come_at_once_then_at_most_and_at_least_once_a_minute() -> None:
    clock = FakeClock()
    vault = FlakyVault(clock)
    sink = TableAuditSink(FakeEntityStore(), clock, VaultAuditKeys(lambda: vault, clock),
                          VaultAuditAnchors(lambda: vault), anchor_every=0.2)
    name = anchor_secret("c", clock.now().date())

    async def write(n: int) -> None:
        await sink.record(connection="c", actor="t", action="a", target=f"u{n}", outcome="ok", correlation_id="x")

    await write(0)
    assert len(await vault.versions(name)) == 1  # the first record of the day is anchored at once
    for n in range(1, 5):
        await write(n)
    assert len(await vault.versions(name)) == 1  # no more than one a minute (0.2 s here)
    await asyncio.sleep(0.4)
    assert len(await vault.versions(name)) == 2  # the rest follow without another record

    vault.fail = 1
    clock.advance(seconds=1)
    await write(5)  # the vault refuses this anchor: the record stays written, the anchor is tried again
    assert len(await vault.versions(name)) == 2
    await asyncio.sleep(0.4)
    versions = await vault.versions(name)
    assert len(versions) == 3
    latest = await VaultAuditAnchors(lambda: vault).latest("c", clock.now().date())
    assert latest is not None
    assert sum(head.count for head in latest.chains.values()) == 6
    await sink.aclose()


async def test_a_damaged_key_is_a_configuration_error() -> None:
    clock = FakeClock()
    vault = FakeSecretStore(clock)
    await vault.put("audit-chain-key", "c2hvcnQ=", tags={})
    with pytest.raises(Configuration, match="audit-chain-key"):
        await VaultAuditKeys(lambda: vault, clock).current()
