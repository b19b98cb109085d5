"""Training data: check a labelled frame, split it, and feed it to Lightning.

Input is a pandas frame with `item_id` (str), `label` (str) and `pixels` (float32 vector of
length `d`), as `flywheel.features.training_set` returns it. `prepare` checks it (each bad
input raises `InputError` naming the items and what to do) and splits it three ways:

- holdout: `flywheel.splits.is_holdout(item_id, holdout_fraction)`; never trained on, the
  fixed set every model is scored and compared on;
- validation: a second hash split of the remaining items (`val_fraction`), used for early
  stopping and for choosing sweep trials;
- train: the rest.

`DeviceBatches` keeps a split as two tensors on the training device (moved once in
`setup`) and slices shuffled batches from them: for the small per-item feature vectors of
this platform that beats a DataLoader by far, on CPU and GPU. Under DDP each rank reads
its own shard, padded so that every rank runs the same number of steps.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

from flywheel.errors import InputError
from flywheel.splits import is_holdout


@dataclass
class Split:
    """One part of the data: features `x` [n, d] float32, class indices `y` [n] int64."""

    x: torch.Tensor
    y: torch.Tensor
    item_ids: list[str]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Splits:
    train: Split
    val: Split
    holdout: Split
    classes: list[str]

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights of the training classes (absent classes get 0)."""
        counts = torch.bincount(self.train.y, minlength=len(self.classes)).float()
        weights = torch.zeros_like(counts)
        present = counts > 0
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights


def _in_validation(item_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"validation:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _names(items, limit: int = 5) -> str:
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(map(str, items[:limit])) + more


def prepare(
    frame,
    classes: list[str],
    d: int,
    holdout_fraction: float,
    val_fraction: float = 0.1,
    column: str = "pixels",
) -> Splits:
    """Check a labelled frame and split it into train / validation / holdout.
    `column` holds the feature vectors (`pixels`, or `embedding` for a head)."""
    missing = {"item_id", "label", column} - set(getattr(frame, "columns", []))
    if missing:
        raise InputError(f"the training frame lacks column(s) {', '.join(sorted(missing))}")
    if len(frame) == 0:
        raise InputError("the label snapshot is empty: label some items first")
    ids = frame["item_id"].astype(str).tolist()
    dup = frame["item_id"][frame["item_id"].duplicated()].unique()
    if len(dup):
        raise InputError(f"item ids appear more than once in the snapshot: {_names(dup)}")
    labels = frame["label"].astype(str).tolist()
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise InputError(
            f"labels not among the model's classes {classes} (FLYWHEEL_LABEL_CLASSES): "
            f"{_names(repr(u) for u in unknown)}"
        )
    present = sorted(set(labels), key=classes.index)
    if len(present) < 2:
        raise InputError(
            f"the label snapshot has only one class ({present[0]!r}): a classifier needs "
            "items of at least two classes"
        )
    bad_len = [i for i, p in zip(ids, frame[column], strict=True) if p is None or np.size(p) != d]
    if bad_len:
        why = "(FLYWHEEL_IMAGE_SIZE squared)" if column == "pixels" else "(the backbone's)"
        raise InputError(
            f"{column} features of {len(bad_len)} item(s) do not have length {d} "
            f"{why}: {_names(bad_len)}"
        )
    x = np.stack([np.asarray(p, dtype=np.float32) for p in frame[column]])
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(
            f"NaN or infinite pixel features in {int(bad.sum())} item(s): "
            f"{_names(np.array(ids)[bad])}; rebuild their features"
        )
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)

    hold = np.array([is_holdout(i, holdout_fraction) for i in ids])
    val = ~hold & np.array([_in_validation(i, val_fraction) for i in ids])
    train = ~hold & ~val
    if not hold.any():
        raise InputError(
            f"none of the {len(ids)} labelled items is in the holdout "
            f"(FLYWHEEL_HOLDOUT_FRACTION={holdout_fraction}): label more items or raise it"
        )
    if len(set(y[train])) < 2:
        raise InputError("the training part (outside the holdout) has fewer than two classes")

    def part(mask) -> Split:
        return Split(
            torch.from_numpy(x[mask]),
            torch.from_numpy(y[mask]),
            [i for i, m in zip(ids, mask, strict=True) if m],
        )

    return Splits(part(train), part(val), part(hold), list(classes))


def read_frame(settings, uri):
    """A labelled frame (or a snapshot) by URI: a local path or an s3:// object (the
    training set a pipeline step wrote, read by a TrainJob pod); pixels as float32."""
    from flywheel import objectstore

    if not objectstore.exists(settings, uri):
        raise InputError(f"no such file: {uri}")
    frame = objectstore.read_parquet(settings, uri)
    if "pixels" in frame.columns:
        frame["pixels"] = [
            None if p is None else np.asarray(p, dtype=np.float32) for p in frame["pixels"]
        ]
    return frame


def synthetic(n: int, d: int, n_classes: int, seed: int = 0) -> Splits:
    """Random features and labels, for throughput checks (no validation, no holdout)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen)
    y = torch.randint(0, n_classes, (n,), generator=gen)
    empty = Split(x[:0], y[:0], [])
    ids = [f"synthetic-{i}" for i in range(n)]
    return Splits(Split(x, y, ids), empty, empty, [str(c) for c in range(n_classes)])


class DeviceBatches:
    """Shuffled (x, y) batches sliced from tensors that already sit on the device."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        self.x, self.y = split.x, split.y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self.per_rank = math.ceil(len(self.y) / world) if len(self.y) else 0

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def __iter__(self):
        n = len(self.y)
        if n == 0:
            return
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        self.epoch += 1
        pad = self.per_rank * self.world - n  # like DistributedSampler: repeat a few items
        if pad:
            order = torch.cat([order, order[:pad]])
        mine = order[self.rank :: self.world].to(self.x.device)
        for start in range(0, len(mine), self.batch_size):
            idx = mine[start : start + self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)


class FlywheelData(L.LightningDataModule):
    """The DataModule: moves each split to the training device once, then slices."""

    def __init__(self, splits: Splits, batch_size: int, seed: int = 0):
        super().__init__()
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self.parts: dict[str, Split] = {}

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        self.rank = trainer.global_rank if trainer else 0
        self.world = trainer.world_size if trainer else 1
        for name in ("train", "val"):
            s = getattr(self.splits, name)
            self.parts[name] = Split(s.x.to(device), s.y.to(device), s.item_ids)

    def train_dataloader(self):
        return DeviceBatches(
            self.parts["train"], self.batch_size, True, self.seed, self.rank, self.world
        )

    def val_dataloader(self):
        return DeviceBatches(
            self.parts["val"], max(self.batch_size, 256), False, 0, self.rank, self.world
        )
