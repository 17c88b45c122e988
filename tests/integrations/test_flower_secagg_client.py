"""The guarded SecAgg+ client's refusal (issue 10, item 4), called directly (no simulation):
a flagged or unreadable model is answered by dropping out (``drop``: it raises, Flower's
dropout path) or by a masked-to-be cover (``cover``: the received model plus fresh noise,
with the client's usual example count)."""

import copy
import logging

import numpy as np
import pytest

pytest.importorskip("flwr", reason="needs the flower extra")

from gradguard.detect import Guard  # noqa: E402
from gradguard.errors import GradguardError  # noqa: E402
from gradguard.experiments.secagg_hazard import HazardConfig, prepare  # noqa: E402
from gradguard.fl.cover import SecureRefusal  # noqa: E402
from gradguard.fl.guarded import ClientGuard  # noqa: E402
from gradguard.integrations.flower.secagg import _arrays  # noqa: E402
from gradguard.integrations.flower.secagg_client import (  # noqa: E402
    COVER_METRIC,
    GuardedSecAggClient,
)


@pytest.fixture(scope="module")
def hazard_round():
    logging.getLogger("gradguard").setLevel(logging.ERROR)
    return prepare(HazardConfig())


def client(r, mode, pid=1):
    check = ClientGuard(Guard(template=copy.deepcopy(r.template), data=r.batches[pid]))
    return GuardedSecAggClient(
        r.template, r.batches[pid], r.training, pid, check, SecureRefusal(mode=mode)
    )


def test_drop_leaves_the_round_on_a_zeroed_model(hazard_round):
    zeroed = _arrays(hazard_round.sent[1].state_dict())
    with pytest.raises(GradguardError, match="abstained"):
        client(hazard_round, "drop").fit(zeroed, {})


def test_cover_answers_a_zeroed_model_with_noise(hazard_round):
    zeroed = _arrays(hazard_round.sent[1].state_dict())
    c = client(hazard_round, "cover")
    sent, examples, metrics = c.fit(zeroed, {})
    assert examples == 16 and metrics == {COVER_METRIC: 1} and c.refusals == 1
    moved = [np.abs(a - b).max() for a, b in zip(sent, zeroed, strict=True)]
    assert all(m > 0 for m in moved)  # every tensor carries noise: nothing is left at zero


def test_cover_answers_an_unreadable_model_too(hazard_round):
    honest = _arrays(hazard_round.template.state_dict())
    broken = honest[:-1]  # an entry short
    sent, examples, _ = client(hazard_round, "cover").fit(broken, {})
    assert [a.shape for a in sent] == [a.shape for a in honest] and examples == 16
    with pytest.raises(GradguardError):
        client(hazard_round, "drop").fit(broken, {})
