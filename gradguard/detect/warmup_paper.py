"""``warmup-paper``: the reading of seed 000's warm-up Z-score that best reproduces its numbers.

Section 5.2 compares each statistic with "its historical mean" by a Z-score and says no
more. Read literally (:mod:`.warmup`), the first step's history is one value with no
spread, so its Z is the change divided by ``eps = 1e-8``: honest |Z| of 1e4-1e7 that fall
with training, where the paper reports honest Z below 4000 (Fig. 3), "close to zero
throughout the first four warm-up steps" of a benign model, and the first and last linear
layers of a fished model orders of magnitude above a benign one after one step (Table 1).

Of the readings measured side by side (``benchmarks/warmup_readings.py``,
docs/experiments.md), this one matches most of that: the paper's warm-up (5 SGD steps on
128 local samples; the same target layers and statistics as :mod:`.warmup`), with the
Z-score's denominator bounded below by a per-statistic scale,

    Z_t = (s_t - m) / max(std(s_0..s_{t-1}), rel * (|m| + spread_0)),  m = mean(s_0..s_{t-1})

(``spread_0``: the layer's standard deviation on arrival, ``rel`` = 1%), so a Z-score counts
the step's departure from the history in hundredths of the layer's own scale. The last
linear layer's mean is not scored: plain SGD on cross-entropy cannot move it
(:meth:`.WarmUp.unscored`), so its Z is float rounding noise.

What it does not reproduce: no reading measured here makes honest Z rise with training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradguard.detect.base import Threshold
from gradguard.detect.warmup import WarmUp


class WarmUpPaper(WarmUp):
    """Seed 000, section 5, scale-aware Z: flag if any scored |Z| exceeds ``warmup-paper.z``."""

    name = "warmup-paper"
    skip_softmax_mean = True
    # 2 x 182, the honest max of the broad calibration corpus
    THRESHOLDS = (Threshold("z", 365.0, "warmup-paper.z", doc="any scored |Z| above this flags"),)

    def __init__(
        self, thresholds: Mapping[str, float] | None = None, rel: float = 1e-2, **options
    ) -> None:
        super().__init__(thresholds, **options)
        self.rel = rel

    def zscores(self, s: torch.Tensor) -> torch.Tensor:
        spread0 = s[..., 0, 1].abs().unsqueeze(-1)
        out = []
        for t in range(1, s.shape[-2]):
            hist = s[..., :t, :]
            mean = hist.mean(-2)
            scale = self.rel * (mean.abs() + spread0) + 1e-12
            out.append((s[..., t, :] - mean) / torch.maximum(hist.std(-2, correction=0), scale))
        return torch.stack(out, dim=-2)
