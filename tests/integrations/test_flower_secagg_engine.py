"""The ``flower-secagg`` engine (the demo's ``--engine flower`` under secure aggregation):
one round of model inconsistency through Flower's real SecAgg+. Guarded clients that cover
refuse the round but keep it going, and nothing of the target's is read from the sum (the
dropping-out case is measured by benchmarks/secagg_hazard.py: SecAgg+ halts the round)."""

import dataclasses

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")
pytest.importorskip("ray", reason="needs flwr[simulation]")

pytestmark = [pytest.mark.flower, pytest.mark.slow]


def test_guarded_clients_refuse_and_the_target_leaks_nothing():
    from gradguard.bench.scenario import Scenario
    from gradguard.integrations.flower.secagg_engine import run_flower_secagg
    from gradguard.integrations.flower.simulation import ray_session

    sc = Scenario(
        attack="inconsistency",
        rounds=1,
        attack_rounds=(1,),
        train_limit=128 + 4 * 16,
        batch_size=16,
        epochs=1,
        secure_aggregation=True,
    )
    with ray_session():
        run = run_flower_secagg(
            dataclasses.replace(sc, refusal="cover"), guarded=True, attacked=True
        )
    (r,) = run.rounds
    assert r.abstained == [0, 1, 2, 3]  # every client flags its model and covers
    assert all(v.malicious for v in r.verdicts) and len(r.verdicts) == 4
    assert len(r.leaks) == 1 and r.leaked == 0  # a sum arrived; the target is not in it
