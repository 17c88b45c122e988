"""Flower's deployment engine for real: flower-superlink and 2 flower-supernode processes on
127.0.0.1, the app started with ``flwr run``.

1. Client 0's SuperNode runs the guard (its node config), client 1's does not; the server
   attacks in round 2 with a run config that tries every way to disarm the guard: client 0
   still abstains, client 1 leaks.
2. Faults: a SuperNode killed mid-run ends the run at once; SIGTERM or SIGKILL to the
   deployment's parent process mid-run. Either way no process of the deployment is left
   (found by the token every one of them carries, wherever it was reparented). The times
   are printed (``pytest -s``), not asserted.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")

from gradguard.bench.scenario import Scenario  # noqa: E402
from gradguard.detect.thresholds import DEFAULTS  # noqa: E402
from gradguard.errors import GradguardError  # noqa: E402
from gradguard.integrations.flower import reaper  # noqa: E402

pytestmark = [pytest.mark.flower, pytest.mark.slow]

DISARM = {
    "guard-policy": "warn",
    "guard-detectors": "architecture",
    "guard-thresholds": ",".join(f"{k}=inf" for k in DEFAULTS),
    "guarded": "none",
}
LONG_RUN = Scenario(clients=2, rounds=200, attack_rounds=(), epochs=1, train_limit=600, aux_size=64)


def test_deployment_engine_guard_holds_against_a_disarming_run_config(tmp_path):
    from gradguard.integrations.flower.deployment import LocalDeployment

    sc = Scenario(clients=2, rounds=2, attack_rounds=(2,))
    deployment = LocalDeployment(2, workdir=tmp_path, guarded="0")
    with deployment:
        assert len(reaper.marked(deployment.token)) >= 3
        try:
            result = deployment.run(sc, attacked=True, run_config=DISARM, timeout=400)
        except Exception:
            print(deployment.logs())
            raise
    assert reaper.marked(deployment.token) == []  # every process of the deployment is gone
    assert [r.round for r in result.rounds] == [1, 2]
    honest, attacked = result.rounds
    accepted = [v for v in honest.verdicts if v.allowed]
    assert [v.client_id for v in accepted] == [0]
    assert "ignored" in accepted[0].summary  # the disarming run config reached the client
    assert attacked.targeted == [0, 1]
    assert attacked.abstained == [0]
    assert {leak.client_id for leak in attacked.leaks} == {1}
    assert attacked.leaks[0].leaked > 0
    assert any("imprint" in v.summary for v in attacked.verdicts if not v.allowed)


def _running_apps(token: str) -> bool:
    """Whether a ClientApp process of the deployment runs (the run is under way)."""
    for pid in reaper.marked(token):
        try:
            if b"flwr-clientapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def _wait(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_killed_supernode_ends_the_run_and_leaves_no_process(tmp_path):
    from gradguard.integrations.flower.deployment import LocalDeployment

    deployment = LocalDeployment(2, workdir=tmp_path, guarded=False)
    killed: dict[str, float] = {}

    def kill_when_running():
        if _wait(lambda: _running_apps(deployment.token), 240):
            killed["before"] = len(reaper.marked(deployment.token))
            os.kill(deployment.procs["supernode-1"].pid, signal.SIGKILL)
            killed["at"] = time.monotonic()

    try:
        with deployment:
            threading.Thread(target=kill_when_running, daemon=True).start()
            with pytest.raises(GradguardError, match=r"supernode-1 .* during the run"):
                deployment.run(LONG_RUN, attacked=False, timeout=400)
            ended = time.monotonic() - killed["at"]
        left = reaper.marked(deployment.token)
        print(
            f"\nkilled SuperNode: {killed['before']} processes; run ended {ended:.1f} s after "
            f"the kill; {len(left)} left"
        )
        assert left == []
    finally:
        reaper.end(deployment.token)


PARENT = """
import sys
from pathlib import Path
from gradguard.integrations.flower.deployment import LocalDeployment
from gradguard.bench.scenario import Scenario

work = Path(sys.argv[1])
with LocalDeployment(2, workdir=work, guarded=False) as d:
    (work / "token").write_text(d.token)
    sc = Scenario(clients=2, rounds=200, attack_rounds=(), epochs=1, train_limit=600, aux_size=64)
    d.run(sc, attacked=False, timeout=600)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signal_to_the_parent_leaves_no_process(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "parent.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    token_file = tmp_path / "token"
    token = ""
    try:
        assert _wait(token_file.exists, 120), (tmp_path / "parent.log").read_text()
        token = token_file.read_text()
        assert _wait(lambda: _running_apps(token), 240), "the run did not start"
        before = len(reaper.marked(token))
        start = time.monotonic()
        parent.send_signal(sig)
        parent.wait(timeout=60)
        _wait(lambda: not reaper.marked(token), 60, 0.1)
        ended = time.monotonic() - start
        left = reaper.marked(token)
        print(
            f"\n{sig.name} to the parent: {before} processes -> {len(left)} left after "
            f"{ended:.1f} s; parent exit {parent.returncode}"
        )
        assert parent.returncode == -sig
        assert left == []
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        if token:
            reaper.end(token)
