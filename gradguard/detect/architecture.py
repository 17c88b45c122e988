"""The architecture / state check (seed 000, section 3.1).

The received state must match the client's template exactly: the same names, shapes and
dtypes. An extra or missing entry is an attack (an inserted imprint block), not something
to ignore as ``load_state_dict(strict=False)`` would. Non-finite values and absurd
magnitudes make a model unverifiable.

Integer entries (BatchNorm's ``num_batches_tracked``) that arrive as floats are not a
change of architecture: stock strategies (Flower's FedAvg) average every array, which turns
int64 counts into float64. :func:`restore_integers` validates them as counts (finite,
non-negative, at most 2^53) and casts them back; only values no averaging of counts
produces make the model unverifiable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch

from gradguard.detect.base import Context, Finding, Threshold, Verdict, verdict_from
from gradguard.detect.thresholds import resolve


class ArchitectureCheck:
    name = "architecture"
    needs_data = False
    THRESHOLDS = (
        Threshold(
            "max_abs",
            1e6,
            "architecture.magnitude",
            floor=1e6,
            doc="largest |value| a float entry may hold before the model is unverifiable",
        ),
    )

    def __init__(self, thresholds: Mapping[str, float] | None = None) -> None:
        self.t = resolve(self, thresholds)

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        expected = ctx.expected
        received, findings = restore_integers(received, expected)
        extra = [k for k in received if k not in expected]
        missing = [k for k in expected if k not in received]
        for kind, names in (("extra", extra), ("missing", missing)):
            if names:
                shown = ", ".join(names[:5]) + (
                    f" (+{len(names) - 5} more)" if len(names) > 5 else ""
                )
                findings.append(
                    Finding(
                        f"architecture.{kind}",
                        shown,
                        float(len(names)),
                        0.0,
                        f"{len(names)} {kind} entr{'y' if len(names) == 1 else 'ies'} compared "
                        "with the client's model: the architecture was changed",
                    )
                )
        verified, top = not any(f.flagged for f in findings), 0.0
        peaks = ctx.peaks or {}
        for k in [k for k in expected if k in received]:  # template order: a stable report
            want, got = expected[k], received[k]
            if not isinstance(got, torch.Tensor):
                findings.append(
                    Finding(
                        "architecture.type",
                        k,
                        math.nan,
                        0.0,
                        f"{type(got).__name__} instead of a tensor",
                    )
                )
                verified = False
                continue
            if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
                findings.append(
                    Finding(
                        "architecture.shape",
                        k,
                        float(got.numel()),
                        float(want.numel()),
                        f"{tuple(got.shape)} {str(got.dtype).removeprefix('torch.')} where the "
                        f"client's model has {tuple(want.shape)} "
                        f"{str(want.dtype).removeprefix('torch.')}",
                    )
                )
                verified = False
                continue
            if got.is_floating_point() and got.numel():
                peak = peaks[k] if k in peaks else peak_abs(got)
                if not math.isfinite(peak):
                    bad = int((~torch.isfinite(got)).sum())
                    findings.append(
                        Finding(
                            "architecture.finite",
                            k,
                            float(bad),
                            0.0,
                            f"{bad} non-finite value(s) (NaN or Inf)",
                        )
                    )
                    verified = False
                    continue
                top = max(top, peak)
                if peak > self.t["max_abs"]:
                    findings.append(
                        Finding(
                            "architecture.magnitude",
                            k,
                            peak,
                            self.t["max_abs"],
                            f"a value of magnitude {peak:.3g}: no honest training produces it",
                        )
                    )
                    verified = False
        findings.append(
            Finding(
                "architecture.magnitude",
                "-",
                top,
                self.t["max_abs"],
                f"largest magnitude {top:.3g}",
                flagged=False,
            )
        )
        return verdict_from(self.name, findings, start, {"max_abs": top}, verified=verified)


def peak_abs(t: torch.Tensor) -> float:
    """max |t| in one pass (NaN if any NaN, Inf if any Inf)."""
    lo, hi = torch.aminmax(t.detach())
    return max(-float(lo), float(hi))


#: Integers a float64 holds exactly: an averaged count above this is no count.
MAX_COUNT = 2**53


def restore_integers(
    received: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[Finding]]:
    """``received`` with the template's integer entries that arrived as floats cast back,
    and one finding per such entry (flagged where its values are no averaged count).

    An average of counts is finite, non-negative and at most the largest count (bounded by
    ``MAX_COUNT`` and the integer type); it need not be integral (FedAvg weights clients by
    their number of examples), so it is rounded to the nearest integer. Booleans must lie
    in [0, 1]. Entries that are not such floats are returned unchanged.
    """
    out = dict(received)
    findings: list[Finding] = []
    for k, want in expected.items():
        got = received.get(k)
        if not (
            isinstance(got, torch.Tensor)
            and got.is_floating_point()
            and not want.is_floating_point()
            and not want.is_complex()
            and tuple(got.shape) == tuple(want.shape)
        ):
            continue
        values = got.detach().double()
        high = (
            1.0 if want.dtype == torch.bool else float(min(MAX_COUNT, torch.iinfo(want.dtype).max))
        )
        lo, hi = (float(v) for v in torch.aminmax(values)) if values.numel() else (0.0, 0.0)
        dtype = str(want.dtype).removeprefix("torch.")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo >= 0 and hi <= high):
            findings.append(
                Finding(
                    "architecture.integer",
                    k,
                    hi if math.isfinite(hi) and hi > high else lo,
                    high,
                    f"a {dtype} count sent as {str(got.dtype).removeprefix('torch.')} with "
                    f"values in [{lo:.6g}, {hi:.6g}]: no average of counts (0 to {high:.6g})",
                )
            )
            continue
        rounded = values.round()
        off = float((values - rounded).abs().max()) if values.numel() else 0.0
        out[k] = rounded.to(want.dtype)
        findings.append(
            Finding(
                "architecture.integer",
                k,
                off,
                0.5,
                f"{dtype} entry averaged into {str(got.dtype).removeprefix('torch.')} "
                f"(largest distance to an integer {off:.3g}): validated and cast back",
                flagged=False,
            )
        )
    return out, findings
