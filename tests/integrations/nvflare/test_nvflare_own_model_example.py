"""examples/nvflare_own_model: a user's BatchNorm CNN behind NVFlare's stock FedAvg with
GuardFilter on both sites. Every honest round is accepted (the averaged, now float,
``num_batches_tracked`` is not taken for tampering), and the same filter refuses a model
whose BatchNorm layer the server swapped for a wider one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nvflare", reason="needs the nvflare extra")
pytest.importorskip("sklearn")

from nvflare.apis.dxo import DXO, DataKind  # noqa: E402
from nvflare.apis.filter import ContentBlockedException  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402

pytestmark = [pytest.mark.nvflare, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "nvflare_own_model"


def test_stock_fedavg_job_accepts_every_honest_round(tmp_path):
    log = tmp_path / "verdicts.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "job.py"), "--rounds", "2"]
        + ["--workspace", str(tmp_path / "ws"), "--verdict-log", str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((r["round"], r["site"]) for r in records) == [
        (0, "site-1"),
        (0, "site-2"),
        (1, "site-1"),
        (1, "site-2"),
    ]
    assert all(r["allowed"] and not r["malicious"] for r in records), records


def test_example_filter_refuses_a_swapped_layer(monkeypatch):
    import torch

    monkeypatch.syspath_prepend(str(EXAMPLE))
    from model import Net

    from gradguard.integrations.nvflare.filter import GuardFilter

    class Ctx(FLContext):
        def get_identity_name(self, default=""):
            return "site-1"

    guard = GuardFilter(model="model:Net", data="model:guard_data")
    state = Net().state_dict()
    state["features.1.running_var"] = torch.ones(32)
    task = DXO(DataKind.WEIGHTS, data={k: v.numpy() for k, v in state.items()}).to_shareable()
    with pytest.raises(ContentBlockedException, match="running_var"):
        guard.process(task, Ctx())
