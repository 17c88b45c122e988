"""Gradient inversion and fishing, measured against the client's true batch.

Rows: Inverting Gradients on one image; class fishing and feature fishing on a batch of 64,
each next to the same inversion run on the *unmanipulated* batch gradient (what an honest
server gets with the same budget) and a random image (the floor). PSNR is matched to the
true batch (Hungarian, :func:`gradguard.metrics.match`): ``best`` is the best matched image,
``mean`` the mean over the reconstructed images. The client's batch is drawn as in
:func:`gradguard.bench.attack_round.run_attack` (same seed, same permutation).

    python benchmarks/inversion.py [--quick] [--seeds 2]

writes benchmarks/results/inversion.{json,md}. ``--quick``: digits only, fewer iterations.
Timings are wall-clock seconds on a shared CPU: noisy.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from rich.progress import Progress

from gradguard.attacks import get_attack
from gradguard.attacks.inversion.inverting import invert
from gradguard.data import train_test
from gradguard.fl.client import LocalTraining, local_update
from gradguard.metrics import match
from gradguard.models import build_model

RESULTS = Path(__file__).parent / "results"


def _batch(train, size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return train.subset(torch.randperm(len(train), generator=g)[:size])


def _fedsgd(model, batch):
    return local_update(model, batch, LocalTraining(batch_size=len(batch), fedsgd=True))


def _scores(true, images) -> tuple[float, float]:
    if len(images) == 0:
        return float("nan"), float("nan")
    m = match(true, images)
    return float(m.psnr.max()), float(m.psnr.mean())


def run_case(attack_name: str, dataset: str, batch_size: int, seed: int, options: dict) -> dict:
    train, aux = train_test(dataset)
    torch.manual_seed(seed)
    honest = build_model("convnet", train.image_shape, train.num_classes)
    batch = _batch(train, batch_size, seed)
    attack = get_attack(attack_name, **options)
    start = time.perf_counter()
    sent, secrets = attack.manipulate(copy.deepcopy(honest), aux)
    rec = attack.reconstruct(_fedsgd(sent, batch), secrets)
    seconds = time.perf_counter() - start
    best, mean = _scores(batch.x, rec.images)
    row = {
        "attack": attack_name,
        "dataset": dataset,
        "model": "convnet",
        "batch_size": batch_size,
        "seed": seed,
        "images": len(rec.images),
        "psnr_best": best,
        "psnr_mean": mean,
        "seconds": seconds,
        "options": options,
        "info": {k: v for k, v in rec.info.items() if isinstance(v, (int, float, str))},
    }
    if attack_name.startswith("fishing"):
        t = secrets["target_class"]
        row["target_in_batch"] = int((batch.y == t).sum())
        # The same inversion on the honest gradient of the same model weights below the
        # head (feature fishing's server pre-trains them; the head is the honest one then).
        base_model = copy.deepcopy(secrets["model"]) if "feature" in secrets else honest
        if "feature" in secrets:
            base_model.head.load_state_dict(_honest_head(honest, aux, attack, secrets))
        k = max(1, len(rec.images))
        images, _ = invert(
            base_model,
            _fedsgd(base_model, batch).as_gradient(),
            torch.full((k,), t),
            (k, *batch.x.shape[1:]),
            attack.config(),
        )
        row["honest_best"], row["honest_mean"] = _scores(batch.x, images)
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand((max(1, len(rec.images)), *batch.x.shape[1:]), generator=g)
    row["random_best"], _ = _scores(batch.x, noise)
    return row


def _honest_head(honest, aux, attack, secrets):
    """The head of the server's pre-trained model before fishing rewrote it."""
    from gradguard.attacks.server.fishing import pretrain

    model = copy.deepcopy(honest)
    pretrain(model, aux, attack.train_steps, attack.seed)
    return model.head.state_dict()


def cases(quick: bool, seeds: int) -> list[tuple[str, str, int, int, dict]]:
    out: list[tuple[str, str, int, int, dict]] = []
    datasets = ["digits"] if quick else ["digits", "fashion-mnist"]
    for ds in datasets:
        small = ds == "digits"
        it = 150 if quick else (300 if small else 500)
        for s in range(seeds):
            out.append(("inverting-gradients", ds, 1, s, {"iterations": it}))
        for s in range(seeds):
            out.append(("fishing-class", ds, 64, s, {"iterations": it, "target_class": 0}))
        for s in range(seeds):
            out.append(("fishing-feature", ds, 64, s, {"iterations": it, "batch_size": 64}))
    return out


def _fmt(v) -> str:
    return "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def markdown(rows: list[dict]) -> str:
    head = [
        "attack",
        "dataset",
        "batch",
        "seed",
        "images",
        "PSNR best",
        "PSNR mean",
        "honest best",
        "honest mean",
        "random best",
        "target in batch",
        "seconds",
    ]
    keys = [
        "attack",
        "dataset",
        "batch_size",
        "seed",
        "images",
        "psnr_best",
        "psnr_mean",
        "honest_best",
        "honest_mean",
        "random_best",
        "target_in_batch",
        "seconds",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--only", default=None, help="run only this attack")
    args = parser.parse_args()
    torch.set_num_threads(1)
    todo = [c for c in cases(args.quick, args.seeds) if args.only in (None, c[0])]
    rows = []
    with Progress() as progress:
        task = progress.add_task("inversion", total=len(todo))
        for name, ds, b, s, opts in todo:
            progress.update(task, description=f"{name} {ds} b={b} seed={s}")
            rows.append(run_case(name, ds, b, s, opts))
            progress.advance(task)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "inversion" if args.only is None else f"inversion-{args.only}"
    stem += "-quick" if args.quick else ""
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
