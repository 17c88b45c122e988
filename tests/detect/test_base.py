"""The detector contract: one "cannot verify" verdict, scores as value / threshold, and the
one-line summary that leads with the round's exposure."""

import math
import time

import torch

from gradguard.detect.base import Finding, Verdict, mismatch, ratio, unverifiable, verdict_from


def test_unverifiable_fails_closed_with_one_finding():
    v = unverifiable("dsnr", "cannot verify: x does not match", time.perf_counter())
    assert v.malicious and not v.verified and math.isinf(v.score)
    assert [(f.check, f.layer) for f in v.findings] == [("dsnr.unverifiable", "-")]
    assert v.summary() == "dsnr.unverifiable on -: cannot verify: x does not match"
    v = unverifiable("load", "bad header", time.perf_counter(), check="file", layer="m.pt")
    assert v.detector == "load" and v.summary() == "file on m.pt: bad header"


def test_score_is_the_largest_value_over_threshold():
    assert ratio(2.0, 4.0) == 0.5 and ratio(1.0, 0.0) == math.inf and ratio(0.0, 0.0) == 0.0
    assert ratio(math.nan, 1.0) == math.inf
    findings = [
        Finding("a", "-", 1.0, 4.0, "", flagged=False),
        Finding("b", "l", 3.0, 2.0, "too big"),
    ]
    v = verdict_from("d", findings, time.perf_counter())
    assert v.malicious and v.score == 1.5 and v.summary() == "b on l: too big"
    assert not verdict_from("d", findings[:1], time.perf_counter()).malicious


def test_summary_leads_with_the_exposure_sentence():
    v = Verdict(
        False, 0.2, 0.0, [], "guard", metadata={"exposure": {"sentence": "s", "exposed": 3}}
    )
    assert v.summary() == "benign (guard, score 0.2); s"
    assert v.to_dict()["score"] == 0.2


def test_mismatch_names_what_differs():
    expected = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    assert mismatch({"w": torch.zeros(2, 2), "b": torch.zeros(2)}, expected) == ""
    assert "1 extra and 1 missing" in mismatch(
        {"w": torch.zeros(2, 2), "c": torch.zeros(2)}, expected
    )
    assert mismatch({"w": torch.zeros(2, 3), "b": torch.zeros(2)}, expected).startswith("w ")
    assert mismatch({"w": torch.zeros(2, 2).double(), "b": torch.zeros(2)}, expected)
