"""NVFlare's FL simulator for real: 2 sites x 2 rounds, the server attacks in round 2.

Site 0 runs GuardFilter as its task-data filter, site 1 does not. In the attacked round the
guarded site refuses the task (no update reaches the server: nothing reconstructed from
it), the unguarded one trains and the attacker recovers real images from its update.
"""

import pytest

pytest.importorskip("nvflare", reason="needs the nvflare extra")

from gradguard.bench.scenario import Scenario  # noqa: E402

pytestmark = [pytest.mark.nvflare, pytest.mark.slow]


def test_simulator_guard_filter_refuses_the_attacked_round():
    from gradguard.integrations.nvflare.engine import run_nvflare

    sc = Scenario(clients=2, rounds=2, attack_rounds=(2,), epochs=1)
    result = run_nvflare(sc, guarded=[0], attacked=True)
    assert [r.round for r in result.rounds] == [1, 2]
    first, attacked = result.rounds
    assert first.abstained == [] and [v.allowed for v in first.verdicts] == [True]
    assert attacked.targeted == [0, 1]
    assert attacked.abstained == [0]
    assert {leak.client_id for leak in attacked.leaks} == {1}
    assert attacked.leaks[0].leaked > 0
    (refusal,) = attacked.verdicts
    assert refusal.client_id == 0 and not refusal.allowed and "imprint" in refusal.summary
