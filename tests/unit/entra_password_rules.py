"""An independent reading of Entra ID's cloud password rules, used to check the generator.

Written from the documentation, not from shared/domain/passwords.py:
https://learn.microsoft.com/entra/identity/authentication/concept-sspr-policy (characters, length,
complexity) and https://learn.microsoft.com/entra/identity/authentication/concept-password-ban-bad
(normalisation, banned terms from the user's and tenant's names, the 5-point minimum score).
"""

from __future__ import annotations

import string

ALLOWED_SYMBOLS = set("@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ")
NORMALISE = {"0": "o", "1": "l", "$": "s", "@": "a"}


def categories(password: str) -> int:
    """How many of the four character categories the password uses."""
    return sum([
        any(c in string.ascii_lowercase for c in password),
        any(c in string.ascii_uppercase for c in password),
        any(c in string.digits for c in password),
        any(c in ALLOWED_SYMBOLS for c in password),
    ])


def score(password: str, banned: list[str]) -> int:
    """Entra's score: each banned term found is one point, every other character one point."""
    text = "".join(NORMALISE.get(c, c) for c in password.lower())
    points = 0
    i = 0
    while i < len(text):
        hit = next((t for t in banned if t and text.startswith(t, i)), None)
        if hit:
            points += 1
            i += len(hit)
        else:
            points += 1
            i += 1
    return points


def violations(password: str, banned: list[str]) -> list[str]:
    """Every rule the password breaks (empty when Entra would accept it)."""
    problems = []
    if not 8 <= len(password) <= 256:
        problems.append("length")
    if any(not (c.isascii() and (c.isalnum() or c in ALLOWED_SYMBOLS)) for c in password):
        problems.append("character not allowed")
    if categories(password) < 3:
        problems.append("fewer than three categories")
    if score(password, [b.lower() for b in banned]) < 5:
        problems.append("score below 5")
    return problems
