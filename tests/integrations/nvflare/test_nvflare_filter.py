"""GuardFilter on NVFlare task data: benign weights pass untouched, an imprint-manipulated
model or a task it cannot read is refused (ContentBlockedException: NVFlare then answers
TASK_DATA_FILTER_ERROR and the executor never runs). The simulator run is in
test_nvflare_engine.py."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("nvflare", reason="needs the nvflare extra")

from nvflare.apis.dxo import DXO, DataKind  # noqa: E402
from nvflare.apis.filter import ContentBlockedException  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402
from nvflare.app_common.app_constant import AppConstants  # noqa: E402

from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import build, make_attack  # noqa: E402
from gradguard.integrations.nvflare.engine import scenario_model  # noqa: E402
from gradguard.integrations.nvflare.filter import GuardFilter  # noqa: E402

pytestmark = pytest.mark.nvflare

SC = Scenario(clients=2)
CONFIG = SC.to_run_config()


class _Ctx(FLContext):
    def get_identity_name(self, default=""):
        return "site-1"


def _task(state, rnd=1, kind=DataKind.WEIGHTS):
    shareable = DXO(kind, data={k: v.numpy().copy() for k, v in state.items()}).to_shareable()
    shareable.set_header(AppConstants.CURRENT_ROUND, rnd)
    return shareable


def _filter(tmp_path):
    return GuardFilter(
        model="gradguard.integrations.nvflare.engine:scenario_model",
        model_args={"scenario": CONFIG},
        data="gradguard.integrations.nvflare.engine:scenario_data",
        data_args={"scenario": CONFIG},
        verdict_log=str(tmp_path / "verdicts.jsonl"),
    )


def test_benign_passes_imprint_and_unreadable_refused(tmp_path):
    guard = _filter(tmp_path)
    honest = scenario_model(CONFIG).state_dict()
    task = _task(honest)
    assert guard.process(task, _Ctx()) is task
    reference = guard.guard("site-1").previous  # the accepted model is the next reference
    assert reference is not None and all(torch.equal(reference[k], honest[k]) for k in honest)

    setup = build(SC)
    manipulated, _ = make_attack(SC).manipulate(scenario_model(CONFIG), setup.aux)
    with pytest.raises(ContentBlockedException, match="imprint"):
        guard.process(_task(manipulated.state_dict(), rnd=2), _Ctx())
    with pytest.raises(ContentBlockedException, match="cannot verify"):
        guard.process(_task(honest, rnd=3, kind=DataKind.WEIGHT_DIFF), _Ctx())
    bad = _task(honest, rnd=4)
    bad["DXO"]["data"]["fc1.weight"] = np.array(["not", "numbers"], dtype=object)
    with pytest.raises(ContentBlockedException, match="cannot verify"):
        guard.process(bad, _Ctx())

    records = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert [(r["round"], r["allowed"]) for r in records] == [
        (1, True),
        (2, False),
        (3, False),
        (4, False),
    ]
    assert guard.guard("site-1").previous is reference  # refused models never replace it


def test_bad_model_path_fails_closed(tmp_path):
    guard = GuardFilter(model="no.such.module:factory")
    with pytest.raises(ContentBlockedException, match="cannot verify"):
        guard.process(_task(scenario_model(CONFIG).state_dict()), _Ctx())


def test_oversized_task_refused_before_copying(tmp_path):
    guard = _filter(tmp_path)
    state = scenario_model(CONFIG).state_dict()
    task = _task(state)
    task["DXO"]["data"]["extra"] = np.zeros(4_000_000, dtype=np.float64)  # 32 MB
    with pytest.raises(ContentBlockedException, match="bytes"):
        guard.process(task, _Ctx())
