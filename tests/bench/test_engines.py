import inspect

import pytest

from gradguard.bench.engines import ENGINES, engine_session, get_engine, run_engine
from gradguard.bench.inprocess import run_inprocess
from gradguard.bench.records import result_to_dict
from gradguard.bench.scenario import Scenario
from gradguard.errors import GradguardError


def test_registry_names_and_one_signature():
    assert {"inprocess", "flower", "flower-deployment"} <= set(ENGINES)
    pytest.importorskip("flwr", reason="needs the flower extra")
    for name in ENGINES:
        params = inspect.signature(get_engine(name)).parameters
        assert list(params)[0] == "sc", name
        for keyword in ("guarded", "attacked", "progress"):
            assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY, (name, keyword)


def test_unknown_engine_is_one_clear_error():
    with pytest.raises(GradguardError, match="unknown engine 'nope'"):
        get_engine("nope")
    with pytest.raises(GradguardError, match="unknown engine"), engine_session("nope"):
        pass


def test_run_engine_by_name_is_the_engine():
    sc = Scenario(clients=2, rounds=2, attack_rounds=(2,), epochs=1)
    with engine_session("inprocess"):
        by_name = run_engine("inprocess", sc, guarded=True, attacked=True)
    direct = run_inprocess(sc, guarded=True, attacked=True)
    a, b = result_to_dict(by_name), result_to_dict(direct)
    a.pop("seconds"), b.pop("seconds")
    for r in a["rounds"] + b["rounds"]:
        r.pop("train_seconds")
        for v in r["verdicts"]:
            v.pop("elapsed_s")
            for d in v["detectors"].values():
                d.pop("elapsed_s", None)
    assert a == b
