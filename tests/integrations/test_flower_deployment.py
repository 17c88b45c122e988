"""Flower's deployment engine for real: flower-superlink and 2 flower-supernode processes on
127.0.0.1, the app started with ``flwr run``. Client 0 is guarded, client 1 is not; the
server attacks in round 2. Processes are stopped by their PIDs."""

import os

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")

from gradguard.scenario import Scenario  # noqa: E402

pytestmark = [pytest.mark.flower, pytest.mark.slow]


def test_deployment_engine_superlink_supernodes_flwr_run(tmp_path):
    from gradguard.integrations.flower.deployment import LocalDeployment

    sc = Scenario(clients=2, rounds=2, attack_rounds=(2,))
    deployment = LocalDeployment(2, workdir=tmp_path)
    with deployment:
        pids = [p.pid for p in deployment.procs]
        assert len(pids) == 3
        try:
            result = deployment.run(sc, guarded="0", attacked=True, timeout=400)
        except Exception:
            print(deployment.logs())
            raise
    for pid in pids:  # every process the test started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert [r.round for r in result.rounds] == [1, 2]
    attacked = result.rounds[1]
    assert attacked.targeted == [0, 1]
    assert attacked.abstained == [0]
    assert {leak.client_id for leak in attacked.leaks} == {1}
    assert attacked.leaks[0].leaked > 0
    assert any("imprint" in v.summary for v in attacked.verdicts if not v.allowed)
