"""The effective-vs-stealthy frontier (issue 8; seed 000's central claim, section 6).

Seed 000 argues that no malicious-server attack is both effective and stealthy. An
adaptive attacker (anchors.md: Carlini & Wagner 2017, Tramer et al. 2020) reads every
detector and its thresholds and turns *disguise dials* that keep the leak but move what the
checks look at. Each attack family declares its dials (``Attack.dials``: option -> values,
the textbook value first) and the combination a white-box attacker would pick
(``Attack.adaptive``). For every dial value this experiment runs the attack for real (one
client round, the attack's own decoder, Hungarian-matched PSNR against the true batch) and
every registered detector plus the default Guard on the model exactly as the client
received it, with the client's own template and local data. A point is *effective and
stealthy* when it leaks more than the honest model of the same architecture and batch size
and a detector's ``score`` (largest value / threshold; >= 1 flags) stays below 1.
"""

from __future__ import annotations

import copy
import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from gradguard.attacks import ATTACKS
from gradguard.attacks.inversion.feature_inversion import FixedBatch, rows_exposure
from gradguard.data import train_test
from gradguard.detect import Guard, GuardConfig
from gradguard.detect.layers import linears
from gradguard.experiments.harness import (
    GUARD,
    default_detectors,
    inspect_all,
    markdown_table,
    measure,
)
from gradguard.experiments.harness import progress as progress_bar
from gradguard.fl import LocalTraining, local_update
from gradguard.metrics import match

#: The default Guard of a client with no previous model (its first round).
FIRST = "guard-first"


@dataclass(frozen=True)
class Family:
    """One attack on one model, data set and client batch size, swept along its dials."""

    label: str
    attack: str
    model: str = "mlp"
    dataset: str = "digits"
    batch: int = 64
    options: dict[str, Any] = field(default_factory=dict)
    leak: str = "leaked_fraction"  # or "psnr_max": the best matched image (fishing)
    skip_dials: tuple[str, ...] = ()  # dials that do nothing on this model
    single_dials: bool = True  # False: only the textbook and adaptive points


#: Dials that only act on convolutions (the pass-through): no-ops on ``mlp``.
CONV_DIALS = ("conv_mix", "honest_channels", "bend")


def default_families(dataset: str = "digits", quick: bool = False) -> tuple[Family, ...]:
    """Every malicious-server family with dials: analytic attacks at batch 64, fishing at 8."""
    iters = {"iterations": 100 if quick else 200}
    fams = [
        Family("imprint/mlp", "imprint", "mlp", dataset, 64, {"bins": 256}, skip_dials=CONV_DIALS),
        Family("imprint/convnet", "imprint", "convnet", dataset, 64, {"bins": 256}),
        Family(
            "curious/mlp", "curious", "mlp", dataset, 64, {"neurons": 1000}, skip_dials=CONV_DIALS
        ),
        Family("curious/convnet", "curious", "convnet", dataset, 64, {"neurons": 1000}),
        # the adaptive traps at a client batch of 16 (half of 256 rows traps)
        Family(
            "curious/mlp-b16",
            "curious",
            "mlp",
            dataset,
            16,
            {"neurons": 256},
            skip_dials=CONV_DIALS,
            single_dials=False,
        ),
        Family(
            "curious/convnet-b16",
            "curious",
            "convnet",
            dataset,
            16,
            {"neurons": 256},
            single_dials=False,
        ),
        Family("fishing-class/convnet", "fishing-class", "convnet", dataset, 64, iters, "psnr_max"),
        Family(
            "fishing-feature/convnet", "fishing-feature", "convnet", dataset, 64, iters, "psnr_max"
        ),
    ]
    return tuple(f for f in fams if not quick or f.model == "mlp" or f.leak == "psnr_max")


def attack_class(name: str):
    module, cls = ATTACKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def points(fam: Family, quick: bool = False) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(dial, value, options)`` per point: each dial swept alone, then ``adaptive``, then
    the adaptive combination with one dial moved (``Attack.adaptive_sweep``: the white-box
    attacker's next answers to the detectors that flag ``adaptive``)."""
    klass = attack_class(fam.attack)
    dials: dict[str, tuple] = dict(getattr(klass, "dials", {}) or {})
    out: list[tuple[str, Any, dict[str, Any]]] = [("textbook", None, {})]
    for dial, values in dials.items() if fam.single_dials else ():
        if dial in fam.skip_dials:
            continue
        vals = list(values[1:])
        if quick and len(vals) > 2:
            vals = [vals[0], vals[-1]]
        out += [(dial, v, {dial: v}) for v in vals]
    adaptive = getattr(klass, "adaptive", None)
    if adaptive:
        chosen = {k: v for k, v in adaptive.items() if k not in fam.skip_dials}
        out.append(("adaptive", "", chosen))
        for dial, values in (getattr(klass, "adaptive_sweep", None) or {}).items():
            if dial in fam.skip_dials:
                continue
            vals = list(values)
            if quick and len(vals) > 2:
                vals = [vals[0], vals[-1]]
            # a value may be several dials at once (a dict): the attacker's combined answer
            out += [
                (f"adaptive+{dial}", v, {**chosen, **(v if isinstance(v, dict) else {dial: v})})
                for v in vals
            ]
    return out


def honest_inversion_psnr(result) -> float:
    """Best matched PSNR of the same inversion (images, labels, iterations) run on the
    gradient of the model before the head was rewritten (fishing's honest baseline)."""
    from gradguard.attacks.inversion.inverting import invert

    base = result.secrets["base_model"]
    k = max(1, len(result.reconstruction.images))
    batch = FixedBatch(result.originals, result.labels)
    g = local_update(base, batch, LocalTraining(batch_size=len(batch), fedsgd=True))
    labels = torch.full((k,), int(result.secrets["target_class"]))
    shape = (k, *result.originals.shape[1:])
    images, _ = invert(base, g.as_gradient(), labels, shape, result.attacker.config())
    return float(match(result.originals, images).psnr.max())


def honest_exposure(result, threshold_db: float) -> float:
    """Share of the batch the per-row decoder ``dW_i / db_i`` recovers from the *honest*
    model's FedSGD gradient on its first linear layer (seed 000 A.1.1; anchors: ~20% on a
    trained mlp at batch 64); behind convolutions each decoded layer input is inverted to
    the image with the model's own Jacobian (:func:`.feature_inversion.rows_exposure`)."""
    return rows_exposure(result.honest, result.originals, result.labels, threshold_db).share


def sees_features(model: torch.nn.Module, image_shape: tuple[int, ...]) -> bool:
    """True when the first linear layer reads a feature map rather than the image."""
    layer = model.get_submodule(linears(model)[0])
    return layer.in_features != math.prod(image_shape)


def run_point(
    fam: Family,
    dial: str,
    value: Any,
    options: dict[str, Any],
    detectors: list[str],
    seed: int = 0,
    threshold_db: float = 30.0,
    data_samples: int = 1000,
) -> dict[str, Any]:
    """One attacked round at one dial setting, scored, and every detector on the model."""
    from gradguard.bench.attack_round import run_attack

    result = run_attack(
        fam.attack,
        dataset=fam.dataset,
        model=fam.model,
        batch_size=fam.batch,
        seed=seed,
        psnr_threshold=threshold_db,
        **{**fam.options, **options},
    )
    local = train_test(fam.dataset, limit=data_samples, seed=seed)[0]
    received = {k: v.detach() for k, v in result.manipulated.state_dict().items()}
    template = copy.deepcopy(result.honest)
    honest_state = {k: v.detach() for k, v in result.honest.state_dict().items()}
    # the client accepted the honest model last round (every round after its first) ...
    outcomes = inspect_all(received, template, local, detectors, previous=honest_state)
    # ... and on first contact it has nothing to compare with
    outcomes[FIRST] = measure(
        FIRST, lambda: Guard(GuardConfig(), template=template, data=local).check(received)
    )
    psnr = result.match.psnr
    row = {
        "family": fam.label,
        "attack": fam.attack,
        "model": fam.model,
        "dataset": fam.dataset,
        "batch": fam.batch,
        "seed": seed,
        "dial": dial,
        "value": value,
        "options": options,
        "leaked_fraction": result.leaked_fraction,
        "leaked": int(result.match.leaked(threshold_db)),
        "psnr_mean": result.psnr_mean,
        "psnr_max": float(psnr.max()) if len(psnr) else 0.0,
        "scores": {n: o.score for n, o in outcomes.items()},
        "flagged": {n: o.flagged for n, o in outcomes.items()},
        "verified": {n: o.verified for n, o in outcomes.items()},
        "errors": {n: o.error for n, o in outcomes.items() if o.error},
        "guard_summary": outcomes[GUARD].summary,
    }
    if fam.leak == "leaked_fraction" and sees_features(result.honest, result.originals.shape[1:]):
        # the honest baseline's decoder (rows + inversion) on the received model too
        rows = rows_exposure(result.manipulated, result.originals, result.labels, threshold_db)
        row["rows_leaked_fraction"] = rows.share
    if dial == "textbook":
        # fishing is judged by its best image against the honest inversion, not by shares
        fishing = fam.leak != "leaked_fraction"
        row["honest_leaked_fraction"] = 0.0 if fishing else honest_exposure(result, threshold_db)
        if isinstance(result.secrets, dict) and "base_model" in result.secrets:
            row["honest_psnr_max"] = honest_inversion_psnr(result)
        honest = inspect_all(honest_state, copy.deepcopy(result.honest), local, detectors)
        honest[FIRST] = honest[GUARD]
        row["honest_scores"] = {n: o.score for n, o in honest.items()}
        row["honest_flagged"] = {n: o.flagged for n, o in honest.items()}
    return row


@dataclass(frozen=True)
class FrontierConfig:
    families: tuple[Family, ...]
    seeds: tuple[int, ...] = (0,)
    detectors: tuple[str, ...] = ()  # empty: every registered detector
    threshold_db: float = 30.0
    quick: bool = False
    #: Only these points (``dial`` or ``dial=value``; the textbook point is always run).
    only: tuple[str, ...] = ()


def run(config: FrontierConfig, show_progress: bool = True) -> dict[str, Any]:
    detectors = list(config.detectors) or default_detectors()
    plan = [
        (fam, *p, seed)
        for fam in config.families
        for p in points(fam, config.quick)
        for seed in config.seeds
        if not config.only or p[0] == "textbook" or {p[0], f"{p[0]}={p[1]}"} & set(config.only)
    ]
    rows = []
    with progress_bar("frontier", len(plan), show_progress) as (bar, task):
        for fam, dial, value, options, seed in plan:
            try:
                rows.append(
                    run_point(fam, dial, value, options, detectors, seed, config.threshold_db)
                )
            except Exception as e:  # noqa: BLE001 - a dial the attack rejects is a result too
                rows.append(
                    {
                        "family": fam.label,
                        "dial": dial,
                        "value": value,
                        "seed": seed,
                        "error": f"{type(e).__name__}: {e}",
                    }
                )
            bar.advance(task)
    return {
        "detectors": detectors,
        "threshold_db": config.threshold_db,
        "seeds": list(config.seeds),
        "rows": rows,
        "evasions": evasions(rows),
    }


def best_leak(row: dict[str, Any]) -> float:
    """The larger of the attack's own decoder and rows + inversion on the received model."""
    return max(row.get("leaked_fraction", 0.0), row.get("rows_leaked_fraction") or 0.0)


def evasions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points that leak more than the honest model yet pass a detector (score < 1). The leak
    is :func:`best_leak`; the honest share is the same rows (+ inversion) decoder's."""
    textbook = [r for r in rows if r.get("dial") == "textbook" and "error" not in r]
    # per family and seed: each seed's honest model sees that seed's batch
    honest = {
        (r["family"], r.get("seed", 0)): r.get("honest_leaked_fraction", 0.0) for r in textbook
    }
    honest_db = {(r["family"], r.get("seed", 0)): r.get("honest_psnr_max", 15.0) for r in textbook}
    out = []
    for r in rows:
        if "error" in r:
            continue
        key = (r["family"], r.get("seed", 0))
        leak = best_leak(r)
        leaks = (
            leak > honest.get(key, 0.0)
            if leak > 0
            else r["psnr_max"] >= honest_db.get(key, 15.0) + 5.0
        )
        if not leaks:
            continue
        passed = sorted(n for n, flag in r["flagged"].items() if not flag)
        if passed:
            out.append(
                {
                    "family": r["family"],
                    "dial": r["dial"],
                    "value": r["value"],
                    "leaked_fraction": r["leaked_fraction"],
                    "rows_leaked_fraction": r.get("rows_leaked_fraction"),
                    "seed": r.get("seed", 0),
                    "honest_leaked_fraction": honest.get(key, 0.0),
                    "psnr_max": r["psnr_max"],
                    "passes": passed,
                }
            )
    return out


def to_markdown(result: dict[str, Any]) -> str:
    dets = result["detectors"] + [GUARD, FIRST]
    lines = [
        "# Effective vs stealthy: leakage against each detector as the disguise is dialled up\n",
        f"Leakage: the attack's own decoder, Hungarian-matched, >= {result['threshold_db']:g} dB "
        "(`psnr_max`: best matched image, fishing). `rows+inv`: the per-row decoder "
        "`dW_i / db_i` on the received model's first linear layer, each decoded input "
        "inverted to the image by Gauss-Newton with the model's own Jacobian where that "
        "layer reads a feature map (convnets; gradguard/attacks/inversion/"
        "feature_inversion.py). Cells: detector score = value / threshold "
        "(>= 1 flags; `F` flagged). `honest`: the honest model of the same architecture and "
        "batch (the same rows (+ inversion) decoder on its own update; for fishing the same "
        "inversion on the honest gradient; detector scores). A point leaks when the larger "
        "of `leaked` and `rows+inv` exceeds the honest share; a fishing point when its best "
        "image is 5 dB or more above the honest inversion. Detectors and `guard` see the "
        "honest model as the "
        "client's last accepted one; `guard-first` is the default Guard on first contact "
        "(no previous model).\n",
    ]
    headers = ["family", "dial", "value", "leaked", "rows+inv", "psnr_max", *dets]
    table = []
    several = len(result.get("seeds", [0])) > 1

    def label(r: dict[str, Any]) -> str:
        return f"{r['family']} (seed {r.get('seed', 0)})" if several else r["family"]

    for r in result["rows"]:
        if "error" in r:
            table.append([label(r), r["dial"], r["value"], "error", r["error"][:60]])
            continue
        if r["dial"] == "textbook" and "honest_scores" in r:
            table.append(
                [
                    label(r),
                    "honest",
                    "",
                    f"{r['honest_leaked_fraction']:.2f}",
                    f"{r['honest_leaked_fraction']:.2f}" if "rows_leaked_fraction" in r else "",
                    f"{r['honest_psnr_max']:.1f}" if "honest_psnr_max" in r else "",
                    *(_cell(r["honest_scores"][d], r["honest_flagged"][d]) for d in dets),
                ]
            )
        table.append(
            [
                label(r),
                r["dial"],
                r["value"],
                f"{r['leaked_fraction']:.2f} ({r['leaked']}/{r['batch']})",
                _share(r.get("rows_leaked_fraction"), r["batch"]),
                f"{r['psnr_max']:.1f}",
                *(_cell(r["scores"][d], r["flagged"][d]) for d in dets),
            ]
        )
    width = len(headers)
    lines.append(markdown_table(headers, [row + [""] * (width - len(row)) for row in table]))
    ev = result["evasions"]
    lines.append(
        f"\n{len(ev)} leaking points pass at least one detector; "
        f"{sum(GUARD in e['passes'] for e in ev)} pass the default Guard, "
        f"{sum(FIRST in e['passes'] for e in ev)} pass it on first contact.\n"
    )
    for e in ev:
        if GUARD in e["passes"] or FIRST in e["passes"]:
            which = "the Guard" if GUARD in e["passes"] else "the Guard on first contact"
            lines.append(
                f"- passes {which}: {label(e)} {e['dial']}={e['value']} "
                f"(leaked {e['leaked_fraction']:.2f}"
                + (
                    f", rows+inv {e['rows_leaked_fraction']:.2f}"
                    if e.get("rows_leaked_fraction") is not None
                    else ""
                )
                + f", honest {e.get('honest_leaked_fraction', 0.0):.2f}, "
                f"best {e['psnr_max']:.1f} dB)\n"
            )
    return "\n".join(lines)


def _share(share: float | None, batch: int) -> str:
    return "" if share is None else f"{share:.2f} ({round(share * batch)}/{batch})"


def _cell(score: float, flagged: bool) -> str:
    if not math.isfinite(score):
        return "inf F" if flagged else "inf"
    text = f"{score:.3g}" if score < 1e4 else f"{score:.1e}"
    return text + (" F" if flagged else "")


def plot(result: dict[str, Any], path: str) -> None:
    """One panel per family: leakage (x) vs each detector's score / threshold (y, log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    fams = list(dict.fromkeys(r["family"] for r in rows))
    if not fams:
        return
    # the curves the claim is about: the Guard, the paper's warm-up readings, D-SNR, ours
    shown = (GUARD, FIRST, "exposure", "forensics", "warmup+", "warmup", "warmup-paper", "dsnr")
    dets = [d for d in shown if d in result["detectors"] or d in (GUARD, FIRST)]
    markers = "o*sD^vPX"
    cols = min(3, len(fams))
    nrows = math.ceil(len(fams) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.2 * nrows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, fam in zip(axes.flat, fams, strict=False):
        fr = [r for r in rows if r["family"] == fam]
        key = "psnr_max" if fr[0]["attack"].startswith("fishing") else "leaked_fraction"
        honest = next((r.get("honest_leaked_fraction") for r in fr if r["dial"] == "textbook"), 0)
        for i, d in enumerate(dets):
            xs = [r[key] for r in fr]
            ys = [max(min(r["scores"][d], 1e9), 1e-4) for r in fr]
            ax.scatter(
                xs,
                ys,
                s=40 if d == GUARD else 18,
                color=colours(i),
                marker=markers[i],
                label=d,
                alpha=0.8,
            )
        fair = [r for r in fr if r.get("rows_leaked_fraction") is not None]
        if fair:
            ax.scatter(
                [r["rows_leaked_fraction"] for r in fair],
                [max(min(r["scores"][GUARD], 1e9), 1e-4) for r in fair],
                s=60,
                facecolors="none",
                edgecolors=colours(0),
                marker="o",
                label=f"{GUARD} at rows+inv leak",
            )
        ax.axhline(1.0, color="k", lw=1, ls="--")
        if key == "psnr_max":
            honest = next((r.get("honest_psnr_max") for r in fr if r["dial"] == "textbook"), 0)
        if honest:
            label = "honest (rows+inv)" if fair else "honest"
            ax.axvline(honest, color="grey", lw=1, ls=":", label=label)
        ax.set_yscale("log")
        ax.set_title(fam, fontsize=10)
        ax.set_xlabel("leaked fraction (>= 30 dB)" if key == "leaked_fraction" else "best dB")
        ax.set_ylabel("score / threshold (>= 1 flags)")
        ax.fill_between(
            [min(ax.get_xlim()[0], 0), ax.get_xlim()[1]],
            1e-4,
            1.0,
            color="red",
            alpha=0.05,
            label="passes",
        )
    for ax in list(axes.flat)[len(fams) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Effective vs stealthy: below the dashed line a detector passes the model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
