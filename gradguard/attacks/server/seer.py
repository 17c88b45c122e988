"""SEER, "Hiding in Plain Sight" (Garov et al., ICLR 2024), at digits scale.

The server sends a model that it trained jointly with a secret decoder on auxiliary data,
so that the client's batch gradient decodes to the one image of the batch with an extreme
property (here the brightest: the largest mean intensity). The decoder reads a fixed subset
of the gradient of the last layers (SEER reads at most 8400 entries per tensor; here at most
``max_entries`` of each tensor in ``READ``), a linear *disaggregator* maps it to a latent,
and an MLP *reconstructor* maps the latent to the image. Batch norm lets the model compare
the samples of a batch, which is how one sample can dominate the gradient (the seed paper,
section 4, eqs. 8-12); with group or layer norm every sample is normalised alone.

Weights are trained by ``benchmarks/seer_train.py`` and committed as safetensors, one file
per (norm, batch size): the model's state under ``model.`` and the decoder's under
``decoder.``. The model is the zoo ``resnet`` (widths 16/32/64, about 78k parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.data import Dataset
from gradguard.errors import GradguardError, ModelFileError
from gradguard.fl.update import Update
from gradguard.models import build_model
from gradguard.models.io import load_state

WEIGHTS_DIR = Path(__file__).parent / "weights"
IMAGE_SHAPE = (1, 8, 8)  # scikit-learn digits, the only data set with committed weights
NUM_CLASSES = 10
# The gradient entries the decoder reads: the head and the last residual block.
READ = (
    "head.weight",
    "head.bias",
    "layers.2.0.norm2.weight",
    "layers.2.0.norm2.bias",
    "layers.2.0.conv2.weight",
)
PROPERTIES = ("brightest", "darkest")


@dataclass(frozen=True)
class SeerConfig:
    """One trained SEER set-up: the norm of the model, the client batch it was trained for,
    the property that selects the stolen image, and the decoder's shape."""

    norm: str = "batch"
    batch_size: int = 16
    prop: str = "brightest"
    max_entries: int = 1024
    latent: int = 256
    hidden: int = 512
    selection_seed: int = 0

    def __post_init__(self) -> None:
        if self.norm not in ("batch", "group", "layer"):
            raise GradguardError(f"SEER norm must be batch, group or layer (got {self.norm!r})")
        if self.prop not in PROPERTIES:
            raise GradguardError(f"SEER property must be one of {', '.join(PROPERTIES)}")
        if self.batch_size < 2:
            raise GradguardError("SEER needs a client batch of at least 2")

    @property
    def weights_file(self) -> Path:
        return WEIGHTS_DIR / f"seer_digits_{self.norm}_b{self.batch_size}_{self.prop}.safetensors"


def property_index(images: torch.Tensor, prop: str) -> torch.Tensor:
    """Index of the image with the extreme property in each batch (images: B x C x H x W)."""
    brightness = images.flatten(1).mean(1)
    return brightness.argmax() if prop == "brightest" else brightness.argmin()


def build_seer_model(norm: str) -> nn.Module:
    return build_model("resnet", IMAGE_SHAPE, NUM_CLASSES, norm)


class GradientReader(nn.Module):
    """The fixed, secret subset of gradient entries the decoder reads (seeded choice)."""

    def __init__(self, model: nn.Module, max_entries: int, seed: int) -> None:
        super().__init__()
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(seed)
        self.names = list(READ)
        for name in self.names:
            n = params[name].numel()
            idx = torch.randperm(n, generator=g)[:max_entries].sort().values
            self.register_buffer("idx_" + name.replace(".", "_"), idx)

    @property
    def size(self) -> int:
        return sum(len(getattr(self, "idx_" + n.replace(".", "_"))) for n in self.names)

    def forward(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """The read entries of a batch gradient, scaled to unit RMS (so that a FedAvg delta
        or another learning rate reads the same)."""
        parts = [grads[n].flatten()[getattr(self, "idx_" + n.replace(".", "_"))] for n in READ]
        v = torch.cat(parts)
        return v / v.pow(2).mean().sqrt().clamp_min(1e-12)


class SeerDecoder(nn.Module):
    """Disaggregator (linear: gradient entries -> latent) then reconstructor (MLP -> image)."""

    def __init__(self, n_in: int, cfg: SeerConfig) -> None:
        super().__init__()
        pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        self.disaggregator = nn.Linear(n_in, cfg.latent)
        self.reconstructor = nn.Sequential(
            nn.Linear(cfg.latent, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, pixels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.reconstructor(self.disaggregator(features))
        return torch.sigmoid(out).view(-1, *IMAGE_SHAPE)


class SeerParts(nn.Module):
    """Everything the server keeps: the model it sends, the reader and the decoder."""

    def __init__(self, cfg: SeerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = build_seer_model(cfg.norm)
        self.reader = GradientReader(self.model, cfg.max_entries, cfg.selection_seed)
        self.decoder = SeerDecoder(self.reader.size, cfg)

    def decode(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.reader(grads))

    def weights(self) -> dict[str, torch.Tensor]:
        """The state to save: model and decoder (the reader is rebuilt from its seed)."""
        out = {"model." + k: v for k, v in self.model.state_dict().items()}
        out.update({"decoder." + k: v for k, v in self.decoder.state_dict().items()})
        return {k: v.detach().contiguous() for k, v in out.items()}

    def load_weights(self, path: Path) -> None:
        """Load and validate a weights file (shapes, dtypes, finiteness); one clear error."""
        template = self.weights()
        state = load_state(path, template=template)
        if set(state) != set(template):
            missing = sorted(set(template) - set(state))[:3]
            extra = sorted(set(state) - set(template))[:3]
            raise ModelFileError(f"{path}: wrong SEER entries (missing {missing}, extra {extra})")
        for k, v in state.items():
            if v.shape != template[k].shape or v.dtype != template[k].dtype:
                raise ModelFileError(f"{path}: {k!r} has shape {tuple(v.shape)} / {v.dtype}")
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ModelFileError(f"{path}: {k!r} holds non-finite values")
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k[:6] == "model."})
        self.decoder.load_state_dict({k[8:]: v for k, v in state.items() if k[:8] == "decoder."})


def load_seer(cfg: SeerConfig) -> SeerParts:
    """The committed, trained SEER parts for ``cfg`` (no download: the file is in the repo)."""
    parts = SeerParts(cfg)
    if not cfg.weights_file.is_file():
        raise GradguardError(
            f"no trained SEER weights for norm={cfg.norm}, batch={cfg.batch_size}, "
            f"property={cfg.prop} (train with benchmarks/seer_train.py)"
        )
    parts.load_weights(cfg.weights_file)
    parts.eval()
    return parts


class Seer(ServerAttack):
    """SEER on digits: send the trained model; decode the property image from the update."""

    name = "seer"
    models: ClassVar[tuple[str, ...]] = ("resnet",)
    takes_batch_size = True
    threat_model = ThreatModel(
        changes_architecture=False,
        protocols=("fedsgd", "fedavg"),
        summary="learned model + secret decoder; steals the brightest image of a batch",
    )

    def __init__(self, norm: str = "batch", batch_size: int = 16, prop: str = "brightest") -> None:
        self.cfg = SeerConfig(norm=norm, batch_size=batch_size, prop=prop)

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, Any]:
        """Replace the honest weights with the trained ones (same architecture and names)."""
        parts = load_seer(self.cfg)
        honest = model.state_dict()
        trained = parts.model.state_dict()
        if {k: v.shape for k, v in honest.items()} != {k: v.shape for k, v in trained.items()}:
            raise GradguardError(
                f"SEER weights are for the digits resnet with {self.cfg.norm} norm; "
                "the honest model differs (use --model resnet --dataset digits)"
            )
        model.load_state_dict(trained)
        return model, parts

    def reconstruct(self, update: Update, secrets: SeerParts) -> Reconstruction:
        grads = update.as_gradient()
        with torch.no_grad():
            image = secrets.decode(grads)
        return Reconstruction(image, info={"property": self.cfg.prop})
