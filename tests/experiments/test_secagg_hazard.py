"""The abstention hazard under secure aggregation (issue 10, item 4), in-process: when every
guarded non-target of model inconsistency drops out, the secure sum is the target's update
and its images are read from it; when they send covers instead, none is."""

import logging

import pytest

from gradguard.experiments.secagg_hazard import HazardConfig, inprocess_case, prepare


@pytest.fixture(scope="module")
def hazard_round():
    logging.getLogger("gradguard").setLevel(logging.ERROR)
    return prepare(HazardConfig(lr=2.0))


def test_every_non_target_flags_its_zeroed_model(hazard_round):
    verdicts = hazard_round.verdicts()
    assert all(flagged for c, (flagged, _) in verdicts.items() if c != 0), verdicts


def test_dropping_out_leaves_the_target_alone_in_the_sum(hazard_round):
    row = inprocess_case(hazard_round, "drop")
    assert row["cosine"] >= 0.999, row
    assert row["target_leaked"] >= 12, row  # 16 of 16 measured


def test_covers_keep_the_target_out_of_reach(hazard_round):
    row = inprocess_case(hazard_round, "cover", seed=1)
    assert row["target_leaked"] == 0 and row["target_psnr"] < 20, row  # 7.8 dB measured
    assert row["others_leaked"] == 0, row
    one = inprocess_case(hazard_round, "cover", seed=1, guarded=1)  # one guarded non-target
    assert one["target_leaked"] == 0, one
