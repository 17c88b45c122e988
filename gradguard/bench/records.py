"""What a run reports, and its JSON form: per round, who was attacked, who abstained, what
leaked from whom, the guards' verdicts and the accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gradguard.metrics import Match


@dataclass
class ClientLeak:
    """What the attacker recovered from one client's data in one round."""

    client_id: int
    leaked: int  # true images matched by a reconstruction at PSNR >= threshold
    recovered: int  # reconstructions the attack returned
    psnr_mean: float
    true: torch.Tensor | None = None  # best matched pairs, for the report
    recon: torch.Tensor | None = None
    ssim_mean: float = 0.0
    images: int = 0  # the client's true images the reconstruction was scored against
    match: Match | None = None


@dataclass
class VerdictRecord:
    client_id: int
    malicious: bool
    allowed: bool
    score: float
    summary: str
    elapsed_s: float = 0.0
    detectors: dict[str, dict] = field(default_factory=dict)  # detect.breakdown
    exposed: int | None = None  # images of the batch this round would expose (exposure audit)
    batch: int | None = None


@dataclass
class RoundReport:
    round: int
    attacked: bool
    targeted: list[int]
    abstained: list[int]
    accuracy: float
    leaks: list[ClientLeak] = field(default_factory=list)
    verdicts: list[VerdictRecord] = field(default_factory=list)
    train_seconds: float = 0.0  # local training of every client that trained (0: not measured)

    @property
    def leaked(self) -> int:
        return sum(leak.leaked for leak in self.leaks)


@dataclass
class RunResult:
    engine: str
    guarded: bool
    attacked: bool
    rounds: list[RoundReport]
    seconds: float

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy if self.rounds else 0.0

    @property
    def leaked(self) -> int:
        return sum(r.leaked for r in self.rounds)

    @property
    def abstentions(self) -> int:
        return sum(len(r.abstained) for r in self.rounds)

    @property
    def false_alarms(self) -> int:
        """Flags raised in rounds where the server was honest."""
        return sum(1 for r in self.rounds if not r.attacked for v in r.verdicts if v.malicious)


def result_to_dict(result: RunResult) -> dict[str, Any]:
    """JSON-ready summary of a run (images left out)."""
    return {
        "engine": result.engine,
        "guarded": result.guarded,
        "attacked": result.attacked,
        "seconds": round(result.seconds, 3),
        "final_accuracy": result.final_accuracy,
        "leaked": result.leaked,
        "abstentions": result.abstentions,
        "rounds": [
            {
                "round": r.round,
                "attacked": r.attacked,
                "targeted": r.targeted,
                "abstained": r.abstained,
                "leaked": r.leaked,
                "accuracy": r.accuracy,
                "leaks": [
                    {
                        "client": k.client_id,
                        "leaked": k.leaked,
                        "recovered": k.recovered,
                        "psnr_mean": k.psnr_mean,
                    }
                    for k in r.leaks
                ],
                "verdicts": [asdict(v) for v in r.verdicts],
                "train_seconds": r.train_seconds,
            }
            for r in result.rounds
        ],
    }


def result_from_dict(d: Mapping[str, Any]) -> RunResult:
    rounds = [
        RoundReport(
            r["round"],
            r["attacked"],
            list(r["targeted"]),
            list(r["abstained"]),
            r["accuracy"],
            [
                ClientLeak(k["client"], k["leaked"], k["recovered"], k["psnr_mean"])
                for k in r["leaks"]
            ],
            [VerdictRecord(**v) for v in r["verdicts"]],
            r.get("train_seconds", 0.0),
        )
        for r in d["rounds"]
    ]
    return RunResult(d["engine"], d["guarded"], d["attacked"], rounds, d["seconds"])
