"""Calibrate detector thresholds on the calibration part of the honest corpus only.

    python benchmarks/calibrate.py [--quick] [--report]

Trains the calibration runs that are not cached yet (runs/corpus/, safetensors), scores
every honest snapshot with every registered detector (the costly ``dsnr`` and faithful
``warmup``, outside the default Guard: the first and last snapshot of each run), and writes
benchmarks/results/calibrate{,_quick}.{json,md}: the largest honest value of every
threshold key (and where it was measured), per-family maxima, the proposed thresholds
(``max(floor, 2 x honest max)``, gradguard/detect/calibrate.py) next to those in use, and
any check that maps to no key. No attack is scored. ``--report`` rewrites the Markdown from
the saved JSON (after editing a detector's thresholds).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.detect.base import MARGIN, Context  # noqa: E402
from gradguard.detect.calibrate import calibration_detectors, propose, score_model  # noqa: E402
from gradguard.detect.thresholds import DEFAULTS  # noqa: E402
from gradguard.experiments import false_positives as fp  # noqa: E402
from gradguard.experiments import honest_corpus as hc  # noqa: E402
from gradguard.experiments.harness import markdown_table, progress, write_results  # noqa: E402

OUT = Path(__file__).parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits, mlp + convnet, 2 rounds")
    ap.add_argument("--report", action="store_true", help="Markdown from the saved JSON")
    ap.add_argument("--cache", type=Path, default=None, help="corpus cache folder")
    args = ap.parse_args()
    name = "calibrate_quick" if args.quick else "calibrate"
    if args.report:
        result = json.loads((OUT / f"{name}.json").read_text())
        result["in_use"] = dict(DEFAULTS)  # after editing a detector's thresholds
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (OUT / f"{name}.md").write_text(to_markdown(result))
        print((OUT / f"{name}.md").read_text())
        return 0
    torch.set_num_threads(1)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    spec = hc.QUICK if args.quick else hc.CorpusSpec()
    cache = args.cache or (hc.CACHE.with_name("corpus-quick") if args.quick else hc.CACHE)
    runs = hc.corpus_runs("calibration", spec)
    result = run(runs, cache)
    js, md = write_results(name, result, to_markdown(result), OUT)
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


def run(runs: list[hc.RunSpec], cache: Path) -> dict:
    start = time.perf_counter()
    detectors, marks = calibration_detectors()
    rows, unmapped, flagged = [], set(), []
    built = 0.0
    # sentinel scores do not depend on the thresholds: cached per run under the code's hash
    version = fp.code_version()
    with progress("scoring honest models", hc.size(runs)) as (bar, task):
        for run in runs:  # a run not cached yet is trained first
            t0 = time.perf_counter()
            hc.train_run(run, cache)
            built += time.perf_counter() - t0
            saved = Path(cache) / run.name / f"calibration-{version}.json"
            known = json.loads(saved.read_text()) if saved.exists() else {}
            for m in hc.models([run], cache):
                if str(m.round) not in known:
                    here = [d for d in detectors if d.name not in fp.COSTLY or fp.is_end(m)]
                    ctx = Context(m.template, m.data, m.previous)
                    s = score_model(m.state, ctx, here, marks)
                    known[str(m.round)] = {
                        "scores": s.values,
                        "unmapped": sorted(s.unmapped),
                        "flagged": s.flagged,
                    }
                got = known[str(m.round)]
                rows.append({**m.record(), "scores": got["scores"]})
                unmapped |= set(got["unmapped"])
                flagged += [f"{m.key}: {f}" for f in got["flagged"]]
                bar.advance(task)
            saved.write_text(json.dumps(known))
    maxima: dict[str, float] = {}
    where: dict[str, str] = {}
    per_family: dict[str, dict[str, float]] = {}
    for r in rows:
        fam = per_family.setdefault(f"{r['dataset']}/{r['family']}", {})
        for k, v in r["scores"].items():
            if v > maxima.get(k, -math.inf):
                maxima[k], where[k] = v, r["key"]
            fam[k] = max(fam.get(k, -math.inf), v)
    return {
        "models": len(rows),
        "runs": len(runs),
        "composition": hc.Composition.of(rows).counts,
        "margin": MARGIN,
        "honest_max": maxima,
        "honest_max_at": where,
        "per_family": per_family,
        "proposed": propose(maxima),
        "in_use": dict(DEFAULTS),
        "never_measured": sorted(set(DEFAULTS) - set(maxima)),
        "unmapped_checks": sorted(unmapped),
        "flagged_under_sentinels": flagged,
        "build_seconds": built,
        "score_seconds": time.perf_counter() - start - built,
        "rows": rows,
    }


def to_markdown(result: dict) -> str:
    maxima, proposed, in_use = result["honest_max"], result["proposed"], result["in_use"]
    comp = result["composition"]
    out = [
        f"# Threshold calibration on {result['models']} honest global models "
        f"({result['runs']} FedAvg runs, calibration seeds 1000+)\n\n",
        f"proposed = max(floor, {result['margin']:g} x honest max); in use = "
        "each detector's THRESHOLDS. Corpus training "
        f"{result['build_seconds']:.0f} s (0 when cached), scoring "
        f"{result['score_seconds']:.0f} s (shared 2-core machine).\n\n",
        "Composition: "
        + "; ".join(
            f"{axis}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            for axis, counts in comp.items()
        )
        + "\n\n## Per key\n\n",
        markdown_table(
            ["key", "honest max", "measured on", "proposed", "in use"],
            [
                [
                    k,
                    maxima.get(k, float("nan")),
                    result["honest_max_at"].get(k, "never measured"),
                    proposed.get(k, float("nan")),
                    in_use.get(k, float("nan")),
                ]
                for k in in_use
            ],
        ),
        "\n## Honest maxima per data set / family\n\n",
    ]
    fams = sorted(result["per_family"])
    out.append(
        markdown_table(
            ["key"] + fams,
            [[k] + [result["per_family"][f].get(k, float("nan")) for f in fams] for k in in_use],
        )
    )
    out.append(
        f"\nKeys never measured: {', '.join(result['never_measured']) or 'none'}. "
        f"Checks mapped to no key: {', '.join(result['unmapped_checks']) or 'none'}. "
        f"Flags under sentinel thresholds: {len(result['flagged_under_sentinels'])}.\n"
    )
    return "".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
