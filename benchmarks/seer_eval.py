"""Evaluate the committed SEER weights (issue 11): norms, FedAvg, client mode, detectors,
the probability argument, and a figure of stolen images beside the property images.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/seer_eval.py [--parts main,fedavg,
        mode,detect,prob,figure] [--batches 200]

Writes ``benchmarks/results/seer.{json,md}``, ``seer_detection.{json,md}``,
``seer_reconstructions.png`` and ``seer_erosion.png`` (drawn from what ``seer.json`` holds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gradguard.attacks.server.seer import SeerConfig, load_seer
from gradguard.data import train_test
from gradguard.experiments.harness import markdown_table, write_results
from gradguard.experiments.seer import (
    detection_rows,
    erode,
    evaluate_parts,
    probability_table,
)

RESULTS = Path(__file__).parent / "results"
NORMS = ("batch", "group", "layer")
KEYS = ("psnr_mean", "psnr_std", "identified_fraction", "baseline_psnr")


def trained(norm: str, batch_size: int = 16) -> bool:
    return SeerConfig(norm=norm, batch_size=batch_size).weights_file.is_file()


def score(norm: str, n: int, batch_size: int = 16, **kw) -> dict:
    parts = load_seer(SeerConfig(norm=norm, batch_size=batch_size))
    aux, held_out = train_test("digits")
    row = evaluate_parts(parts, held_out, aux, n_batches=n, seed=0, **kw)
    print(json.dumps({k: v for k, v in row.items() if k != "examples"}), flush=True)
    return row


def training_log(norm: str, batch_size: int = 16) -> dict:
    """Adam steps and wall minutes over every training phase of the committed weights (a
    first phase, the main run, a fine-tune)."""
    stem = f"seer_train_{norm}_b{batch_size}"
    logs = [RESULTS / f"{stem}{s}.json" for s in ("_phase1", "", "_finetune")]
    logs = [json.loads(p.read_text()) for p in logs if p.is_file()]
    return {
        "train_steps": sum(log["steps"] for log in logs),
        "train_minutes": sum(log["config"]["minutes"] for log in logs),
    }


def f2(v: float) -> str:
    return f"{v:.2f}"


def figure(n: int = 8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = [m for m in NORMS if trained(m)]
    fig, axes = plt.subplots(2 * len(norms), n, figsize=(n * 0.9, 2 * len(norms) * 1.0))
    axes = axes.reshape(2 * len(norms), n)
    for r, norm in enumerate(norms):
        row = score(norm, n, keep=n)
        for c, (target, recon) in enumerate(row["examples"]):
            for k, img in enumerate((target, recon)):
                ax = axes[2 * r + k, c]
                ax.imshow(img[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[2 * r, 0].set_ylabel(f"{norm}\nbrightest", fontsize=7)
            axes[2 * r + 1, 0].set_ylabel("stolen", fontsize=7)
    fig.suptitle(
        "SEER on digits, batch 16: the batch's brightest image vs the decoded one", fontsize=8
    )
    fig.tight_layout()
    path = RESULTS / "seer_reconstructions.png"
    fig.savefig(path, dpi=120)
    return path


def erosion_figure(payload: dict) -> Path | None:
    """The two erosion curves of the batch-norm model: PSNR after honest rounds and under
    FedAvg local steps, beside the constant guess (seed 000 section 4)."""
    curves = [
        ("honest FedSGD rounds before the attack", "honest_rounds", payload.get("erosion")),
        ("FedAvg local steps in the attacked round", "local_steps", payload.get("fedavg")),
    ]
    curves = [c for c in curves if c[2]]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, (label, key, rows) in zip(axes[0], curves, strict=True):
        xs = [r[key] for r in rows]
        ax.plot(xs, [r["psnr_mean"] for r in rows], "o-", label="stolen image (PSNR)")
        ax.plot(xs, [r["baseline_psnr"] for r in rows], "--", color="grey", label="constant guess")
        ax.axhline(18, color="tab:red", lw=0.8, ls=":", label="18 dB")
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR (dB)")
        ax.legend(fontsize=7)
    fig.suptitle("SEER, batch norm, batch 16 (digits): erosion", fontsize=9)
    fig.tight_layout()
    path = RESULTS / "seer_erosion.png"
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="main,fedavg,mode,erosion,detect,prob,figure")
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    parts = set(args.parts.split(","))
    payload: dict = {}
    n = args.batches
    if "main" in parts:
        payload["norms"] = [
            {**score(m, n, b), **training_log(m, b)}
            for b in (16, 64)
            for m in NORMS
            if trained(m, b)
        ]
    if "fedavg" in parts and trained("batch"):
        payload["fedavg"] = [score("batch", n, local_steps=e) for e in (1, 2, 5, 10)]
    if "mode" in parts:
        payload["mode"] = [
            score(m, n, mode=md) for m in NORMS if trained(m) for md in ("train", "eval")
        ]
    if "erosion" in parts and trained("batch"):
        payload["erosion"] = []
        for rounds in (0, 1, 2, 5, 10, 20):
            model = load_seer(SeerConfig(norm="batch", batch_size=16))
            erode(model, rounds)
            aux, held_out = train_test("digits")
            row = evaluate_parts(model, held_out, aux, n_batches=n, seed=0)
            payload["erosion"].append({"honest_rounds": rounds, **row})
            print(json.dumps(payload["erosion"][-1]), flush=True)
    if "prob" in parts:
        payload["probability"] = probability_table()
    if "figure" in parts:
        figure()
    # Parts may run as parallel processes: merge into what the file holds now.
    path = RESULTS / "seer.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    payload = {**{k: v for k, v in previous.items() if k not in ("name", "environment")}, **payload}
    if "figure" in parts or "erosion" in parts or "fedavg" in parts:
        erosion_figure(payload)
    md = ["# SEER on digits (issue 11)\n"]
    if payload.get("norms"):
        md += ["## Norms and batch sizes, FedSGD, client in training mode\n"]
        md += [
            markdown_table(
                [
                    "norm",
                    "batch",
                    "PSNR (dB)",
                    "std",
                    "identified",
                    "constant guess (dB)",
                    "batches",
                    "train steps",
                    "train minutes",
                ],
                [
                    [
                        r["norm"],
                        r["batch_size"],
                        f2(r["psnr_mean"]),
                        f2(r["psnr_std"]),
                        r["identified_fraction"],
                        f2(r["baseline_psnr"]),
                        r["n_batches"],
                        r.get("train_steps", ""),
                        r.get("train_minutes", ""),
                    ]
                    for r in payload["norms"]
                ],
            )
        ]
    if payload.get("fedavg"):
        md += ["\n## FedAvg on the batch-norm model (lr 0.05, local steps over the batch of 16)\n"]
        md += [
            markdown_table(
                ["local steps", "PSNR (dB)", "identified", "constant guess (dB)"],
                [
                    [
                        r["local_steps"],
                        f2(r["psnr_mean"]),
                        r["identified_fraction"],
                        f2(r["baseline_psnr"]),
                    ]
                    for r in payload["fedavg"]
                ],
            )
        ]
    if payload.get("mode"):
        md += [
            "\n## Client in training mode (batch statistics) vs inference mode (running stats)\n"
        ]
        md += [
            markdown_table(
                ["norm", "client mode", "PSNR (dB)", "identified", "constant guess (dB)"],
                [
                    [
                        r["norm"],
                        r["mode"],
                        f2(r["psnr_mean"]),
                        r["identified_fraction"],
                        f2(r["baseline_psnr"]),
                    ]
                    for r in payload["mode"]
                ],
            )
        ]
    if payload.get("probability"):
        md += ["\n## Seed 000 eqs. 2-5 (fixed bin) vs 8-12 (in-batch extreme): P(exactly one)\n"]
        md += [
            markdown_table(
                [
                    "batch",
                    "fixed bin exact",
                    "fixed bin simulated",
                    "extreme exact",
                    "extreme simulated",
                ],
                [
                    [
                        r["batch_size"],
                        r["fixed_bin_exact"],
                        r["fixed_bin_simulated"],
                        r["extreme_exact"],
                        r["extreme_simulated"],
                    ]
                    for r in payload["probability"]
                ],
            )
        ]
    if payload.get("erosion"):
        md += ["\n## Erosion: honest FedSGD rounds (4 clients x 16, lr 0.05) before the attack\n"]
        md += [
            markdown_table(
                ["honest rounds", "PSNR (dB)", "identified", "constant guess (dB)"],
                [
                    [
                        r["honest_rounds"],
                        f2(r["psnr_mean"]),
                        r["identified_fraction"],
                        f2(r["baseline_psnr"]),
                    ]
                    for r in payload["erosion"]
                ],
            )
        ]
    for row in payload.get("norms", []) + payload.get("fedavg", []) + payload.get("mode", []):
        row.pop("examples", None)
    write_results("seer", payload, "".join(md), RESULTS)
    if "detect" in parts:
        rows = [r for m in NORMS if trained(m) for r in detection_rows(m)]
        names = [k for k in rows[0] if k not in ("model", "norm")]
        table = markdown_table(
            ["norm", "model", *names],
            [
                [
                    r["norm"],
                    r["model"],
                    *[
                        ("FLAG " if r[k]["flagged"] else "pass ") + f"{r[k]['score']:.3g}"
                        for k in names
                    ],
                ]
                for r in rows
            ],
        )
        write_results(
            "seer_detection",
            {"rows": rows},
            "# Detectors on SEER vs honest models\n\n" + table,
            RESULTS,
        )
        print(table)


if __name__ == "__main__":
    main()
