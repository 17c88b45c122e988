"""Disguised fishing: leak of each dial value against every detector's verdict.

For each fishing attack, each dial of its ``dials`` (one at a time, the others at the
textbook value), and its ``adaptive`` combination: one attacked FedSGD round
(:func:`gradguard.bench.attack_round.run_attack`) scored by the best matched PSNR / SSIM of the
inverted images against the client's batch, next to the same inversion (same images, label,
settings) of the honest model's gradient on the same batch; then every detector on the
manipulated model, each run on its own (as ``gradguard scan FILE --detectors NAME`` would),
on the first 1000 training images as the client's local data (scan's default).

    python benchmarks/fishing_disguises.py --dataset digits --model mlp --batch 64 \\
        --iterations 200 [--attack fishing-class] [--only-adaptive]

writes benchmarks/results/fishing_disguises-<dataset>-<model>-b<batch>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gradguard.attacks import attack_class
from gradguard.attacks.inversion.inverting import invert
from gradguard.bench.attack_round import run_attack
from gradguard.data import Dataset, train_test
from gradguard.detect import DETECTORS, Guard, GuardConfig, get_detector
from gradguard.fl import LocalTraining, local_update
from gradguard.metrics import match
from gradguard.models import build_model

RESULTS = Path(__file__).parent / "results"
ATTACKS = ("fishing-class", "fishing-feature")


def variants(name: str, only_adaptive: bool, last_only: bool) -> list[tuple[str, dict]]:
    klass = attack_class(name)
    out = [("textbook", {})]
    if not only_adaptive:
        for dial, values in klass.dials.items():
            chosen = values[-1:] if last_only else values[1:]
            out += [(f"{dial}={v:g}", {dial: v}) for v in chosen]
    out.append(("adaptive", dict(klass.adaptive)))
    return out


def flag_rates(state, template, local, draws: int) -> dict[str, float]:
    """Share of ``draws`` random local samples (detector seeds) on which D-SNR and warmup+
    flag: both look at 32 local images, so whether a target sample is among them is luck."""
    from gradguard.detect.base import Context

    ctx = Context(template, local, None, None)
    out = {}
    for name in ("dsnr", "warmup+"):
        hits = [get_detector(name, seed=s).inspect(state, ctx).malicious for s in range(draws)]
        out[name] = sum(hits) / draws
    return out


def detectors(state, model: str, dataset: str) -> dict[str, dict]:
    local = train_test(dataset, limit=1000)[0]
    template = build_model(model, local.image_shape, local.num_classes)
    out = {}
    for name in DETECTORS:
        guard = Guard(GuardConfig(detectors=(name,)), template=template, data=local)
        v = guard.check(state)
        out[name] = {
            "flagged": bool(v.malicious or not v.verified),
            "score": float(v.score),
            "flagged_checks": sorted({f.check for f in v.findings if f.flagged}),
            "checks": {
                f.check: round(float(f.value), 4)
                for f in v.findings
                if f.flagged or f.check in ("forensics.bias", "dsnr", "warmup+.z", "warmup.z")
            },
        }
    return out


def run_case(name, dataset, model, batch, seed, iterations, label, options, draws=20) -> dict:
    r = run_attack(
        name, dataset, model, batch_size=batch, seed=seed, iterations=iterations, **options
    )
    sec, rec = r.secrets, r.reconstruction
    t = sec["target_class"]
    k = max(1, len(rec.images))
    base = sec["base_model"]
    honest_grad = local_update(
        base, _batch(r), LocalTraining(batch_size=batch, fedsgd=True)
    ).as_gradient()
    honest_images, _ = invert(
        base,
        honest_grad,
        torch.full((k,), t),
        (k, *r.originals.shape[1:]),
        r.attacker.config(),
    )
    hm = match(r.originals, honest_images)
    state = {k_: v.detach() for k_, v in r.manipulated.state_dict().items()}
    det = detectors(state, model, dataset)
    local = train_test(dataset, limit=1000)[0]
    template = build_model(model, local.image_shape, local.num_classes)
    rates = flag_rates(state, template, local, draws)
    best = int(r.match.psnr.argmax()) if len(r.match.psnr) else None
    return {
        "attack": name,
        "variant": label,
        "options": options,
        "dataset": dataset,
        "model": model,
        "batch": batch,
        "seed": seed,
        "iterations": iterations,
        "target_class": t,
        "targets_in_batch": int((r.labels == t).sum()),
        "images": len(rec.images),
        "psnr_best": float(r.match.psnr[best]) if best is not None else float("nan"),
        "ssim_best": float(r.match.ssim[best]) if best is not None else float("nan"),
        "honest_psnr_best": float(hm.psnr.max()),
        "honest_ssim_best": float(hm.ssim[int(hm.psnr.argmax())]),
        "flagged_by": [d for d, v in det.items() if v["flagged"]],
        "flag_rate": rates,
        "draws": draws,
        "detectors": det,
    }


def _batch(r):
    return Dataset(r.originals, r.labels, r.secrets["num_classes"], "client batch")


def _flags(row: dict) -> str:
    out = []
    for name in row["flagged_by"]:
        checks = [c for c in row["detectors"][name]["flagged_checks"] if c.startswith("forensics.")]
        shown = [c.removeprefix("forensics.") for c in checks if name == "forensics"]
        out.append(name + (f" ({', '.join(shown)})" if shown else ""))
    return ", ".join(out)


def markdown(rows: list[dict]) -> str:
    head = (
        "| attack | variant | target PSNR / SSIM | honest PSNR / SSIM | targets (inverted) "
        "| flagged by (checks) | D-SNR | bias ext. | warmup+ Z/360 | D-SNR / warmup+ flag rate |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        d = r["detectors"]
        bias = d["forensics"]["checks"].get("forensics.bias", float("nan"))
        lines.append(
            f"| {r['attack']} | {r['variant']} | {r['psnr_best']:.1f} / {r['ssim_best']:.2f} | "
            f"{r['honest_psnr_best']:.1f} / {r['honest_ssim_best']:.2f} | "
            f"{r['targets_in_batch']} ({r['images']} inv.) | "
            f"{_flags(r) or 'none'} | {d['dsnr']['score']:.3g} | "
            f"{bias:.3g} | {d['warmup+']['score']:.3g} | "
            f"{r['flag_rate']['dsnr']:.0%} / {r['flag_rate']['warmup+']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--attack", default=None, choices=ATTACKS)
    p.add_argument("--only-adaptive", action="store_true", help="textbook and adaptive only")
    p.add_argument("--last-only", action="store_true", help="each dial at its last value only")
    p.add_argument("--draws", type=int, default=20, help="detector seeds for the flag rates")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in [args.attack] if args.attack else ATTACKS:
        for label, options in variants(name, args.only_adaptive, args.last_only):
            row = run_case(
                name,
                args.dataset,
                args.model,
                args.batch,
                args.seed,
                args.iterations,
                label,
                options,
                args.draws,
            )
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"fishing_disguises-{args.dataset}-{args.model}-b{args.batch}"
    stem += f"-{args.attack}" if args.attack else ""
    stem += f"-seed{args.seed}" if args.seed else ""
    stem += "-adaptive" if args.only_adaptive else ("-last" if args.last_only else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
