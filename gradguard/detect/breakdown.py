"""Each detector's own verdict inside a Guard verdict, for reports and audit logs.

The Guard records every detector it ran in ``metadata["detectors"]``; findings are named
``detector.check``. :func:`detector_breakdown` pairs them up: per detector, whether it
flagged, its score (largest value / threshold, >= 1 flags), its time and its first flagged
finding. Run the Guard with ``GuardConfig(stop_at_first=False)`` for every detector's
verdict instead of the ones up to the first flag.
"""

from __future__ import annotations

import math
from typing import Any

from gradguard.detect.base import Verdict


def detector_breakdown(verdict: Verdict) -> dict[str, dict[str, Any]]:
    """``{detector: {"malicious", "verified", "score", "elapsed_s", "reason"}}`` in run
    order, plus ``{"skipped": why}`` for the configured detectors that did not run."""
    per = verdict.metadata.get("detectors") or {}
    out: dict[str, dict[str, Any]] = {}
    for name, info in per.items():
        flagged = [f for f in verdict.findings if f.flagged and f.check.split(".")[0] == name]
        score = float(info.get("score", math.nan))
        out[name] = {
            "malicious": bool(info.get("malicious", False)),
            "verified": bool(info.get("verified", True)),
            "score": score if math.isfinite(score) else str(score),
            "elapsed_s": float(info.get("elapsed_s", 0.0)),
            "reason": f"{flagged[0].check} on {flagged[0].layer}: {flagged[0].message}"
            if flagged
            else "",
        }
    for name, why in (verdict.metadata.get("skipped") or {}).items():
        out.setdefault(name, {"skipped": why})
    return out


def exposure_counts(verdict: Verdict) -> tuple[int | None, int | None]:
    """(images the round would expose, images in the batch) when the exposure audit ran."""
    exposure = verdict.metadata.get("exposure")
    if not isinstance(exposure, dict):
        return None, None
    return exposure.get("exposed"), exposure.get("batch")
