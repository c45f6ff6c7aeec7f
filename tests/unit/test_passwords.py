"""Generated passwords always meet Entra's rules, checked by an independent implementation."""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    PasswordPolicy,
    PasswordPolicyError,
    banned_terms,
    contains_banned,
    generate,
    normalise,
)
from tests.unit.entra_password_rules import violations

names = st.text(alphabet=string.ascii_letters + " .-'", min_size=0, max_size=30)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(MIN_LENGTH, MAX_LENGTH), given_name=names, surname=names,
       tenant=st.text(alphabet=string.ascii_lowercase, min_size=0, max_size=20), seed=st.integers())
def test_every_password_meets_entra_rules(length: int, given_name: str, surname: str, tenant: str, seed: int) -> None:
    upn = f"{given_name.replace(' ', '')}.{surname.replace(' ', '')}@{tenant}.onmicrosoft.com"
    terms = banned_terms([given_name, surname, upn, tenant])
    password = generate(PasswordPolicy(length=length), banned=terms, rng=random.Random(seed))
    assert len(password) == length
    assert violations(password, terms) == []
    assert contains_banned(password, terms) is None


def test_default_uses_the_system_csprng_and_differs_each_time() -> None:
    seen = {generate(PasswordPolicy()) for _ in range(50)}
    assert len(seen) == 50
    assert all(len(p) == 24 for p in seen)


@pytest.mark.parametrize("length", [0, 8, 15, 257])
def test_lengths_outside_the_policy_range_are_refused(length: int) -> None:
    with pytest.raises(PasswordPolicyError, match=str(length)):
        PasswordPolicy(length=length)


def test_banned_terms_are_normalised_and_short_parts_ignored() -> None:
    assert banned_terms(["Al B. Simpson", "al.simpson@contoso.onmicrosoft.com", None]) == [
        "contoso", "onmicrosoft", "simpson"]
    assert normalise("P@$$w0rd1") == "passwordl"
    assert contains_banned("xxSimp$0nxx", ["simpson"]) == "simpson"


def test_a_banned_term_is_never_returned_even_when_likely() -> None:
    # With a tiny alphabet the term "aaaa" would be frequent; the generator must redraw.
    class Rigged(random.Random):
        calls = 0

        def choice(self, seq):  # type: ignore[no-untyped-def, override]
            self.calls += 1
            return seq[0] if self.calls < 200 else super().choice(seq)

    password = generate(PasswordPolicy(length=16), banned=["aaaa"], rng=Rigged(1))
    assert "aaaa" not in normalise(password)


def test_the_independent_checker_catches_bad_passwords() -> None:
    assert "fewer than three categories" in violations("abcdefghijkl", [])
    assert "length" in violations("Ab1!", [])
    assert "character not allowed" in violations("Abcdefgh1!é", [])
    assert "score below 5" in violations("Contoso1!", ["contoso"])
