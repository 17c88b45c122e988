"""The maliciously curious client (seed 001, Yue et al., arXiv 2506.11413, sec. 3).

It is an ordinary federated client: it receives the global model each round, trains on its
own data and uploads. What it keeps is only what any client sees: the global model of each
round and what it sent itself. Two consecutive global models give the aggregate of the round
in between; :mod:`gradguard.attacks.client.peer_inversion` turns it into peers' images.
What it knows of the protocol (:class:`FederationKnowledge`) is what a client is told or can
read from its own training configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gradguard.attacks.client.uploads import UPLOADS, craft_upload
from gradguard.errors import GradguardError
from gradguard.fl.client import Client, local_update
from gradguard.fl.dp import ClientDP, privatize
from gradguard.fl.update import Update, float_state


@dataclass(frozen=True)
class FederationKnowledge:
    """The protocol as a client knows it: how many take part and how the server aggregates,
    how peers train (FedAvg: ``local_steps`` full-batch SGD steps at ``lr`` on
    ``peer_examples`` images each), the DP clipping bound if clients clip."""

    clients: int
    aggregator: str
    byzantine: int
    local_steps: int
    lr: float
    peer_examples: int
    dp_clip: float | None = None
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if self.clients < 2:
            raise GradguardError("a curious client needs at least one peer")
        if self.local_steps < 1 or self.peer_examples < 1 or not self.lr > 0:
            raise GradguardError("peers' local steps, examples and lr must be positive")


@dataclass
class Observation:
    """One round seen from the client: the global state before and after the round, and
    the update it uploaded in that round (all float state entries, in ``keys`` order)."""

    round: int
    keys: list[str]
    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]
    upload: torch.Tensor
    upload_kind: str

    def global_change(self) -> torch.Tensor:
        return torch.cat([(self.after[k] - self.before[k]).flatten().float() for k in self.keys])

    def save(self, path: str | Path) -> Path:
        """Write the observation as safetensors (its own round's record, no pickle)."""
        from safetensors.torch import save_file

        tensors = {f"before/{k}": v.contiguous() for k, v in self.before.items()}
        tensors |= {f"after/{k}": v.contiguous() for k, v in self.after.items()}
        tensors["upload"] = self.upload.contiguous()
        meta = {"round": str(self.round), "upload_kind": self.upload_kind}
        meta["keys"] = json.dumps(self.keys)
        save_file(tensors, str(path), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Observation:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = json.loads(meta.get("keys", "[]"))
            before = {k: f.get_tensor(f"before/{k}") for k in keys}
            after = {k: f.get_tensor(f"after/{k}") for k in keys}
            upload = f.get_tensor("upload")
        total = sum(v.numel() for v in before.values())
        if not keys or upload.shape != (total,):
            raise GradguardError(f"{path}: not a curious-client observation")
        return cls(int(meta["round"]), keys, before, after, upload, meta["upload_kind"])


@dataclass
class CuriousClient(Client):
    """A client that uploads per ``upload`` (see :mod:`.uploads`) and records observations.

    Local training and DP are the honest client's; the Byzantine rewrite comes last, as for
    :class:`~gradguard.fl.client.Client`'s ``poison``.
    """

    upload: str = "honest"
    observations: list[Observation] = field(default_factory=list)
    _pending: tuple[int, dict[str, torch.Tensor], torch.Tensor] | None = field(
        default=None, init=False, repr=False
    )
    _round: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.upload not in UPLOADS:
            raise GradguardError(f"unknown upload {self.upload!r}; valid: {', '.join(UPLOADS)}")

    def fit(
        self, model: nn.Module, generator: torch.Generator, dp: ClientDP | None = None
    ) -> Update:
        state = float_state(model)
        self.see(state)
        update = local_update(model, self.data, self.training, generator, self.client_id)
        if dp is not None:
            update = privatize(update, dp, generator)
        sent = craft_upload(self.upload, update)
        self.sent(state, sent)
        return sent

    def see(self, state: dict[str, torch.Tensor]) -> None:
        """A new global model arrived: it closes the round of the last upload."""
        self._round += 1
        if self._pending is not None:
            rnd, before, upload = self._pending
            keys = list(before)
            self.observations.append(Observation(rnd, keys, before, state, upload, self.upload))
            self._pending = None

    def sent(self, state: dict[str, torch.Tensor], update: Update) -> None:
        """Remember the global model this round started from and what was uploaded."""
        self._pending = (self._round, state, update.flat(list(state)).detach().clone())
