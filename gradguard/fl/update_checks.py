"""Checks a careful server operator can run on the uploads of a round before aggregating.

Update-norm check: an upload whose L2 norm is more than ``norm_ratio`` times, or less than
``1 / norm_ratio`` times, the median norm of the round (the norm bound of Sun et al. 2019,
"Can you really backdoor federated learning?", made relative). Cosine check: an upload whose
cosine similarity to the mean of the other uploads is below ``min_cosine`` (FLTrust-style
direction checks, Cao et al. 2021, without a server data set). Both see only uploads: they
can catch a Byzantine upload, never a client that uploads honestly and reads the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class UpdateChecks:
    norm_ratio: float = 3.0
    min_cosine: float = 0.0


@dataclass(frozen=True)
class UploadVerdict:
    norm_ratio: float  # the upload's norm over the round's median norm
    cosine: float  # cosine similarity to the mean of the other uploads
    norm_flagged: bool
    cosine_flagged: bool

    @property
    def flagged(self) -> bool:
        return self.norm_flagged or self.cosine_flagged


def check_uploads(
    vectors: torch.Tensor, checks: UpdateChecks = UpdateChecks()
) -> list[UploadVerdict]:
    """One verdict per row of ``vectors`` (n x D flattened uploads of one round)."""
    v = vectors.double()
    norms = v.norm(dim=1)
    median = norms.median().clamp_min(1e-12)
    total = v.sum(0)
    out = []
    for i in range(len(v)):
        others = (total - v[i]) / max(1, len(v) - 1)
        cos = float(torch.nn.functional.cosine_similarity(v[i], others, dim=0))
        ratio = float(norms[i] / median)
        out.append(
            UploadVerdict(
                ratio,
                cos,
                ratio > checks.norm_ratio or ratio < 1 / checks.norm_ratio,
                cos < checks.min_cosine,
            )
        )
    return out
