"""The demo's HTML report: what leaked, what the guard saw, what it cost in accuracy.

``write_report(out_dir, scenario, runs)`` writes ``index.html`` and its PNG figures
(matplotlib, Agg backend) into ``out_dir``: for every attacked round, a grid of the clients'
true images above what the server reconstructed from them, unguarded and guarded; the
guard's detection scores per round; the accuracy curves of the attack-free, unguarded and
guarded runs. The page links the PNGs by relative path, so the folder can be moved or
opened straight from disk.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from gradguard.bench.records import RoundReport, RunResult
from gradguard.bench.scenario import Scenario

LABELS = {"attack-free": "attack-free", "unguarded": "unguarded", "guarded": "guarded"}
COLORS = {"attack-free": "#4c72b0", "unguarded": "#c44e52", "guarded": "#55a868"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(true: torch.Tensor, recon: torch.Tensor, path: Path, title: str) -> None:
    """Two rows: true images above their matched reconstructions."""
    plt = _pyplot()
    n = max(1, len(true))
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n + 0.6, 2.6), squeeze=False)
    for row, (images, label) in enumerate(((true, "true"), (recon, "recovered"))):
        for i in range(n):
            ax = axes[row][i]
            ax.set_xticks([])
            ax.set_yticks([])
            if i < len(images):
                img = images[i].float().clamp(0, 1)
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy())
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_plot(
    runs: Mapping[str, RunResult], attack_rounds: tuple[int, ...], path: Path
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for r in attack_rounds:
        ax.axvspan(r - 0.4, r + 0.4, color="#f2c6c6", alpha=0.6, lw=0)
    for name, run in runs.items():
        ax.plot(
            [x.round for x in run.rounds],
            [x.accuracy for x in run.rounds],
            marker="o",
            ms=3,
            label=LABELS.get(name, name),
            color=COLORS.get(name),
        )
    ax.set_xlabel("round (shaded: server malicious)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def detection_plot(run: RunResult, attack_rounds: tuple[int, ...], path: Path) -> None:
    """The guard's score per client per round; flagged models in red."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for r in attack_rounds:
        ax.axvspan(r - 0.4, r + 0.4, color="#f2c6c6", alpha=0.6, lw=0)
    finite = [v.score for x in run.rounds for v in x.verdicts if math.isfinite(v.score)]
    cap = max(finite, default=1.0) * 1.2 or 1.0
    for x in run.rounds:
        for v in x.verdicts:
            score = v.score if math.isfinite(v.score) else cap
            ax.scatter(
                x.round + 0.08 * (v.client_id - 1.5),
                max(score, 1e-6),
                color="#c44e52" if v.malicious else "#55a868",
                s=18,
            )
    ax.set_yscale("log")
    ax.set_xlabel("round (shaded: server malicious)")
    ax.set_ylabel("guard score (log)")
    ax.set_title("green: accepted, red: flagged (client abstained)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(value: object) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _round_rows(runs: Mapping[str, RunResult]) -> str:
    unguarded, guarded = runs.get("unguarded"), runs.get("guarded")
    clean = runs.get("attack-free")
    base = guarded or unguarded or clean
    rows = []
    for i, r in enumerate(base.rounds):
        u = unguarded.rounds[i] if unguarded else None
        g = guarded.rounds[i] if guarded else None
        c = clean.rounds[i] if clean else None
        rows.append(
            "<tr>"
            + "".join(
                [
                    _cell(r.round),
                    _cell("yes" if r.attacked else "-"),
                    _cell(len(g.abstained) if g else "-"),
                    _cell(u.leaked if u else "-"),
                    _cell(g.leaked if g else "-"),
                    _cell(f"{c.accuracy:.3f}" if c else "-"),
                    _cell(f"{u.accuracy:.3f}" if u else "-"),
                    _cell(f"{g.accuracy:.3f}" if g else "-"),
                ]
            )
            + "</tr>"
        )
    return "\n".join(rows)


def _leak_section(name: str, r: RoundReport, out: Path) -> str:
    title = f"round {r.round}, {name}"
    if not r.leaks:
        who = ", ".join(str(c) for c in r.abstained) or "none"
        return (
            f"<div class='grid'><h4>{html.escape(title)}</h4><p>Nothing reconstructed: "
            f"the targeted clients abstained (clients {html.escape(who)}) and sent no "
            f"update.</p></div>"
        )
    parts = []
    for leak in r.leaks:
        if leak.true is None or leak.recon is None or len(leak.recon) == 0:
            continue
        fname = f"leak_{name}_round{r.round}_client{leak.client_id}.png"
        image_grid(
            leak.true,
            leak.recon,
            out / fname,
            f"client {leak.client_id}: {leak.leaked} of {leak.recovered} recovered "
            f"images leaked (PSNR >= threshold)",
        )
        parts.append(
            f"<img class='leak' src='{fname}' alt='true vs reconstructed images, "
            f"{html.escape(title)}, client {leak.client_id}'>"
        )
    return (
        f"<div class='grid'><h4>{html.escape(title)}: {r.leaked} images leaked</h4>"
        + "\n".join(parts)
        + "</div>"
    )


def write_report(
    out: Path | str,
    scenario: Scenario,
    runs: Mapping[str, RunResult],
    summary: Mapping[str, object] | None = None,
) -> Path:
    """Write ``index.html`` and figures into ``out``; return the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    accuracy_plot(runs, scenario.attack_rounds, out / "accuracy.png")
    figures = ["<img src='accuracy.png' alt='accuracy per round'>"]
    if "guarded" in runs:
        detection_plot(runs["guarded"], scenario.attack_rounds, out / "detection.png")
        figures.append("<img src='detection.png' alt='guard scores per round'>")
    leaks = []
    for i, r in enumerate((runs.get("unguarded") or runs["guarded"]).rounds):
        if not r.attacked:
            continue
        for name in ("unguarded", "guarded"):
            if name in runs:
                leaks.append(_leak_section(name, runs[name].rounds[i], out))
    verdicts = []
    if "guarded" in runs:
        for r in runs["guarded"].rounds:
            for v in r.verdicts:
                if v.malicious or not v.allowed:
                    verdicts.append(
                        f"<li>round {r.round}, client {v.client_id}: {html.escape(v.summary)}</li>"
                    )
    facts = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
        for k, v in (summary or {}).items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradguard demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; margin: 4px 0; }}
.grid {{ border-top: 1px solid #ddd; margin-top: 1em; }} h4 {{ margin: 0.6em 0 0.2em; }}
</style></head><body>
<h1>gradguard demo: a server turns malicious</h1>
<p>{scenario.clients} clients train a <code>{html.escape(scenario.model)}</code> on
<code>{html.escape(scenario.dataset)}</code> for {scenario.rounds} rounds. In rounds
{", ".join(map(str, scenario.attack_rounds))} the server sends the
<code>{html.escape(scenario.attack)}</code>-manipulated model and reconstructs the clients'
images from their updates. Unguarded clients train on it; guarded clients check it first
and abstain. An image counts as leaked when a reconstruction matches it at PSNR &ge;
{scenario.threshold_db:g} dB.</p>
<ul>{facts}</ul>
<h2>Per round</h2>
<table><tr><th>round</th><th>attack</th><th>clients abstained (guarded)</th>
<th>leaked unguarded</th><th>leaked guarded</th><th>acc. attack-free</th>
<th>acc. unguarded</th><th>acc. guarded</th></tr>
{_round_rows(runs)}
</table>
<h2>Accuracy and detection</h2>
{"".join(figures)}
<h2>What the server reconstructed (true images above, reconstructions below)</h2>
{"".join(leaks) or "<p>No attacked rounds.</p>"}
<h2>Why the guarded clients abstained</h2>
<ul>{"".join(verdicts) or "<li>they never did</li>"}</ul>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
