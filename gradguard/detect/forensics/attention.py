"""Decepticons signatures on attention (Fowl et al. 2023; seed 000, section 3.2, A.1.4).

Attention is disabled by zero query weights (queries become a constant bias) and keys set
to the identity. Flags a layer whose query weights vanish next to its value weights, or
whose key rows are mostly one-hot (one entry outweighs the rest of the row). Separate
``q``/``k``/``v`` layers and PyTorch's ``nn.MultiheadAttention`` (packed ``in_proj_weight``,
also inside ``nn.TransformerEncoderLayer``) are inspected alike.

Those are fast first findings on the weights alone: query weights kept just above the
cut-off (or keys that are any invertible map) disable attention as well. With local data,
:func:`query_blindness` judges the mechanism itself: on a few of the client's samples, how
much each layer's attention distribution changes from one query position to another.
Disabled attention gives every query of a sequence the same distribution (uniform, or
one-hot on the marked token) whatever the query weights' size; honest attention does not.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from gradguard.detect.base import Context, Finding, Threshold, mismatch
from gradguard.detect.filters import DIRAC_RATIO, transmit_ratio
from gradguard.detect.layers import attentions

if TYPE_CHECKING:
    from gradguard.detect.forensics import Layers

ZERO_QUERY = 1e-3  # ||W_q|| / ||W_v|| below this: zeroed queries
IDENTITY_KEYS = 0.5  # fraction of one-hot key rows above this: identity keys
THRESHOLDS = (
    Threshold(
        "attention",
        1.0,
        "forensics.attention",
        floor=1.0,
        doc="attention layers with zeroed queries or identity keys",
    ),
    # honest vit-tiny corpus models (every optimiser, data set, stage) reach 3.24, diverged
    # ones 3.79, a fresh nn.TransformerEncoderLayer 2.27; Decepticons-style models 8 to 12
    Threshold(
        "attention_blindness",
        5.0,
        "forensics.attention-query",
        floor=4.0,
        margin=1.3,
        doc="-log10 of the mean total-variation distance between the attention rows of "
        "different queries on local samples (disabled attention: every row alike)",
    ),
)
#: Local samples the attention is measured on (seeded, the first of a permutation).
SAMPLES = 16


def projections(received: dict[str, torch.Tensor], layers: Layers):
    """``(attention name, W_q, W_k, W_v)`` of every attention layer in ``received``:
    separate ``q``/``k``/``v`` linear layers (``vit-tiny``), PyTorch's packed
    ``in_proj_weight`` (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``; rows
    ``[W_q; W_k; W_v]``) and its unpacked ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``.
    """
    for layer in layers.linear:
        if layer.endswith(".q") or layer == "q":
            base = layer.removesuffix("q").removesuffix(".")
            prefix = f"{base}." if base else ""
            yield base, *(received.get(f"{prefix}{p}.weight") for p in "qkv")
    for key, value in received.items():
        if key.endswith("in_proj_weight") and isinstance(value, torch.Tensor):
            base = key.removesuffix("in_proj_weight").removesuffix(".")
            if value.ndim == 2 and value.shape[0] % 3 == 0 and value.shape[0] > 0:
                yield base, *value.chunk(3, dim=0)
            else:
                yield base, value, None, None  # not the packed shape: not inspected
        elif key.endswith("q_proj_weight") and isinstance(value, torch.Tensor):
            head = key.removesuffix("q_proj_weight")
            yield (
                head.removesuffix("."),
                value,
                *(received.get(f"{head}{p}_proj_weight") for p in "kv"),
            )


def check(received: dict[str, torch.Tensor], layers: Layers, t: dict[str, float]) -> list[Finding]:
    findings = []
    for base, q, k, v in projections(received, layers):
        if not all(
            isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point() for x in (q, k, v)
        ):
            continue
        base = base or "(attention)"
        reasons = []
        rel = float(q.double().norm() / v.double().norm().clamp_min(1e-300))
        if rel < ZERO_QUERY:
            reasons.append(f"query weights are zero ({rel:.2g} of the value weights' norm)")
        one_hot = float((transmit_ratio(k) >= DIRAC_RATIO).double().mean())
        if one_hot > IDENTITY_KEYS:
            reasons.append(f"{one_hot:.0%} of key rows are one-hot (identity keys)")
        flagged = len(reasons) >= t["attention"]
        findings.append(
            Finding(
                "forensics.attention",
                base,
                float(len(reasons)),
                t["attention"],
                "; ".join(reasons) + ": attention is disabled (Decepticons)"
                if flagged
                else f"query/value norm {rel:.3g}, {one_hot:.0%} one-hot key rows",
                flagged,
            )
        )
    return findings


def _logits(module: nn.Module, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor | None:
    """Attention logits ``(batch, heads, queries, keys)`` of ``nn.MultiheadAttention`` on its
    (query, key) inputs, with the weights it holds during the call; None if it cannot tell."""
    if query.dim() == 2:
        query, key = query.unsqueeze(1), key.unsqueeze(1)
    if not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    dim, heads = module.embed_dim, module.num_heads
    if module.in_proj_weight is not None:
        wq, wk = module.in_proj_weight[:dim], module.in_proj_weight[dim : 2 * dim]
    elif module.q_proj_weight is not None and module.k_proj_weight is not None:
        wq, wk = module.q_proj_weight, module.k_proj_weight
    else:
        return None
    bias = module.in_proj_bias
    bq, bk = (None, None) if bias is None else (bias[:dim], bias[dim : 2 * dim])
    q, k = F.linear(query, wq, bq), F.linear(key, wk, bk)
    return _split(q, heads) @ _split(k, heads).transpose(-1, -2) / math.sqrt(dim // heads)


def _split(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``(batch, tokens, dim)`` as ``(batch, heads, tokens, dim / heads)`` (one head when
    ``heads`` does not divide ``dim``)."""
    b, n, d = t.shape
    heads = heads if heads > 0 and d % heads == 0 else 1
    return t.reshape(b, n, heads, d // heads).transpose(1, 2)


def query_blindness(
    model: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor
) -> dict[str, float]:
    """Per attention layer of ``model`` holding ``state`` (evaluation mode, inputs ``x``):
    ``-log10`` of the mean total-variation distance between each query's attention
    distribution and the mean one of its sequence and head (up to 12: identical rows).

    Honest attention ranks keys differently for different queries; Decepticons' disabled
    attention (constant queries: zero or tiny query weights and a marker bias) gives every
    query the same distribution, however its weights are disguised."""
    logits: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):

            def pre(mod, args, kwargs, name=name):
                query = kwargs.get("query", args[0] if args else None)
                key = kwargs.get("key", args[1] if len(args) > 1 else query)
                if isinstance(query, torch.Tensor) and isinstance(key, torch.Tensor):
                    out = _logits(mod, query, key)
                    if out is not None:
                        logits.setdefault(name, []).append(out)

            hooks.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        elif all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q", "k", "v")):
            heads = getattr(m, "heads", getattr(m, "num_heads", 1))
            heads = heads if isinstance(heads, int) else 1
            seen: dict[str, torch.Tensor] = {}

            def keep(part, seen=seen, name=name, heads=heads):
                def fn(_m, _inp, out):
                    seen[part] = out
                    if "q" in seen and "k" in seen and seen["q"].dim() == 3:
                        q, k = _split(seen.pop("q"), heads), _split(seen.pop("k"), heads)
                        scale = math.sqrt(q.shape[-1])
                        logits.setdefault(name, []).append(q @ k.transpose(-1, -2) / scale)

                return fn

            hooks += [getattr(m, p).register_forward_hook(keep(p)) for p in ("q", "k")]
    if not hooks:
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            functional_call(model, state, (x,))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    out = {}
    for name, parts in logits.items():
        spread = []
        for z in parts:
            if z.shape[-2] < 2:
                continue
            a = z.double().softmax(-1)
            spread.append(0.5 * (a - a.mean(-2, keepdim=True)).abs().sum(-1).mean())
        if spread:
            tv = float(torch.stack(spread).mean())
            out[name] = min(12.0, -math.log10(tv)) if tv > 0 else 12.0
    return out


def check_data(
    received: dict[str, torch.Tensor], ctx: Context, t: dict[str, float], seed: int = 0
) -> list[Finding]:
    """The mechanism check on ``SAMPLES`` local samples (:func:`query_blindness`); nothing
    for a model without attention or a state that does not fit it (architecture says why)."""
    if ctx.data is None or len(ctx.data) == 0 or not attentions(ctx.template):
        return []
    if mismatch(received, ctx.expected):
        return []
    g = torch.Generator().manual_seed(seed)
    x = ctx.data.x[torch.randperm(len(ctx.data), generator=g)[:SAMPLES]]
    bar = t["attention_blindness"]
    findings = []
    for name, blind in query_blindness(ctx.template, received, x).items():
        flagged = blind >= bar
        findings.append(
            Finding(
                "forensics.attention-query",
                name or "(attention)",
                blind,
                bar,
                f"every query attends alike on your data (attention rows differ by 10^-{blind:.1f}"
                " of their mass): attention is disabled (Decepticons)"
                if flagged
                else f"attention rows differ across queries by 10^-{blind:.1f} of their mass",
                flagged,
            )
        )
    return findings
