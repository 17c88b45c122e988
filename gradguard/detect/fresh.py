"""The client's own architecture freshly initialised: the reference of the checks that ask
how far a received model is from what an untrained model of the same shape looks like
(the lone-unit rate of the leakage audit, the layer scales of ``scale``)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import torch
from torch import nn


def fresh_states(template: nn.Module, seeds: Iterable[int]) -> Iterator[nn.Module]:
    """A copy of ``template`` re-initialised by its modules' own ``reset_parameters`` (batch
    norm's running statistics too), once per seed in ``seeds``; the same copy is yielded
    each time, re-initialised in place (read it before asking for the next). The global
    random state is left as it was."""
    fresh = copy.deepcopy(template)
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for m in fresh.modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset):
                    reset()
        yield fresh
