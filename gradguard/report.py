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
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from gradguard.bench.records import RoundReport, RunResult, VerdictRecord
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
    # a huge finite score (a zeroed layer divides by ~0) would overflow the log axis
    cap = min(max(finite, default=1.0) * 1.2, 1e6) or 1.0
    for x in run.rounds:
        for v in x.verdicts:
            score = min(v.score, cap) if math.isfinite(v.score) else cap
            ax.scatter(
                x.round + 0.08 * (v.client_id - 1.5),
                max(score, 1e-6),
                color="#c44e52" if v.malicious else "#55a868",
                s=18,
            )
    ax.axhline(1.0, color="#444", ls="--", lw=1)
    ax.annotate(
        "threshold: a score >= 1 flags",
        (0.01, 1.0),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=8,
        color="#444",
    )
    ax.set_yscale("log")
    ax.set_xlabel("round (shaded: server malicious)")
    ax.set_ylabel("guard score (log)")
    ax.set_title(
        "guard score = largest measured value / its threshold\n"
        "green: accepted, red: flagged (client abstained); unverifiable: drawn at the top",
        fontsize=8,
    )
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


def _leak_section(name: str, r: RoundReport, out: Path, threshold_db: float = 30.0) -> str:
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
            f"images leaked (PSNR >= {threshold_db:g} dB)",
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


_MORE = re.compile(r"\s*\(\+\d+ more\)")


def refusal_reason(v: VerdictRecord) -> str:
    """Why a client refused, without its own exposure count and the "(+N more)" tail: the
    part identical across clients that received the same model."""
    text = v.summary
    if text.startswith("this round") and "; " in text:
        text = text.split("; ", 1)[1]
    return _MORE.sub("", text).strip()


def grouped_refusals(run: RunResult) -> list[tuple[str, list[tuple[int, VerdictRecord]]]]:
    """Refusals grouped by reason, in order of first appearance: [(reason, [(round, v)])]."""
    groups: dict[str, list[tuple[int, VerdictRecord]]] = {}
    for r in run.rounds:
        for v in r.verdicts:
            if not v.allowed:
                groups.setdefault(refusal_reason(v), []).append((r.round, v))
    return list(groups.items())


def _exposure_text(items: list[tuple[int, VerdictRecord]]) -> str:
    known = [(rnd, v) for rnd, v in items if v.exposed is not None and v.batch]
    if not known:
        return ""
    total = sum(v.exposed for _, v in known)
    batch = known[0][1].batch
    per = ", ".join(f"client {v.client_id} (round {rnd}): {v.exposed}" for rnd, v in known)
    if total == 0:
        return f"The exposure audit found none of the clients' {batch} images exposed."
    return (
        f"Had they trained, each would have exposed part of its batch of {batch} images at "
        f"&ge; 30 dB to the server's decoder, <b>{total} images in all</b> ({html.escape(per)})."
    )


def _headline(scenario: Scenario, runs: Mapping[str, RunResult]) -> str:
    """The verdict first: what the guard refused and why, with the exposure it prevented."""
    gua, ung = runs.get("guarded"), runs.get("unguarded")
    parts = []
    if ung is not None and gua is not None:
        parts.append(
            f"<p class='big'>Unguarded clients leaked <b class='bad'>{ung.leaked}</b> images; "
            f"guarded clients leaked <b class='good'>{gua.leaked}</b>.</p>"
        )
    if gua is None:
        return "".join(parts)
    groups = grouped_refusals(gua)
    if not groups:
        parts.append("<p>The guarded clients never refused a model.</p>")
    for reason, items in groups:
        rounds = sorted({rnd for rnd, _ in items})
        clients = sorted({v.client_id for _, v in items})
        first = items[0][1]
        exposed = (
            f"this round would expose {first.exposed} of your {first.batch} images; "
            if first.exposed is not None and first.batch
            else ""
        )
        parts.append(
            "<div class='reason'>"
            f"<p><b>Round{'s' if len(rounds) > 1 else ''} {', '.join(map(str, rounds))}: "
            f"{len(items)} refusal{'s' if len(items) > 1 else ''} "
            f"(client{'s' if len(clients) > 1 else ''} {', '.join(map(str, clients))})"
            f"</b> &mdash; {html.escape(exposed)}{html.escape(reason)}</p>"
            f"<p>{_exposure_text(items)}</p></div>"
        )
    false_alarms = gua.false_alarms
    if false_alarms:
        parts.append(
            f"<p class='bad'>{false_alarms} flag(s) in rounds where the server was honest "
            "(false alarms): see the per-client table.</p>"
        )
    return "".join(parts)


def _client_rows(runs: Mapping[str, RunResult]) -> str:
    """One row per round and client: targeted, the guard's decision, leakage either way."""
    gua, ung = runs.get("guarded"), runs.get("unguarded")
    base = gua or ung
    if base is None:
        return ""
    rows = []
    for i, r in enumerate(base.rounds):
        g = gua.rounds[i] if gua else None
        u = ung.rounds[i] if ung else None
        verdicts = {v.client_id: v for v in g.verdicts} if g else {}
        leaks = {k.client_id: k for k in u.leaks} if u else {}
        for c in sorted({*verdicts, *leaks, *r.targeted, *(g.abstained if g else [])}):
            v, k = verdicts.get(c), leaks.get(c)
            decision = "-" if v is None else ("trained" if v.allowed else "refused")
            cls = "" if v is None or v.allowed else " class='flag'"
            rows.append(
                f"<tr{cls}>"
                + "".join(
                    [
                        _cell(r.round),
                        _cell(c),
                        _cell("yes" if c in r.targeted else "-"),
                        _cell(decision),
                        _cell("-" if v is None else _score(v.score)),
                        _cell(f"{v.exposed} / {v.batch}" if v is not None and v.batch else "-"),
                        _cell(f"{k.leaked} of {k.recovered}" if k else "-"),
                        _cell(f"{k.psnr_mean:.1f}" if k else "-"),
                    ]
                )
                + "</tr>"
            )
    return "\n".join(rows)


def _score(value: float) -> str:
    return "unverifiable" if not math.isfinite(value) else f"{value:.3g}"


def _detector_table(run: RunResult) -> str:
    """Every detector's score per round and client (red: it flagged)."""
    names: list[str] = []
    for r in run.rounds:
        for v in r.verdicts:
            for n in v.detectors:
                if n not in names:
                    names.append(n)
    if not names:
        return (
            "<p>This engine reports only the guard's overall verdict (no per-detector "
            "breakdown).</p>"
        )
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for r in run.rounds:
        for v in r.verdicts:
            cells = []
            for n in names:
                d = v.detectors.get(n)
                if d is None or "skipped" in d:
                    why = d.get("skipped", "not configured") if d else "not configured"
                    cells.append(f"<td class='muted' title='{html.escape(why)}'>-</td>")
                    continue
                score = d.get("score")
                score = float(score) if not isinstance(score, str) else math.inf
                flag = d.get("malicious") or not d.get("verified", True)
                title = html.escape(d.get("reason") or "below its thresholds")
                cells.append(
                    f"<td class='{'flag' if flag else 'ok'}' title='{title}'>"
                    f"{_score(score)}{' flagged' if flag else ''}</td>"
                )
            rows.append(f"<tr><td>{r.round}</td><td>{v.client_id}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>round</th><th>client</th>{head}</tr>\n" + "\n".join(rows) + "</table>"


def guard_cost(run: RunResult, clients: int) -> dict[str, float | None]:
    """Mean and largest time per inspection, and mean local training time per client round
    (None where the engine did not measure it); every client takes part in every round."""
    times = [v.elapsed_s for r in run.rounds for v in r.verdicts if v.elapsed_s > 0]
    trained = sum(clients - len(r.abstained) for r in run.rounds)
    train = sum(r.train_seconds for r in run.rounds)
    return {
        "inspect_mean_s": sum(times) / len(times) if times else None,
        "inspect_max_s": max(times) if times else None,
        "inspections": len(times),
        "train_mean_s": train / trained if train > 0 and trained else None,
    }


def _reproduce(scenario: Scenario, engine: str) -> str:
    targets = "all" if scenario.targets is None else ",".join(map(str, scenario.targets))
    engine = "flower" if engine == "flower-secagg" else engine  # the demo's name for it
    cmd = (
        f"gradguard demo --engine {engine} --dataset {scenario.dataset} --model "
        f"{scenario.model} --attack {scenario.attack} --clients {scenario.clients} --rounds "
        f"{scenario.rounds} --attack-rounds {','.join(map(str, scenario.attack_rounds))} "
        f"--targets {targets} --seed {scenario.seed}"
    )
    if scenario.train_limit is not None:
        cmd += f" --train-limit {scenario.train_limit}"
    if scenario.secure_aggregation:
        cmd += f" --secure-aggregation --refusal {scenario.refusal}"
    return cmd


def _config_section(
    scenario: Scenario, runs: Mapping[str, RunResult], summary: Mapping[str, object]
) -> str:
    from gradguard import __version__

    engine = str(summary.get("engine", next(iter(runs.values())).engine))
    cfg = "".join(
        f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in scenario.summary().items()
    )
    cost = ""
    if "guarded" in runs:
        c = guard_cost(runs["guarded"], scenario.clients)
        if c["inspect_mean_s"] is not None:
            cost = (
                f"<p><b>Guard cost</b>: {c['inspect_mean_s'] * 1000:.0f} ms per inspected model "
                f"on average (largest {c['inspect_max_s'] * 1000:.0f} ms, "
                f"{c['inspections']} inspections)"
            )
            if c["train_mean_s"] is not None:
                share = c["inspect_mean_s"] / c["train_mean_s"]
                cost += (
                    f", against {c['train_mean_s'] * 1000:.0f} ms of local training per client "
                    f"and round: {share:.0%} of a round's training."
                )
            else:
                cost += "; local training time is not measured by this engine."
            cost += "</p>"
    return (
        f"<p>gradguard {html.escape(__version__)}, engine <code>{html.escape(engine)}</code>. "
        f"Reproduce with:</p><pre>{html.escape(_reproduce(scenario, engine))}</pre>{cost}"
        f"<table><tr><th>setting</th><th>value</th></tr>{cfg}</table>"
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
                leaks.append(_leak_section(name, runs[name].rounds[i], out, scenario.threshold_db))
    facts = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
        for k, v in (summary or {}).items()
    )
    detectors = _detector_table(runs["guarded"]) if "guarded" in runs else "<p>No guarded run.</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradguard demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; margin: 4px 0; }}
.grid {{ border-top: 1px solid #ddd; margin-top: 1em; }} h4 {{ margin: 0.6em 0 0.2em; }}
.big {{ font-size: 1.3em; }} .bad {{ color: #b22; }} .good {{ color: #282; }}
.reason {{ border-left: 4px solid #c44e52; background: #fbf0f0; padding: 2px 12px;
  margin: 0.6em 0; }}
tr.flag td, td.flag {{ background: #f8dada; }} td.ok {{ background: #e6f4e6; }}
td.muted {{ color: #999; }} dt {{ font-weight: bold; margin-top: 0.4em; }}
pre {{ background: #f6f6f6; padding: 6px; white-space: pre-wrap; }}
</style></head><body>
<h1>gradguard demo: a server turns malicious</h1>
<p>{scenario.clients} clients train a <code>{html.escape(scenario.model)}</code> on
<code>{html.escape(scenario.dataset)}</code> for {scenario.rounds} rounds. In rounds
{", ".join(map(str, scenario.attack_rounds))} the server sends the
<code>{html.escape(scenario.attack)}</code>-manipulated model and reconstructs the clients'
images from their updates. Unguarded clients train on it; guarded clients check it first
and refuse it (they send nothing that round).</p>
<h2>Verdict</h2>
{_headline(scenario, runs)}
<h2>How to read this report</h2>
<dl>
<dt>recovered vs leaked</dt><dd>The attack returns <i>recovered</i> images: its
reconstructions from one client's update. Each is matched one-to-one to the client's true
images (Hungarian matching on PSNR). A true image counts as <i>leaked</i> when its match
reaches PSNR &ge; {scenario.threshold_db:g} dB, the level at which a reconstruction is a
recognisable copy of the image (pixel error about 3% of the range). Recovered images below
the line are blurred mixtures that reveal less.</dd>
<dt>guard score</dt><dd>Each detector measures values against thresholds; its score is the
largest <code>measured value / threshold</code>, so it flags at 1. The guard score of a
model is the largest score of the detectors that ran ("unverifiable": the model could not be
checked, and the client refuses it too).</dd>
<dt>exposure</dt><dd>The exposure audit runs the known decoders against the client's own
batch on the received model: "would expose N of your 64 images" counts the images it
recovers at &ge; {scenario.threshold_db:g} dB before anything is sent.</dd>
</dl>
<ul>{facts}</ul>
<h2>Per round</h2>
<table><tr><th>round</th><th>attack</th><th>clients abstained (guarded)</th>
<th>leaked unguarded</th><th>leaked guarded</th><th>acc. attack-free</th>
<th>acc. unguarded</th><th>acc. guarded</th></tr>
{_round_rows(runs)}
</table>
<h2>Per client</h2>
<p>The guarded run's decision, guard score and exposure for each client; leakage from the
same client in the unguarded run (leaked of recovered, mean PSNR of the matches).</p>
<table><tr><th>round</th><th>client</th><th>targeted</th><th>guarded: decision</th>
<th>guard score</th><th>would expose</th><th>unguarded: leaked</th>
<th>unguarded: mean PSNR dB</th></tr>
{_client_rows(runs)}
</table>
<h2>Every detector's verdict</h2>
<p>Scores of every detector the guard ran on each received model (the report runs them all
instead of stopping at the first flag; hover a cell for its reason).</p>
{detectors}
<h2>Accuracy and detection</h2>
{"".join(figures)}
<h2>What the server reconstructed (true images above, reconstructions below)</h2>
{"".join(leaks) or "<p>No attacked rounds.</p>"}
<h2>Configuration and cost</h2>
{_config_section(scenario, runs, summary or {})}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
