"""The Guard's verdict on the Flower wire, as a record both sides read by key.

An accepted round adds a ConfigRecord (:data:`VERDICT_KEY`) to the client's reply; an
abstention is an ``Error`` reply (Flower's only way to decline a message, and an Error has
nothing but a reason string), whose reason is :data:`REASON_PREFIX` followed by the same
record as JSON. Fields: ``flagged``, ``verified``, ``allowed``, ``detector``, ``score``,
``summary``, ``elapsed-s``, ``exposed`` and ``batch`` (the leakage audit's images exposed of
the probe batch; -1 when it did not run), ``ignored`` (run-config guard requests ignored),
``detectors`` (each detector's own verdict, :func:`gradguard.detect.breakdown.detector_breakdown`,
as JSON text; ``{}`` when a message carried several models or none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import ConfigRecord

from gradguard.detect.breakdown import detector_breakdown

VERDICT_KEY = "gradguard-verdict"
REASON_PREFIX = "gradguard abstained"

Fields = dict[str, bool | int | float | str]


def verdict_fields(verdicts: Sequence[Any], allowed: bool, ignored: int = 0) -> Fields:
    """The record of one message's verdicts (one per ArrayRecord it carried)."""
    exposure = [v.metadata.get("exposure") for v in verdicts]
    exposure = [e for e in exposure if isinstance(e, Mapping)]
    return {
        "flagged": any(bool(v.malicious) for v in verdicts),
        "verified": all(bool(v.verified) for v in verdicts),
        "allowed": bool(allowed),
        "detector": ",".join(str(v.detector) for v in verdicts),
        "score": float(max((v.score for v in verdicts), default=math.nan)),
        "summary": "; ".join(v.summary() for v in verdicts),
        "elapsed-s": float(sum(v.elapsed_s for v in verdicts)),
        "exposed": int(max((e.get("exposed", 0) for e in exposure), default=-1)),
        "batch": int(max((e.get("batch", 0) for e in exposure), default=-1)),
        "ignored": int(ignored),
        "detectors": json.dumps(detector_breakdown(verdicts[0]) if len(verdicts) == 1 else {}),
    }


def detectors_of(fields: Mapping[str, Any]) -> dict[str, dict]:
    """The per-detector verdicts a client sent (``{}`` when absent or malformed)."""
    try:
        per = json.loads(str(fields.get("detectors", "{}")))
    except ValueError:
        return {}
    if not isinstance(per, dict):
        return {}
    return {str(k): v for k, v in per.items() if isinstance(v, dict)}


def failure_fields(why: str) -> Fields:
    """The record of an abstention without a verdict (the guard could not run)."""
    return {
        "flagged": True,
        "verified": False,
        "allowed": False,
        "detector": "gradguard",
        "score": math.nan,
        "summary": why,
        "elapsed-s": 0.0,
        "exposed": -1,
        "batch": -1,
        "ignored": 0,
        "detectors": "{}",
    }


def to_record(fields: Fields) -> ConfigRecord:
    return ConfigRecord(dict(fields))


def to_reason(fields: Fields) -> str:
    return f"{REASON_PREFIX}: {json.dumps(fields)}"


def from_reason(reason: str | None) -> Fields | None:
    """The record in an abstention's reason; None for any other error."""
    head = f"{REASON_PREFIX}: "
    if not reason or not reason.startswith(head):
        return None
    try:
        fields = json.loads(reason[len(head) :])
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def from_record(record: Mapping[str, Any]) -> Fields:
    return dict(record)
