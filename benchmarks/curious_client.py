"""The maliciously curious client's grid (seed 001): aggregator x client DP x upload x seeds.

Runs :func:`gradguard.experiments.curious_client.run_cell` over {mean, Krum, Multi-Krum,
median, trimmed mean} x {no DP, noise 0.003, noise 0.01 (clip 1)} x {honest, flip, outlier}
x 5 seeds on digits and Fashion-MNIST (when installed), one core. Writes
``benchmarks/results/curious_client{,_quick,_trained}.{json,md,png}`` (the JSON after every data set
and seed, so an interrupted run keeps what it measured).

    nice -n 10 python benchmarks/curious_client.py [--quick | --trained]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from gradguard.data.idx import system_dir
from gradguard.experiments import curious_client as cc

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(m: float | None, h: float | None, digits: int = 2) -> str:
    if m is None or m != m:
        return "-"
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def markdown(summary: list[dict], gains: list[dict], settings: cc.CuriousSettings, meta) -> str:
    s = settings
    lines = [
        "# The maliciously curious client (seed 001): peers' images from the global change",
        "",
        f"One curious client and {s.peers} honest peers, {s.examples} private images each, "
        f"FedAvg with {s.local_steps} full-batch SGD steps at lr {s.lr}; MLP "
        f"({s.width}/{s.width2}) pre-trained honestly on {s.warmup_examples} held-out images "
        f"for {s.warmup_epochs} epochs, then {s.rounds} rounds under each rule "
        f"(f = {s.byzantine}); the attack inverts the change of round 1 ({s.iterations} "
        f"signed-Adam steps). Client DP: clip {s.dp_clip}, noise multiplier as listed. "
        "PSNR / SSIM: Hungarian-matched against the images of the peers the rule really "
        "used; baseline: the mean image of the attacker's own data scored the same way; "
        "accuracy: global model on the test set after the last round. Mean ± 95% t-interval "
        f"over {meta['seeds']} seeds. {meta['cells']} cells, {meta['seconds']:.0f} s on one "
        "shared core.",
        "",
        "| data | aggregator | DP noise | upload | PSNR mean | PSNR best | SSIM | baseline PSNR "
        "| labels | accuracy | attacker flagged | peer uploads flagged |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary:
        lines.append(
            f"| {e['dataset']} | {e['aggregator']} | {e['dp_noise'] or 'off'} | {e['upload']} "
            f"| {_fmt(e['psnr_mean'], e['psnr_mean_ci'])} "
            f"| {_fmt(e['psnr_best'], e['psnr_best_ci'])} "
            f"| {_fmt(e['ssim_mean'], e['ssim_mean_ci'], 3)} "
            f"| {_fmt(e['baseline_psnr'], e['baseline_psnr_ci'])} "
            f"| {_fmt(e['label_accuracy'], e['label_accuracy_ci'])} "
            f"| {_fmt(e['accuracy'], e['accuracy_ci'], 3)} "
            f"| {e['flagged']}/{e['seeds']} | {e['peers_flagged']}/{e['seeds'] * s.peers} |"
        )
    lines += [
        "",
        "## Gain over mean aggregation (honest upload, no DP), PSNR mean, paired by seed",
        "",
        "The seed claims robust aggregation or client DP raise reconstruction quality by 10-15%.",
        "",
        "| data | aggregator | DP noise | upload | gain (95% CI) | seeds >= +10% |",
        "|---|---|---|---|---:|---:|",
    ]
    lines += [
        f"| {g['dataset']} | {g['aggregator']} | {g['dp_noise'] or 'off'} | {g['upload']} "
        f"| {g['gain']:+.1%} ± {g['gain_ci']:.1%} | {g['seeds_at_10pct']}/{g['seeds']} |"
        for g in gains
    ]
    return "\n".join(lines) + "\n"


def figure(examples: dict, path: Path) -> None:
    """Per data set and aggregator: peers' true images above their matched reconstructions."""
    from gradguard.viz import save_rows

    rows, labels = [], []
    for (dataset, aggregator, upload), (truth, recon, scored) in examples.items():
        if scored is None:
            rows += [list(truth[:8]), []]
        else:
            order = scored.psnr.argsort()[::-1][:8].copy()
            rows += [
                [truth[scored.true_index[i]] for i in order],
                [recon[scored.recon_index[i]] for i in order],
            ]
        labels += [f"{dataset[:7]} true", f"{aggregator}/{upload}"]
    save_rows(rows, path, labels, title="Peers' images (top) and the curious client's best")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits, 2 rules, 2 seeds, 40 steps")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--datasets", default=",".join(cc.DATASETS))
    p.add_argument(
        "--rewrite",
        metavar="NAME",
        default=None,
        help="rewrite results/NAME.{json,md} from the runs already in NAME.json (no figure)",
    )
    p.add_argument(
        "--trained",
        action="store_true",
        help="a better-trained global model (1000 images x 5 epochs): mean and Krum, no DP",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.rewrite:
        old = json.loads((RESULTS / f"{args.rewrite}.json").read_text())
        settings = cc.CuriousSettings(**old["settings"])
        write(args.rewrite, old["runs"], None, settings, old["meta"]["seconds"])
        return
    settings = cc.CuriousSettings()
    datasets = [d for d in args.datasets.split(",") if d]
    if "fashion-mnist" in datasets and system_dir("fashion-mnist") is None:
        print("dataset-fashion-mnist is not installed: digits only")
        datasets.remove("fashion-mnist")
    if args.quick:
        settings = cc.with_settings(settings, iterations=40)
        cells = cc.grid(["digits"], ("mean", "krum"), (None, 0.01), ("honest", "outlier"), range(2))
    elif args.trained:
        settings = cc.with_settings(settings, warmup_examples=1000, warmup_epochs=5)
        cells = cc.grid(
            datasets, ("mean", "krum"), (None,), ("honest", "outlier"), range(args.seeds)
        )
    else:
        cells = cc.grid(datasets, seeds=range(args.seeds))
    name = "curious_client" + ("_quick" if args.quick else "_trained" if args.trained else "")
    RESULTS.mkdir(exist_ok=True)
    start = time.perf_counter()
    rows, examples = [], {}
    for i, cell in enumerate(cells):
        row = cc.run_cell(cell, settings)
        truth, recon, scored = row.pop("images")
        if cell.seed == 0 and cell.dp_noise is None and cell.upload in ("honest", "outlier"):
            examples[(cell.dataset, cell.aggregator, cell.upload)] = (truth, recon, scored)
        rows.append(row)
        print(
            f"[{i + 1}/{len(cells)}] {cell.dataset} {cell.aggregator} dp={cell.dp_noise} "
            f"{cell.upload} seed {cell.seed}: PSNR {row['psnr_mean']:.2f} (best "
            f"{row['psnr_best']:.2f}, baseline {row['baseline_psnr']:.2f}), acc "
            f"{row['accuracy']:.3f}, {row['seconds']:.1f} s",
            flush=True,
        )
        nxt = cells[i + 1] if i + 1 < len(cells) else None
        if nxt is None or (nxt.dataset, nxt.seed) != (cell.dataset, cell.seed):
            write(name, rows, examples, settings, time.perf_counter() - start)


def write(name, rows, examples, settings, seconds) -> None:
    summary = cc.summarize(rows)
    gains = cc.paired_gains(rows)
    meta = {
        "cells": len(rows),
        "seeds": len({r["seed"] for r in rows}),
        "seconds": seconds,
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    payload = {
        "settings": asdict(settings),
        "meta": meta,
        "summary": summary,
        "gain_over_mean": gains,
        "runs": rows,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    (RESULTS / f"{name}.md").write_text(markdown(summary, gains, settings, meta))
    if examples is not None:
        figure(examples, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
