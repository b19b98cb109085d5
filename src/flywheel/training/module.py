"""The LightningModule: weighted cross-entropy (class imbalance), AdamW, accuracy.

It wraps a classifier from `flywheel.training.model`. With `compile=True` the forward pass
goes through `torch.compile` while `self.model` stays the plain module (its state dict and
the exported MLflow model carry no compile wrappers). Imports only torch and Lightning.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


def make_optimizer(params, lr: float, weight_decay: float, device: torch.device):
    """The optimizer of every flywheel run (and of the bare-loop baselines)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        class_weights: torch.Tensor,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        compile: bool = False,
    ):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.register_buffer("class_weights", class_weights.float())
        # Not a submodule: keeps `model.*` keys in the state dict whether compiled or not.
        object.__setattr__(self, "_forward", torch.compile(model) if compile else model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, weight=self.class_weights)
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y)
        )
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, batch_size=len(y), prog_bar=True)
        self.log(
            "val_accuracy", acc, on_epoch=True, sync_dist=True, batch_size=len(y), prog_bar=True
        )

    def configure_optimizers(self):
        return make_optimizer(self.parameters(), self.lr, self.weight_decay, self.device)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class indices for `x` (eval mode, on the model's device)."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
