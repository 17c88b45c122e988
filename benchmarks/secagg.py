"""Attacks on secure aggregation, measured: LOKI and model inconsistency in-process, through
Flower's real SecAgg+, and each client's default-Guard verdict (issue 10).

    python benchmarks/secagg.py             # in-process + Flower SecAgg+ + verdicts
    python benchmarks/secagg.py --quick     # small rows only

Writes ``benchmarks/results/secagg.json`` and ``secagg.md``. In-process rows are
:func:`gradguard.bench.attack_round.run_attack` (gradguard's pairwise-masked secure sum);
Flower rows are :func:`gradguard.integrations.flower.secagg.attack_through_secagg` (the
clients run ``secaggplus_mod``, the server ``SecAggPlusWorkflow``), at Flower's defaults and
at the attacker's choice (quantisation range 2^30, the most Flower's int32 rounding allows;
clipping range 1.25 x the largest parameter sent; max_weight = the batch size).
Verdicts: each client runs ``Guard(template=honest model, data=its batch)`` on the model it
receives. Timings are wall-clock on a shared CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradguard.attacks import get_attack  # noqa: E402
from gradguard.attacks.server.imprint import Imprint  # noqa: E402
from gradguard.bench.attack_round import run_attack  # noqa: E402
from gradguard.data import train_test  # noqa: E402
from gradguard.detect.guard import Guard  # noqa: E402
from gradguard.models import build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ATTACKER = {
    "clipping_range": 0,
    "quantization_range": 2**30,
    "modulus_range": 2**40,
}
#: LOKI at scale 1 (no FedAvg drift compensation): its deltas are large enough for SecAgg+
LOKI_SCALE_1 = {"tap_scale": 1.0, "imprint_scale": 1.0, "head_scale": 1.0}
#: LOKI for SecAgg+: imprint rows scaled down 10x, so the clipping range (set by the largest
#: parameter sent) and with it Flower's float32 + quantisation floor drop 10x
LOKI_SECAGG = {"tap_scale": 1.0, "imprint_scale": 0.1, "head_scale": 1.0}


def in_process(rows: list[tuple]) -> list[dict[str, Any]]:
    out = []
    for attack, dataset, model, clients, batch, steps, options in rows:
        r = run_attack(
            attack, dataset, model, batch_size=batch, local_steps=steps, clients=clients, **options
        )
        s = r.summary()
        s["options"] = options
        out.append(s)
        print(json.dumps(s), flush=True)
    return out


def flower(rows: list[tuple]) -> list[dict[str, Any]]:
    from gradguard.integrations.flower.secagg import SecAggSettings, attack_through_secagg

    out = []
    for attack, model, clients, batch, steps, options, label in rows:
        for which in ("flower defaults", "attacker's choice"):
            settings = (
                SecAggSettings()
                if which == "flower defaults"
                else SecAggSettings(**ATTACKER, max_weight=float(batch))
            )
            r = attack_through_secagg(
                attack,
                settings,
                model=model,
                clients=clients,
                batch_size=batch,
                local_steps=steps,
                **options,
            )
            r.pop("aggregate")
            r.pop("sent")
            inproc = run_attack(
                attack,
                "digits",
                model,
                batch_size=batch,
                local_steps=steps,
                clients=clients,
                **options,
            ).summary()
            r.update(
                secagg=which, label=label, in_process_leaked_fraction=inproc["leaked_fraction"]
            )
            out.append(r)
            print(json.dumps(r), flush=True)
    return out


def verdicts(clients: int = 4, batch: int = 16) -> list[dict[str, Any]]:
    """Each client's default-Guard verdict on the model it receives."""
    train, aux = train_test("digits")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    batches = [train.subset(order[c * batch : (c + 1) * batch]) for c in range(clients)]
    cases = [
        ("loki", "convnet", get_attack("loki", clients=clients, batch_size=batch)),
        (
            "loki (scale 1)",
            "convnet",
            get_attack("loki", clients=clients, batch_size=batch, **LOKI_SCALE_1),
        ),
        ("inconsistency, inner imprint", "mlp", get_attack("inconsistency", batch_size=batch)),
        (
            "inconsistency, inner curious",
            "mlp",
            get_attack("inconsistency", inner="curious", batch_size=batch),
        ),
    ]
    adaptive = get_attack("inconsistency", batch_size=batch)
    adaptive.inner = get_attack("imprint", **Imprint.adaptive)  # the disguised inner imprint
    cases.append(("inconsistency, inner imprint adaptive", "mlp", adaptive))
    honest_inner = get_attack("inconsistency", batch_size=batch)
    cases.append(("inconsistency, target gets the honest model", "mlp", honest_inner))
    out = []
    for label, model_name, attack in cases:
        torch.manual_seed(0)
        honest = build_model(
            model_name, train.image_shape, train.num_classes, **attack.model_kwargs(model_name)
        )
        models, _ = attack.manipulate_clients(copy.deepcopy(honest), aux, list(range(clients)))
        if label.endswith("honest model"):
            models[0] = honest
        for c in range(clients):
            guard = Guard(template=honest, data=batches[c])
            v = guard.check(models[c].state_dict())
            role = (
                ("target" if c == 0 else "non-target") if "inconsistency" in label else "own block"
            )
            row = {
                "attack": label,
                "client": c,
                "role": role,
                "flagged": v.malicious,
                "allowed": guard.allows(v),
                "detector": v.detector,
                "summary": v.summary()[:160],
            }
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Attacks on secure aggregation (benchmarks/secagg.py)", ""]
    lines += [
        "## In-process (gradguard's pairwise-masked secure sum)",
        "",
        "| attack | dataset | clients x batch | local steps | leaked | PSNR mean |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["in_process"]:
        lines.append(
            f"| {r['attack']} {r.get('options') or ''} | {r['dataset']} | "
            f"{r['clients']} x {r['batch_size']} | {r['local_steps']} | "
            f"{r['leaked_fraction']:.1%} | {r['psnr_mean']} |"
        )
    lines += [
        "",
        "## Flower SecAgg+ (secaggplus_mod + SecAggPlusWorkflow), digits",
        "",
        "| attack | clients x batch | steps | SecAgg+ | clip | quant | leaked (Flower) | "
        "leaked (in-process) | cosine(aggregate, first client's update) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["flower"]:
        s = r["settings"]
        lines.append(
            f"| {r['label']} | {r['clients']} x {r['batch_size']} | {r['local_steps']} |"
            f" {r['secagg']} | {s['clipping_range']:.3g} | {s['quantization_range']} | "
            f"{r['leaked_fraction']:.1%} | {r['in_process_leaked_fraction']:.1%} | "
            f"{r.get('aggregate_cosine_to_target')} |"
        )
    lines += [
        "",
        "## Default Guard, per client (digits, 4 clients x 16)",
        "",
        "| attack | client | role | flagged | trains | detector |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["verdicts"]:
        lines.append(
            f"| {r['attack']} | {r['client']} | {r['role']} | {r['flagged']} | "
            f"{r['allowed']} | {r['detector']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the JSON")
    args = p.parse_args()
    torch.set_num_threads(1)
    name = "secagg_quick" if args.quick else "secagg"
    if args.markdown_only:
        report = json.loads((RESULTS / f"{name}.json").read_text())
        (RESULTS / f"{name}.md").write_text(markdown(report))
        return
    rows = [
        ("loki", "digits", "convnet", 4, 16, 1, {}),
        ("loki", "digits", "convnet", 4, 16, 8, {}),
        ("inconsistency", "digits", "mlp", 4, 16, 1, {}),
    ]
    if not args.quick:
        rows += [
            ("loki", "digits", "convnet", 4, 16, 4, {}),
            ("loki", "digits", "convnet", 10, 16, 8, {}),
            ("loki", "digits", "convnet", 4, 64, 8, {}),
            ("loki", "fashion-mnist", "convnet", 4, 16, 8, {}),
            ("loki", "fashion-mnist", "convnet", 10, 64, 1, {}),
            ("loki", "fashion-mnist", "convnet", 10, 64, 8, {}),
            ("inconsistency", "fashion-mnist", "mlp", 4, 64, 4, {}),
        ]
    fl_rows = [
        ("loki", "convnet", 2, 16, 1, {}, "loki"),
        ("loki", "convnet", 2, 16, 1, LOKI_SCALE_1, "loki scale 1"),
        ("inconsistency", "mlp", 2, 16, 1, {}, "inconsistency"),
    ]
    if not args.quick:
        fl_rows += [
            ("loki", "convnet", 2, 16, 1, LOKI_SECAGG, "loki secagg scales"),
            ("loki", "convnet", 3, 16, 4, LOKI_SECAGG, "loki secagg scales"),
        ]
    report = {"in_process": in_process(rows), "flower": flower(fl_rows), "verdicts": verdicts()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(report))
    print(f"wrote {RESULTS / name}.json and .md")


if __name__ == "__main__":
    main()
