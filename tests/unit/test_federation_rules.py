"""Federation compatibility rules: each input problem is a named failure with a fix."""

from __future__ import annotations

import datetime as dt

from shared.domain.federation import IdpInputs, compatibility, failures
from tests.integration.entra.test_federation import idp_certificate

NOW = dt.datetime.now(dt.UTC)
DOMAIN = {"id": "contoso.com", "isVerified": True, "isDefault": False, "isInitial": False,
          "authenticationType": "Managed"}


def names(checks: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {c.name: c.status for c in checks}


def test_a_clean_domain_with_good_inputs_passes() -> None:
    inputs = IdpInputs("https://idp.example/e", "https://idp.example/sso", idp_certificate())
    checks = compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0, inputs=inputs,
                           now=NOW)
    assert not failures(checks)


def test_each_bad_input_fails_with_a_remedy() -> None:
    inputs = IdpInputs("not a uri", "http://idp.example/sso", "bm90IGEgY2VydA==")
    checks = compatibility("contoso.com", {**DOMAIN, "isVerified": False}, None, admins_on_domain=["a@contoso.com"],
                           synced_on_domain=0, inputs=inputs, now=NOW)
    failed = {c.name: c for c in failures(checks)}
    assert set(failed) == {"verified", "no admins on the domain", "issuer URI", "passive sign-in URI",
                           "signing certificate"}
    assert all(c.remediation for c in failed.values())


def test_expiry_soon_warns_and_expired_fails() -> None:
    soon = IdpInputs("https://i/e", "https://i/s", idp_certificate(days=10))
    assert names(compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0, inputs=soon,
                               now=NOW))["signing certificate"] == "warn"
    later = NOW + dt.timedelta(days=400)
    assert names(compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0, inputs=soon,
                               now=later))["signing certificate"] == "fail"


def test_unknown_domain_is_one_failure() -> None:
    checks = compatibility("nope.example", None, None, admins_on_domain=[], synced_on_domain=0, inputs=None, now=NOW)
    assert [(c.name, c.status) for c in checks] == [("domain exists", "fail")]
