"""Password generation under Entra ID's cloud password rules.

Rules (https://learn.microsoft.com/entra/identity/authentication/concept-sspr-policy#password-policies-that-only-apply-to-cloud-user-accounts):
8 to 256 characters; at least three of lower case, upper case, digits and symbols; symbols from the
list below and space; no Unicode. Entra's banned-password check normalises the candidate (lower case,
common substitutions), treats the user's names and the tenant name as banned, and requires a score of
at least 5 points (https://learn.microsoft.com/entra/identity/authentication/concept-password-ban-bad).
We draw every character from a CSPRNG, always use all four classes, and refuse any candidate that
holds a banned term after normalisation, so a reset is not rejected for complexity.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from random import Random

LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
# Entra's allowed symbols, minus space and quote characters that are easy to mistype or mangle in
# shells and config files; the rules do not require any particular symbol.
SYMBOLS = "@#$%^&*-_!+=[]{}|:,.?/~();<>"
MIN_LENGTH = 16
MAX_LENGTH = 256
# Entra's normalisation substitutions (documented: 0->o, 1->l, $->s, @->a), plus common others.
_SUBSTITUTIONS = str.maketrans({"0": "o", "1": "l", "$": "s", "@": "a", "3": "e", "5": "s", "7": "t", "!": "i"})
# Banned terms shorter than this are ignored: single letters and short initials would otherwise ban
# almost every random password without making any of them guessable.
MIN_BANNED_TERM = 4
_MAX_ATTEMPTS = 64


class PasswordPolicyError(ValueError):
    """The policy cannot produce a password (bad length, or every attempt hit a banned term)."""


def normalise(text: str) -> str:
    """Entra-style normalisation used for banned-term matching."""
    return text.lower().translate(_SUBSTITUTIONS)


def banned_terms(values: Iterable[str | None]) -> list[str]:
    """Split names, UPN parts and the tenant name into normalised banned terms."""
    terms: set[str] = set()
    for value in values:
        if not value:
            continue
        for part in re.split(r"[\s@._\-,+']+", value):
            term = normalise(part)
            if len(term) >= MIN_BANNED_TERM:
                terms.add(term)
    return sorted(terms)


@dataclass(frozen=True, kw_only=True)
class PasswordPolicy:
    """Length and alphabet of generated passwords."""

    length: int = 24

    def __post_init__(self) -> None:
        if not MIN_LENGTH <= self.length <= MAX_LENGTH:
            raise PasswordPolicyError(f"password length {self.length} is outside {MIN_LENGTH}-{MAX_LENGTH}")


def contains_banned(password: str, terms: Sequence[str]) -> str | None:
    """The first banned term found in `password` after normalisation, or None."""
    folded = normalise(password)
    for term in terms:
        if term in folded:
            return term
    return None


def generate(policy: PasswordPolicy, *, banned: Sequence[str] = (), rng: Random | None = None) -> str:
    """A password of `policy.length` with all four classes and no banned term, from a CSPRNG."""
    source = rng or secrets.SystemRandom()
    alphabet = LOWER + UPPER + DIGITS + SYMBOLS
    for _ in range(_MAX_ATTEMPTS):
        chars = [source.choice(LOWER), source.choice(UPPER), source.choice(DIGITS), source.choice(SYMBOLS)]
        chars += [source.choice(alphabet) for _ in range(policy.length - len(chars))]
        source.shuffle(chars)
        candidate = "".join(chars)
        if contains_banned(candidate, banned) is None:
            return candidate
    raise PasswordPolicyError("could not draw a password free of the banned terms; check the banned list")
