"""False positives: every detector and the Guard on honest FedAvg global models (issue 4,
must show 2; seed 000 section 5.3 claims benign models stay under the threshold).

The models come from :mod:`gradguard.experiments.honest_corpus`: real federated training of
mlp, convnet, resnet (batch and group norm) and vit-tiny on IID and Dirichlet(0.1)
partitions, snapshotted from the initial model to convergence. A flag on any of them is a
false positive; so is a model the Guard could not verify.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from gradguard.experiments.harness import GUARD, default_detectors, inspect_all, markdown_table
from gradguard.experiments.harness import progress as progress_bar
from gradguard.experiments.honest_corpus import CorpusConfig, honest_models


@dataclass(frozen=True)
class FalsePositiveConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    detectors: tuple[str, ...] | None = None  # None: every registered detector


def run(cfg: FalsePositiveConfig = FalsePositiveConfig(), progress: bool = True) -> dict[str, Any]:
    """Inspect every honest model; return per-model rows and per-detector rates."""
    names = list(cfg.detectors) if cfg.detectors else default_detectors()
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with progress_bar("honest models", cfg.corpus.size, progress) as (bar, task):
        for m in honest_models(cfg.corpus):
            outcomes = inspect_all(m.state, m.template, m.data, names, previous=m.previous)
            rows.append(
                {
                    "key": m.key,
                    "family": m.family,
                    "partition": m.partition,
                    "seed": m.seed,
                    "round": m.round,
                    "accuracy": m.accuracy,
                    "client": m.client,
                    "local_examples": len(m.data),
                    "detectors": {k: vars(o) for k, o in outcomes.items()},
                }
            )
            bar.update(task, advance=1)
    return {
        "config": _config_dict(cfg),
        "detectors": names + [GUARD],
        "models": rows,
        "summary": summarize(rows, names + [GUARD]),
        "seconds": time.perf_counter() - start,
    }


def summarize(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    overall = {}
    for name in names:
        outs = [r["detectors"][name] for r in rows]
        flagged = sum(o["flagged"] for o in outs)
        scores = [o["score"] for o in outs if o["score"] == o["score"]]
        overall[name] = {
            "models": len(outs),
            "flagged": flagged,
            "unverified": sum(not o["verified"] for o in outs),
            "errors": sum(bool(o["error"]) for o in outs),
            "fpr": flagged / max(1, len(outs)),
            "max_score": max(scores) if scores else float("nan"),
            "mean_seconds": sum(o["elapsed_s"] for o in outs) / max(1, len(outs)),
        }
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        g = f"{r['family']} / {r['partition']}"
        groups[g]["models"] += 1
        for name in names:
            groups[g][name] += int(r["detectors"][name]["flagged"])
    return {
        "overall": overall,
        "by_group": {g: dict(v) for g, v in groups.items()},
        "accuracy_range": [min(r["accuracy"] for r in rows), max(r["accuracy"] for r in rows)]
        if rows
        else [],
    }


def to_markdown(result: dict[str, Any]) -> str:
    names, s = result["detectors"], result["summary"]
    n = len(result["models"])
    out = [
        f"# False positives on {n} honest FedAvg global models\n",
        f"Corpus: {result['config']['corpus']}. Test accuracy of the snapshots: "
        f"{s['accuracy_range'][0]:.3f} to {s['accuracy_range'][1]:.3f}. "
        f"Runtime {result['seconds']:.0f} s (noisy: shared 2-core machine).\n",
        "## False-positive rate per detector\n",
    ]
    out.append(
        markdown_table(
            [
                "detector",
                "models",
                "flagged",
                "FPR",
                "unverified",
                "errors",
                "max score",
                "mean time (ms)",
            ],
            [
                [
                    k,
                    v["models"],
                    v["flagged"],
                    v["fpr"],
                    v["unverified"],
                    v["errors"],
                    v["max_score"],
                    1000 * v["mean_seconds"],
                ]
                for k, v in s["overall"].items()
            ],
        )
    )
    out.append("\n## Flags per model family and partition\n")
    out.append(
        markdown_table(
            ["family / partition", "models"] + names,
            [[g, v["models"]] + [v[k] for k in names] for g, v in s["by_group"].items()],
        )
    )
    flagged = [
        (r["key"], k, o)
        for r in result["models"]
        for k, o in r["detectors"].items()
        if o["flagged"]
    ]
    out.append(f"\n## Flagged honest models ({len(flagged)} flags)\n")
    if flagged:
        out.append(
            markdown_table(
                ["model", "detector", "reason"],
                [[key, k, (o["error"] or o["summary"])[:160]] for key, k, o in flagged[:40]],
            )
        )
    else:
        out.append("None.\n")
    return "".join(out)


def _config_dict(cfg: FalsePositiveConfig) -> dict[str, Any]:
    c = cfg.corpus
    return {
        "corpus": (
            f"{c.dataset}{'' if c.limit is None else f' ({c.limit} examples)'}, "
            f"{len(c.families)} families x {len(c.partitions)} partitions x "
            f"seeds {list(c.seeds)}, {c.rounds} rounds, {c.clients} clients, "
            f"local {c.training}"
        ),
        "detectors": list(cfg.detectors) if cfg.detectors else None,
    }
