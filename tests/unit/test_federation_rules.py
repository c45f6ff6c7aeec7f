"""Federation compatibility rules: each input problem is a named failure with a fix."""

from __future__ import annotations

import datetime as dt

from shared.domain.federation import (
    AppAccess,
    IdpInputs,
    alert_threshold,
    compatibility,
    failures,
    inputs_from_metadata,
    plan_rollover,
)
from shared.domain.metadata import parse_metadata
from tests.integration.entra.test_federation import idp_certificate
from tests.unit.test_federation_metadata import metadata_xml

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


def test_inputs_from_metadata_take_the_valid_certificate_and_the_next_one() -> None:
    old, current, upcoming = idp_certificate(-1, starts=-400), idp_certificate(20), idp_certificate(400)
    meta = parse_metadata(metadata_xml("https://idp.example/e", [old, current, upcoming]))
    inputs = inputs_from_metadata(meta, now=NOW, given={"display_name": "Example", "issuer_uri": None})
    assert (inputs.signing_certificate, inputs.next_signing_certificate) == (current, upcoming)
    assert inputs.issuer_uri == "https://idp.example/e"
    assert inputs.display_name == "Example"
    body = inputs.graph_body()
    assert body["nextSigningCertificate"] == upcoming
    assert body["preferredAuthenticationProtocol"] == "wsFed"


def test_a_published_certificate_not_valid_yet_becomes_the_next_one() -> None:
    current, future = idp_certificate(40), idp_certificate(400, starts=30)
    meta = parse_metadata(metadata_xml("https://idp.example/e", [future, current]))
    inputs = inputs_from_metadata(meta, now=NOW)
    assert (inputs.signing_certificate, inputs.next_signing_certificate) == (current, future)
    checks = compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0, inputs=inputs,
                           now=NOW, metadata=meta)
    assert names(checks)["next signing certificate"] == "pass"
    assert not failures(checks)


def test_explicit_values_are_checked_against_the_metadata() -> None:
    cert = idp_certificate()
    meta = parse_metadata(metadata_xml("https://idp.example/e", [cert]))
    inputs = IdpInputs("https://other.example/e", "https://other.example/sso", idp_certificate())
    checks = {c.name: c for c in compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0,
                                               inputs=inputs, now=NOW, metadata=meta)}
    assert checks["metadata issuer"].status == "fail"
    assert checks["metadata sign-in URI"].status == "warn"
    assert checks["metadata signing certificate"].status == "fail"
    good = inputs_from_metadata(meta, now=NOW)
    assert not failures(compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0,
                                      inputs=good, now=NOW, metadata=meta))


def test_unreadable_metadata_is_a_failure() -> None:
    checks = compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0, inputs=None,
                           now=NOW, metadata_error="the metadata is not well-formed XML")
    assert [c.name for c in failures(checks)] == ["IdP metadata"]


def test_the_apps_permission_is_reported_and_the_app_only_limitation_always_warns() -> None:
    def access(*permissions: str) -> dict[str, str]:
        return names(compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0,
                                   inputs=None, now=NOW, access=AppAccess(permissions, ("Security Administrator",))))
    assert access("Domain.Read.All")["app permission"] == "fail"
    assert access("Domain-InternalFederation.ReadWrite.All")["app permission"] == "pass"
    assert access("Domain.ReadWrite.All")["app-only limitation"] == "warn"
    assert access("Domain.ReadWrite.All")["directory role"] == "pass"


def test_a_configuration_without_signing_certificate_is_flagged() -> None:
    checks = names(compatibility("contoso.com", {**DOMAIN, "authenticationType": "Federated"},
                                 {"id": "f", "issuerUri": "https://i/e"}, admins_on_domain=[], synced_on_domain=0,
                                 inputs=None, now=NOW))
    assert checks["existing configuration has a signing certificate"] == "warn"
    assert checks["current authentication"] == "warn"


def test_a_certificate_not_yet_valid_cannot_sign_today() -> None:
    inputs = IdpInputs("https://i/e", "https://i/s", idp_certificate(400, starts=10))
    assert names(compatibility("contoso.com", DOMAIN, None, admins_on_domain=[], synced_on_domain=0, inputs=inputs,
                               now=NOW))["signing certificate"] == "fail"


def test_pem_certificates_are_sent_as_base64_der() -> None:
    der = idp_certificate()
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(der[i:i + 64] for i in range(0, len(der), 64)) + \
          "\n-----END CERTIFICATE-----\n"
    assert IdpInputs("https://i/e", "https://i/s", pem).graph_body()["signingCertificate"] == der


class TestRollover:
    current = idp_certificate(20)
    upcoming = idp_certificate(400)

    def test_nothing_changes_while_the_idp_publishes_what_entra_knows(self) -> None:
        config = {"signingCertificate": self.current, "nextSigningCertificate": self.upcoming}
        assert plan_rollover(config, [self.current, self.upcoming], NOW) is None
        assert plan_rollover({"signingCertificate": self.current}, [self.current], NOW) is None
        assert plan_rollover(config, [], NOW) is None

    def test_a_new_idp_certificate_becomes_next(self) -> None:
        plan = plan_rollover({"signingCertificate": self.current}, [self.current, self.upcoming], NOW)
        assert plan is not None
        assert (plan.signing_certificate, plan.next_signing_certificate) == (self.current, self.upcoming)
        assert "nextSigningCertificate" in plan.reason

    def test_next_is_promoted_when_the_idp_switches(self) -> None:
        plan = plan_rollover({"signingCertificate": self.current, "nextSigningCertificate": self.upcoming},
                             [self.upcoming], NOW)
        assert plan is not None
        assert plan.patch() == {"signingCertificate": self.upcoming, "nextSigningCertificate": None}

    def test_next_is_promoted_when_the_current_one_expires(self) -> None:
        later = NOW + dt.timedelta(days=25)
        plan = plan_rollover({"signingCertificate": self.current, "nextSigningCertificate": self.upcoming},
                             [self.current, self.upcoming], later)
        assert plan is not None
        assert plan.signing_certificate == self.upcoming

    def test_an_unknown_certificate_in_use_is_taken(self) -> None:
        plan = plan_rollover({"signingCertificate": self.current}, [self.upcoming], NOW)
        assert plan is not None
        assert plan.signing_certificate == self.upcoming


def test_alerts_at_30_7_and_1_days() -> None:
    expiry = NOW + dt.timedelta(days=40)
    assert [alert_threshold(expiry, NOW + dt.timedelta(days=d)) for d in (0, 10, 11, 33, 34, 39, 39.5, 41)] == \
        [None, 30, 30, 7, 7, 1, 1, 1]
