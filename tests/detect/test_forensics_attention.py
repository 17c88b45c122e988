"""Attention forensics on PyTorch's own attention: ``nn.MultiheadAttention`` (packed
``in_proj_weight``) inside ``nn.TransformerEncoderLayer``, against a Decepticons-style
manipulation (Fowl et al. 2023; anchors: query weights 0, query bias from the first
positional encoding, key weights identity, value weights identity)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradguard.detect import Guard, GuardConfig, get_detector
from gradguard.detect.base import Context
from gradguard.detect.warmup import target_names

DIM = 16


class TinyTransformer(nn.Module):
    """Each row of an 8 x 8 image is a token: embed, add positions, one encoder layer,
    mean-pool, classify."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, DIM)
        self.pos = nn.Parameter(torch.randn(1, 8, DIM) * 0.1)
        self.encoder = nn.TransformerEncoderLayer(
            DIM, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(DIM, 10)

    def tokens(self, x):
        return self.embed(x[:, 0]) + self.pos

    def forward(self, x):
        return self.head(self.encoder(self.tokens(x)).mean(1))


@pytest.fixture(scope="module")
def honest(digits):
    train, _, _ = digits
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for i in range(0, len(train), 32):
            opt.zero_grad()
            F.cross_entropy(model(train.x[i : i + 32]), train.y[i : i + 32]).backward()
            opt.step()
    return model


def decepticon(model: TinyTransformer, marker: float = 30.0) -> TinyTransformer:
    """Every query is the (large) positional marker of token 0; keys are the tokens
    themselves: each position attends to token 0 and copies its value through."""
    import copy

    model = copy.deepcopy(model)
    att = model.encoder.self_attn
    with torch.no_grad():
        model.pos[0, 0] = marker * F.normalize(torch.randn(DIM), dim=0)
        wq, wk, wv = att.in_proj_weight.chunk(3)
        bq, bk, _ = att.in_proj_bias.chunk(3)
        wq.zero_()
        bq.copy_(model.pos[0, 0])
        wk.copy_(torch.eye(DIM))
        bk.zero_()
        wv.copy_(torch.eye(DIM))
    return model


def attention_on_first_token(model: TinyTransformer, x) -> float:
    """The mean attention weight every position gives token 0."""
    att = model.encoder.self_attn
    with torch.no_grad():
        tokens = model.tokens(x)
        _, weights = att(tokens, tokens, tokens, need_weights=True)
    return float(weights[..., 0].mean())


def test_decepticons_on_multihead_attention_is_flagged_honest_passes(honest, digits):
    _, local, _ = digits
    evil = decepticon(honest)
    # the manipulation works: attention is disabled, every position copies token 0
    assert attention_on_first_token(evil, local.x[:64]) > 0.99
    assert attention_on_first_token(honest, local.x[:64]) < 0.5
    guard = Guard(template=TinyTransformer(), data=local)
    ok = guard.check(honest.state_dict())
    assert guard.allows(ok) and not ok.malicious, ok.summary()
    bad = guard.check(evil.state_dict())
    assert bad.malicious and not guard.allows(bad)
    flagged = [f for f in bad.findings if f.flagged and f.check == "forensics.attention"]
    assert [f.layer for f in flagged] == ["encoder.self_attn"]
    assert "query weights are zero" in flagged[0].message
    assert "one-hot" in flagged[0].message


def test_zeroed_queries_alone_are_flagged_on_a_bare_multihead_attention():
    torch.manual_seed(0)
    att = nn.MultiheadAttention(DIM, 2)
    state = {k: v.clone() for k, v in att.state_dict().items()}
    ctx = Context(att)
    forensics = get_detector("forensics")
    assert not forensics.inspect(state, ctx).malicious
    state["in_proj_weight"][:DIM] = 0.0  # uniform attention: every position averages all
    v = forensics.inspect(state, ctx)
    assert v.malicious and v.findings[0].check == "forensics.attention"


def test_warmup_targets_read_packed_attention(honest, digits):
    names = target_names(honest)
    assert names["attention[0]_weight"] == [
        "encoder.self_attn.in_proj_weight",
        "encoder.self_attn.out_proj.weight",
    ]
    assert names["attention[0]_bias"] == [
        "encoder.self_attn.in_proj_bias",
        "encoder.self_attn.out_proj.bias",
    ]
    _, local, _ = digits
    guard = Guard(GuardConfig(detectors=("warmup",)), template=TinyTransformer(), data=local)
    v = guard.check(honest.state_dict())
    z = v.metadata["detectors"]["warmup"]["z"]
    assert {"attention[0]_weight", "attention[-1]_bias"} <= z.keys()
    assert guard.allows(v), v.summary()


def evading_decepticon(model: TinyTransformer, rel: float = 1.5e-3) -> TinyTransformer:
    """Decepticons disguised against the weight cut-offs: query weights random at ``rel``
    of the value weights' norm (above the zero-query cut-off 1e-3) and keys a random
    rotation (no one-hot key row); the query bias still carries token 0's marker."""
    import copy

    model = copy.deepcopy(model)
    att = model.encoder.self_attn
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.pos[0, 0] = 30.0 * F.normalize(torch.randn(DIM, generator=g), dim=0)
        wq, wk, wv = att.in_proj_weight.chunk(3)
        bq, bk, _ = att.in_proj_bias.chunk(3)
        rotation = torch.linalg.qr(torch.randn(DIM, DIM, generator=g))[0]
        wv.copy_(torch.eye(DIM))
        wk.copy_(rotation)
        bk.zero_()
        noise = torch.randn(DIM, DIM, generator=g)
        wq.copy_(noise / noise.norm() * rel * wv.norm())
        bq.copy_(rotation @ model.pos[0, 0])  # q . k_0 = |marker|^2: token 0 wins
    return model


def test_attention_disabled_above_the_weight_cutoffs_is_flagged_by_its_mechanism(honest, digits):
    _, local, _ = digits
    evil = evading_decepticon(honest)
    # the attack still works: every position gives token 0 all its attention ...
    assert attention_on_first_token(evil, local.x[:64]) > 0.99
    forensics = get_detector("forensics")
    v = forensics.inspect(evil.state_dict(), Context(TinyTransformer(), local))
    flagged = {f.check for f in v.findings if f.flagged}
    # ... the weight signatures miss it, the attention's own behaviour on local data does not
    assert flagged == {"forensics.attention-query"}, v.findings
    guard = Guard(template=TinyTransformer(), data=local)
    assert not guard.allows(guard.check(evil.state_dict()))


def test_honest_transformers_attend_by_query(honest, digits):
    """Fresh and trained PyTorch transformers, and the zoo's vit-tiny fresh and trained,
    stay well below the query-blindness threshold."""
    from gradguard.fl.client import train_sgd
    from gradguard.models import build_model

    train, local, _ = digits
    torch.manual_seed(0)
    fresh = TinyTransformer()
    torch.manual_seed(1)
    vit = build_model("vit-tiny", local.image_shape, 10)
    models = [(fresh, fresh), (honest, TinyTransformer()), (vit, vit)]
    torch.manual_seed(0)
    models.append((train_sgd(build_model("vit-tiny", local.image_shape, 10), train), vit))
    forensics = get_detector("forensics")
    for model, template in models:
        v = forensics.inspect(model.state_dict(), Context(template, local))
        values = [f.value for f in v.findings if f.check == "forensics.attention-query"]
        assert values and max(values) < 3.5 and not v.malicious, v.findings
