"""False positives: every detector and the Guard on the honest corpus (issue 8, item 7;
seed 000 section 5.3 claims benign models stay under the threshold).

The models come from the evaluation part of :mod:`gradguard.experiments.honest_corpus`
(seeds 0-999; thresholds are calibrated on seeds 1000+): every zoo family, five local
optimisers, digits, Fashion-MNIST and a colour photo-patch folder, IID and Dirichlet(0.1),
from the initial model to the last round. A flag on any of them is a false positive; so is
a model the Guard could not verify. The ``diverged`` part (learning rates far too high) is
reported apart: there the right answer is "cannot verify" with no attack named.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from gradguard.experiments import honest_corpus as hc
from gradguard.experiments.harness import GUARD, default_detectors, inspect_all, markdown_table
from gradguard.experiments.harness import progress as progress_bar

AXES = ("family", "optimiser", "dataset", "partition", "stage")
# Detectors outside the default Guard that cost about a local epoch each (the faithful
# warm-up's 640 sample-gradients, D-SNR's per-example gradients): on the shared 2-core
# machine they run on the first and last snapshot of each run only.
COSTLY = ("dsnr", "warmup")


def is_end(m: hc.CorpusModel) -> bool:
    """The first (initial or round 1) or last snapshot of its run."""
    return m.round in (m.run.snapshots[0], m.run.rounds)


def run(
    runs: list[hc.RunSpec],
    cache: Path = hc.CACHE,
    detectors: list[str] | None = None,
    progress: bool = True,
    only_built: bool = False,
) -> dict[str, Any]:
    """Inspect every snapshot of ``runs`` with each detector and the default Guard.

    Outcomes are cached next to each run (``outcomes.json``, per detector under the version
    of :func:`detection_versions`), so a second scorer working through the runs from the
    other end, or a rerun after a threshold change, rescores only what changed."""
    names = detectors or default_detectors()
    start = time.perf_counter()
    if only_built:  # score what is trained already, train nothing
        runs = [r for r in runs if (Path(cache) / r.name / "meta.json").exists()]
    else:
        with progress_bar("training corpus runs", len(runs), progress) as (bar, task):
            hc.build(runs, cache, on_run=lambda _: bar.advance(task))
    built = time.perf_counter() - start
    versions = detection_versions(names)
    rows: list[dict[str, Any]] = []
    with progress_bar("scoring corpus models", hc.size(runs), progress) as (bar, task):
        for run in runs:
            saved = Path(cache) / run.name / "outcomes.json"
            known = json.loads(saved.read_text()) if saved.exists() else {}
            for m in hc.models([run], cache):
                here = [n for n in names if n not in COSTLY or is_end(m)]
                cached = known.setdefault(str(m.round), {})
                fresh = [n for n in here if cached.get(n, {}).get("version") != versions[n]]
                stale_guard = cached.get(GUARD, {}).get("version") != versions[GUARD]
                if fresh or stale_guard:
                    outcomes = inspect_all(
                        m.state, m.template, m.data, fresh, m.previous, guard=stale_guard
                    )
                    for k, o in outcomes.items():
                        cached[k] = {**vars(o), "version": versions[k]}
                rows.append({**m.record(), "detectors": {k: cached[k] for k in here + [GUARD]}})
                bar.advance(task)
            tmp = saved.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            tmp.replace(saved)
    return {
        "detectors": names + [GUARD],
        "models": rows,
        "summary": summarize(rows, names + [GUARD]),
        "build_seconds": built,
        "score_seconds": time.perf_counter() - start - built,
    }


def code_version() -> str:
    """A hash of the detection code and of :data:`COSTLY` (threshold defaults aside: they
    enter per detector, :func:`detection_versions`; calibrate.py aside: it does not detect)."""
    code = hashlib.sha256(json.dumps(COSTLY).encode())
    root = Path(__file__).resolve().parents[1] / "detect"
    for f in sorted(root.rglob("*.py")):
        if f.name not in ("thresholds.py", "calibrate.py"):
            code.update(_without_threshold_defaults(f.read_text()).encode())
    return code.hexdigest()[:12]


def _without_threshold_defaults(source: str) -> str:
    """``source``'s syntax tree with the ``default`` of every ``Threshold(...)`` declaration
    blanked: editing a calibrated value leaves the code's hash as it was."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Threshold":
            if len(node.args) > 1:
                node.args[1] = ast.Constant(None)
            for kw in node.keywords:
                if kw.arg == "default":
                    kw.value = ast.Constant(None)
    return ast.dump(tree)


def detection_versions(names: list[str]) -> dict[str, str]:
    """Per detector (and the Guard), a hash of the detection code and of the thresholds it
    reads: a cached outcome is reused only while both are unchanged."""
    from gradguard.detect import GuardConfig
    from gradguard.detect.thresholds import DEFAULTS

    code = code_version()

    def version(detectors: list[str]) -> str:
        keys = sorted((k, v) for k, v in DEFAULTS.items() if k.split(".")[0] in detectors)
        return hashlib.sha256((code + json.dumps(keys)).encode()).hexdigest()[:12]

    out = {n: version([n]) for n in names}
    out[GUARD] = version(["health", *GuardConfig().detectors])
    return out


def summarize(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    overall = {}
    for name in names:
        outs = [r["detectors"][name] for r in rows if name in r["detectors"]]
        scores = [o["score"] for o in outs if o["score"] == o["score"]]
        overall[name] = {
            "models": len(outs),
            "flagged": sum(o["flagged"] for o in outs),
            "unverified": sum(not o["verified"] for o in outs),
            "errors": sum(bool(o["error"]) for o in outs),
            "fpr": sum(o["flagged"] for o in outs) / max(1, len(outs)),
            "max_score": max(scores) if scores else float("nan"),
            "mean_seconds": sum(o["elapsed_s"] for o in outs) / max(1, len(outs)),
        }
    by_axis: dict[str, dict[str, dict[str, int]]] = {}
    for axis in AXES:
        groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in rows:
            g = groups[str(r[axis])]
            g["models"] += 1
            for name in names:
                if name in r["detectors"]:
                    g[name] += int(r["detectors"][name]["flagged"])
        by_axis[axis] = {k: dict(v) for k, v in sorted(groups.items())}
    acc = [r["accuracy"] for r in rows if r["accuracy"] == r["accuracy"]]
    return {
        "overall": overall,
        "by_axis": by_axis,
        "composition": hc.Composition.of(rows).counts,
        "accuracy_range": [min(acc), max(acc)] if acc else [],
    }


def classify_diverged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per diverged model: the Guard's answer, and which detectors alone name an attack."""
    out = []
    for r in rows:
        guard = r["detectors"][GUARD]
        named = [
            f"{k}: {o['summary']}"
            for k, o in r["detectors"].items()
            if k not in (GUARD, "health") and o["flagged"] and o["verified"]
        ]
        out.append(
            {
                "key": r["key"],
                "accuracy": r["accuracy"],
                "guard_verified": guard["verified"],
                "guard_flagged": guard["flagged"],
                "guard_reason": guard["summary"] or guard["error"],
                "names_attack": "diverged" not in guard["summary"]
                and "collapsed" not in guard["summary"]
                and "non-finite" not in guard["summary"],
                "detectors_alone_naming_attacks": named,
            }
        )
    return out


def to_markdown(result: dict[str, Any], diverged: dict[str, Any] | None = None) -> str:
    names, s = result["detectors"], result["summary"]
    n = len(result["models"])
    comp = s["composition"]
    out = [
        f"# False positives on {n} honest FedAvg global models (evaluation part, seeds 0-999)\n\n",
        "Composition: "
        + "; ".join(
            f"{axis}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            for axis, c in comp.items()
        )
        + f". Test accuracy of the snapshots: {s['accuracy_range'][0]:.3f} to "
        f"{s['accuracy_range'][1]:.3f}. Corpus training {result['build_seconds']:.0f} s "
        f"(0 when cached), scoring {result['score_seconds']:.0f} s (shared 2-core machine).\n\n",
        "## False-positive rate per detector (`guard` = the default Guard)\n\n",
        f"{', '.join(COSTLY)} (outside the default Guard, about a local epoch each) ran on the "
        "first and last snapshot of each run only: see their models column.\n\n",
        markdown_table(
            ["detector", "models", "flagged", "FPR", "unverified", "errors", "max score", "ms"],
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
        ),
    ]
    for axis, groups in s["by_axis"].items():
        out.append(f"\n## Flags per {axis}\n\n")
        out.append(
            markdown_table(
                [axis, "models"] + names,
                [[g, v["models"]] + [v.get(k, 0) for k in names] for g, v in groups.items()],
            )
        )
    flagged = [
        (r["key"], k, o)
        for r in result["models"]
        for k, o in r["detectors"].items()
        if o["flagged"]
    ]
    out.append(f"\n## Flagged honest models ({len(flagged)} flags)\n\n")
    if flagged:
        out.append(
            markdown_table(
                ["model", "detector", "reason"],
                [[key, k, (o["error"] or o["summary"])[:160]] for key, k, o in flagged[:60]],
            )
        )
    else:
        out.append("None.\n")
    if diverged:
        rows = diverged["classified"]
        out.append(
            f"\n## Diverged runs ({len(rows)} models, learning rates far too high)\n\n"
            f"Guard: {sum(not r['guard_verified'] for r in rows)} of {len(rows)} "
            f"'cannot verify', {sum(r['names_attack'] for r in rows)} name an attack.\n\n"
        )
        out.append(
            markdown_table(
                ["model", "accuracy", "Guard verdict", "detectors alone that name an attack"],
                [
                    [
                        r["key"],
                        r["accuracy"],
                        r["guard_reason"][:110],
                        "; ".join(x[:70] for x in r["detectors_alone_naming_attacks"]) or "-",
                    ]
                    for r in rows
                ],
            )
        )
    return "".join(out)
