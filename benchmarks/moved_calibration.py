"""Honest round pairs of the corpus through the ``moved`` check: the largest lone-unit rate
of moved units per batch size, per family (calibration of ``moved.lone{16,32,64}``).

    python benchmarks/moved_calibration.py [--parts calibration evaluation diverged]
    python benchmarks/moved_calibration.py --long --cache runs/moved-long

Reads runs/corpus (trained runs only, nothing is written there); writes
benchmarks/results/moved_calibration.{json,md}. ``--long``: instead, honest runs at high
learning rates (Adam and AdamW at 1e-2, SGD momentum 0.9 at 0.1 with label smoothing; IID
and Dirichlet 0.1; mlp, convnet 12 rounds, resnet-batch, vit-tiny 6 rounds; 2 epochs a
round; digits, mlp and convnet on Fashion-MNIST too), trained into ``--cache``:
moved_calibration_long.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.detect.base import Context  # noqa: E402
from gradguard.detect.moved import MovedUnits, row_movement  # noqa: E402
from gradguard.experiments import honest_corpus as hc  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402

LONG = {
    "adam-lr-1e-2": {"optimizer": "adam", "lr": 1e-2},
    "adamw-lr-1e-2": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.05},
    "sgd-momentum-lr-0.1-smoothing": {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "label_smoothing": 0.1,
    },
}


def long_runs() -> list[hc.RunSpec]:
    hc.OPTIMISERS.update(LONG)  # the corpus' optimiser table, extended for these runs only
    runs = []
    for dataset, families in (
        ("digits", (("mlp", None), ("convnet", None), ("resnet", "batch"), ("vit-tiny", None))),
        ("fashion-mnist", (("mlp", None), ("convnet", None))),
    ):
        for model, norm in families:
            rounds = 12 if model in ("mlp", "convnet") else 6
            for k, (opt, partition) in enumerate(
                (
                    ("adam-lr-1e-2", "iid"),
                    ("adamw-lr-1e-2", "dirichlet:0.1"),
                    ("sgd-momentum-lr-0.1-smoothing", "iid"),
                )
            ):
                runs.append(
                    hc.RunSpec(
                        "long",
                        model,
                        norm,
                        opt,
                        dataset,
                        partition,
                        3000 + k,
                        rounds,
                        snapshots=tuple(range(1, rounds + 1)),
                    )
                )
    return runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["calibration", "evaluation"])
    p.add_argument("--cache", type=Path, default=hc.CACHE)
    p.add_argument("--long", action="store_true", help="long high-learning-rate runs")
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    check = MovedUnits()
    rows = []
    groups = (
        [long_runs()]
        if args.long
        else [
            [r for r in hc.corpus_runs(part) if (args.cache / r.name / "meta.json").exists()]
            for part in args.parts
        ]
    )
    for runs in groups:
        for m in hc.models(runs, args.cache):
            if m.previous is None:
                continue
            ctx = Context(m.template, m.data, m.previous)
            start = time.perf_counter()
            findings, meta = check.judge(m.state, m.previous, ctx)
            took = time.perf_counter() - start
            ratio = max(
                (
                    float(row_movement(m.state, m.previous, k)[0].max())
                    for k in meta["all"]["units"]
                ),
                default=0.0,
            )
            rows.append(
                {
                    "key": m.key,
                    "model": m.run.model,
                    "dataset": m.run.dataset,
                    "optimiser": m.run.optimiser,
                    "round": m.round,
                    "moved_units": {k: v["units"] for k, v in meta.items()},
                    "max_ratio": ratio,
                    "values": {f.check: f.value for f in findings},
                    "score": max((f.value / f.threshold for f in findings), default=0.0),
                    "seconds": took,
                }
            )
            print(rows[-1], flush=True)
    checks = sorted({c for r in rows for c in r["values"]})
    worst = {c: max((r["values"].get(c, 0.0), r["key"]) for r in rows) for c in checks}
    lines = [
        "# moved: honest round pairs of the corpus",
        "",
        "`python benchmarks/moved_calibration.py "
        + ("--long`: " if args.long else f"--parts {' '.join(args.parts)}`: ")
        + f"{len(rows)} pairs (each snapshot against the previous round's global model, "
        "round 1 against the fresh init).",
        "",
        "| check | honest max | where | threshold |",
        "|---|---|---|---|",
    ]
    for c in checks:
        lines.append(f"| {c} | {worst[c][0]:.4f} | {worst[c][1]} | {check.t[c.split('.')[1]]} |")
    flagged = [r["key"] for r in rows if r["score"] >= 1]
    lines += ["", f"flagged: {len(flagged)} {flagged}", ""]
    name = "moved_calibration" + ("_long" if args.long else "")
    js, md = write_results(
        name, {"rows": rows, "worst": worst}, "\n".join(lines), Path(__file__).parent / "results"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
