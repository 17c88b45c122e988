"""Train SEER (model + secret decoder, jointly, through the batch gradient) on digits.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/seer_train.py --norm batch \
        --batch-size 16 --minutes 12

Each step draws a batch of the attacker's auxiliary data (the digits train split), computes
the client's cross-entropy gradient of the read layers with ``create_graph=True``, decodes
it, and takes an Adam step on model and decoder together against the MSE to the batch's
property image (SEER, section 3; the seed paper, section 4). A seeded ``--val-fraction`` of
the train split is held out as a validation split (never trained on); every ``--eval-every``
steps (and before the first, so a resumed run keeps its start unless it improves) the
validation PSNR (client in training mode) is logged and the best state is written to the
committed weights file (safetensors), the log to
``benchmarks/results/seer_train_<norm>_b<B>.json``. The test split is never looked at here:
``benchmarks/seer_eval.py`` scores the selected weights on it. With ``--val-fraction 0``
nothing is selected: the whole train split is trained on and the last state is written.

The decoder memorises its auxiliary images (a batch-norm model at 31 dB on its training
batches scored 17.5 dB on validation), so two regularisers help: ``--shift 1 --shift-prob
0.5`` translates half the images by a pixel, and ``--ema D`` scores and keeps an exponential
moving average of the weights instead of the live ones. The committed batch-norm weights:
``--lr 1e-3 --minutes 20``, then ``--init <those> --lr 3e-4 --minutes 38 --shift 1
--shift-prob 0.5 --ema 0.999`` (``docs/experiments.md``, section 4).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

from gradguard.attacks.server.seer import READ, SeerConfig, SeerParts, property_index
from gradguard.data import Dataset, train_test
from gradguard.experiments.seer import evaluate_parts
from gradguard.models.io import save_state

RESULTS = Path(__file__).parent / "results"


class BatchedLoss:
    """The reconstruction loss of ``K`` auxiliary batches at once (``torch.func.vmap`` over
    batches; each batch is normalised on its own, as a client's), differentiable in the
    model and the decoder. Batch norm runs without running statistics here; they are set
    afterwards by :func:`calibrate_running_stats`."""

    def __init__(self, parts: SeerParts) -> None:
        self.parts = parts
        self.skeleton = copy.deepcopy(parts.model).train()
        replace_all_batch_norm_modules_(self.skeleton)
        self.client_grad = grad(self._client_loss)

    def _client_loss(self, read, other, x, y):
        return F.cross_entropy(functional_call(self.skeleton, {**read, **other}, (x,)), y)

    def _one(self, read, other, x, y, target):
        return F.mse_loss(self.parts.decode(self.client_grad(read, other, x, y))[0], target)

    def __call__(
        self, xs: torch.Tensor, ys: torch.Tensor, prop: str, log_mse: bool = False
    ) -> torch.Tensor:
        """Mean MSE over the batches, or with ``log_mse`` the mean of ``10 log10 MSE`` (minus
        the mean PSNR the evaluation reports, so each batch weighs as it does there)."""
        params = dict(self.parts.model.named_parameters())
        read = {n: params[n] for n in READ}
        other = {n: p for n, p in params.items() if n not in READ}
        targets = torch.stack([x[property_index(x, prop)] for x in xs])
        losses = vmap(self._one, in_dims=(None, None, 0, 0, 0))(read, other, xs, ys, targets)
        if log_mse:
            return (10 * torch.log10(losses.clamp_min(1e-6))).mean()
        return losses.mean()


@torch.no_grad()
def calibrate_running_stats(parts: SeerParts, aux, batch_size: int, n: int = 300) -> None:
    """Batch-norm running statistics as the cumulative average over ``n`` client batches."""
    g = torch.Generator().manual_seed(999)
    norms = [m for m in parts.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    parts.model.train()
    for _ in range(n if norms else 0):
        parts.model(aux.x[torch.randperm(len(aux), generator=g)[:batch_size]])
    for m in norms:
        m.momentum = 0.1


def split_validation(train: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, validation): a seeded ``fraction`` of ``train`` held out for checkpoint
    selection, so that the test split stays unseen until the final evaluation."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = round(fraction * len(train))
    return train.subset(perm[n_val:]), train.subset(perm[:n_val])


def random_shift(xs: torch.Tensor, k: int, g: torch.Generator, prob: float = 1.0) -> torch.Tensor:
    """Translate each image, with probability ``prob``, by up to ``k`` pixels each way,
    zero-filled (augmentation of the attacker's auxiliary data)."""
    h, w = xs.shape[-2:]
    flat = xs.reshape(-1, *xs.shape[-3:])
    padded = F.pad(flat, (k, k, k, k))
    dy, dx = torch.randint(0, 2 * k + 1, (2, len(flat)), generator=g)
    keep = torch.rand(len(flat), generator=g) >= prob
    dy[keep], dx[keep] = k, k
    out = torch.stack(
        [
            p[:, y : y + h, x : x + w]
            for p, y, x in zip(padded, dy.tolist(), dx.tolist(), strict=True)
        ]
    )
    return out.reshape(xs.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--norm", default="batch", choices=("batch", "group", "layer"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prop", default="brightest")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-time budget")
    ap.add_argument("--max-steps", type=int, default=10**7)
    ap.add_argument("--batches-per-step", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-batches", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--shift", type=int, default=0, help="random translation of aux images")
    ap.add_argument("--shift-prob", type=float, default=1.0, help="fraction of images shifted")
    ap.add_argument("--loss", default="mse", choices=("mse", "log-mse"))
    ap.add_argument("--ema", type=float, default=0.0, help="select an EMA of the weights")
    ap.add_argument("--min-lr", type=float, default=0.05, help="cosine floor, fraction of --lr")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="start from the weights file")
    ap.add_argument("--weights", type=Path, default=None, help="write here, not the default")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = SeerConfig(norm=args.norm, batch_size=args.batch_size, prop=args.prop)
    parts = SeerParts(cfg)
    weights = args.weights or cfg.weights_file
    if args.init is not None:
        parts.load_weights(args.init)
    elif args.resume and weights.is_file():
        parts.load_weights(weights)
    aux, val = train_test("digits")[0], None
    if args.val_fraction > 0:
        aux, val = split_validation(aux, args.val_fraction)
    select = val is not None
    params = list(parts.model.parameters()) + list(parts.decoder.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    batched_loss, k = BatchedLoss(parts), args.batches_per_step
    # Exponential moving average of every weight (model and decoder): checkpoints score it.
    ema = torch.optim.swa_utils.AveragedModel(
        parts, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema)
    )
    log: list[dict] = []
    best, start, running, step = -1.0, time.perf_counter(), 0.0, 0
    budget = 60 * args.minutes

    def checkpoint() -> None:
        nonlocal best
        if args.ema > 0:  # score (and keep) the averaged weights; training goes on from live
            live = copy.deepcopy(parts.state_dict())
            parts.load_state_dict(ema.module.state_dict())
            try:
                score_and_keep()
            finally:
                parts.load_state_dict(live)
        else:
            score_and_keep()

    def score_and_keep() -> None:
        nonlocal best
        calibrate_running_stats(parts, aux, cfg.batch_size)
        if not select:  # no validation split: no selection, the last state is kept
            save_state(parts.weights(), weights)
            return
        scores = evaluate_parts(parts, val, aux, n_batches=args.eval_batches, seed=1)
        entry = {
            "step": step,
            "seconds": round(time.perf_counter() - start, 1),
            f"train_{args.loss}": round(running, 5),
            **{k: scores[k] for k in ("psnr_mean", "identified_fraction", "baseline_psnr")},
        }
        log.append(entry)
        print(json.dumps(entry), flush=True)
        if scores["psnr_mean"] > best:
            best = scores["psnr_mean"]
            weights.parent.mkdir(parents=True, exist_ok=True)
            save_state(parts.weights(), weights)

    if (args.resume or args.init is not None) and select:
        checkpoint()
    while step < args.max_steps and time.perf_counter() - start < budget:
        # Cosine decay over whichever budget (steps or wall time) runs out first.
        frac = min(1.0, max((time.perf_counter() - start) / budget, step / args.max_steps))
        floor = args.min_lr
        for group in opt.param_groups:
            group["lr"] = args.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.stack(
            [torch.randperm(len(aux), generator=g)[: cfg.batch_size] for _ in range(k)]
        )
        xs = aux.x[idx]
        if args.shift > 0:
            xs = random_shift(xs, args.shift, g, args.shift_prob)
        loss = batched_loss(xs, aux.y[idx], cfg.prop, args.loss == "log-mse")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if args.ema > 0:
            ema.update_parameters(parts)
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if select and (step % args.eval_every == 0 or step == args.max_steps):
            checkpoint()
    if not select:
        checkpoint()
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.weights is None else "_" + weights.stem
    out = RESULTS / f"seer_train_{cfg.norm}_b{cfg.batch_size}{suffix}.json"
    record = {"config": vars(args), "steps": step, "best_eval_psnr": best, "log": log}
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"best validation psnr {best:.2f} dB after {step} steps -> {weights}")


if __name__ == "__main__":
    main()
