"""The passkey bench's own-time arithmetic: overlapping waits count once, with the CPU spent inside them."""

from __future__ import annotations

import pytest

from bench.passkeys import Wait, covered


def test_overlapping_waits_merge_and_keep_the_cpu_spent_inside_them() -> None:
    waits = [Wait(1.0, 3.0, 10.0, 10.5, "storage"), Wait(2.0, 4.0, 10.2, 10.9, "storage"),
             Wait(6.0, 7.0, 12.0, 12.1, "entra")]
    wall, cpu = covered(waits)
    # Spans [1, 4] (CPU 10.0 to 10.9) and [6, 7] (CPU 12.0 to 12.1).
    assert wall == pytest.approx(4.0)
    assert cpu == pytest.approx(1.0)


def test_a_wait_inside_another_does_not_extend_it() -> None:
    assert covered([Wait(0.0, 5.0, 0.0, 1.0, "entra"), Wait(1.0, 2.0, 0.2, 0.3, "entra")]) == \
        pytest.approx((5.0, 1.0))
    assert covered([]) == (0.0, 0.0)
