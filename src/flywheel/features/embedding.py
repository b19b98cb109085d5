"""The embedding representation: a vision backbone turns each item image into one vector.

    FLYWHEEL_REPRESENTATION=embedding
    FLYWHEEL_BACKBONE=facebook/dinov2-small      a Hugging Face model id, or a local directory
    FLYWHEEL_BACKBONE_WEIGHTS=pretrained|none|PATH

- `pretrained`: the model's published weights, downloaded ONCE on the user's machine into
  `FLYWHEEL_BACKBONE_CACHE` (default `<home>/cache/backbones/<model id with / as -->/`, the
  `save_pretrained` layout) and read from there, offline, ever after.
- `none`: random initialisation from the model's config, seeded, so every process (feature
  build, transformer) builds the same weights: for tests, CI and offline demos.
- `PATH`: a local directory in the `save_pretrained` layout (config.json + model.safetensors),
  or one weights file (`.safetensors`, or a torch state dict `.pt`/`.bin`) for the
  architecture FLYWHEEL_BACKBONE names: for air-gapped institutions.

Library: Hugging Face `transformers` (AutoConfig / AutoModel, safetensors). timm and
torchvision were the first choice, but PyPI's torchvision does not load beside the platform's
torch 2.13 CPU build ("operator torchvision::nms does not exist") and timm imports it;
transformers' vision backbones (DINOv2, ViT, ResNet, ConvNeXt, ...) need no torchvision.

`embed_images(images, settings)` is THE one function that embeds images: the feature build
(batched, with progress) and the transformer's inline images both call it, so a vector
served for an inline image equals the stored one. Preprocessing: RGB, a bicubic resize of
the whole image (no crop: a manuscript's margin may matter) to a square of
`FLYWHEEL_BACKBONE_IMAGE_SIZE`, scaled to [0, 1] and normalised with the model's mean/std
(ImageNet's when the model has none). The vector is the model's pooled output (the CLS token
after the last layer norm for ViT/DINOv2, global average pooling for CNNs), float32.

A representation id `<model>-<side>-<first 12 hex of the weights' sha256>` names the vectors
of one backbone: feature rows are keyed by it (never two backbones' vectors mixed) and every
model trained on them records it, with the backbone name and the full weights digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from flywheel.errors import InputError, SettingsError
from flywheel.settings import Settings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED = 0  # random initialisation (`none`): the same weights in every process


@dataclass(frozen=True)
class BackboneSpec:
    """What to load: recorded on every model trained on its vectors, so a server can
    rebuild the same backbone for inline images."""

    name: str
    weights: str = "pretrained"
    image_size: int = 224
    cache: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "cache"}


@dataclass
class Backbone:
    spec: BackboneSpec
    model: object  # torch.nn.Module, eval mode, on `device`
    device: str
    dim: int
    digest: str  # sha256 of the weights (names, dtypes, shapes, bytes)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def representation_id(self) -> str:
        return f"{slug(self.spec.name)}-{self.spec.image_size}-{self.digest[:12]}"


def slug(name: str) -> str:
    """A model id as a file and key name: `facebook/dinov2-small` -> `facebook--dinov2-small`."""
    text = Path(name).name if Path(name).is_dir() else name.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "backbone"


def spec_for(settings: Settings) -> BackboneSpec:
    return BackboneSpec(
        settings.backbone,
        settings.backbone_weights,
        settings.backbone_image_size,
        str(cache_dir(settings)),
    )


def cache_dir(settings: Settings) -> Path:
    """Where `pretrained` backbones are kept after their one download."""
    return settings.backbone_cache or settings.home / "cache" / "backbones"


def backbone_for(settings: Settings) -> Backbone:
    """The configured backbone (loaded once per process and configuration)."""
    return load_backbone(spec_for(settings))


# --- loading --------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def load_backbone(spec: BackboneSpec) -> Backbone:
    """Load the backbone `spec` names, on the GPU when there is one. SettingsError when the
    weights or config cannot be found, naming the setting to change."""
    import torch

    model = _load_model(spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.float().eval().to(device)
    mean, std = _normalisation(spec)
    backbone = Backbone(spec, model, device, 0, weights_digest(model), mean, std)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, spec.image_size, spec.image_size, device=device)
        backbone.dim = int(_pooled(model, probe).shape[-1])
    return backbone


def _local_dir(spec: BackboneSpec) -> Path | None:
    """A directory holding the model: the backbone itself, or its cached download."""
    if Path(spec.name).is_dir():
        return Path(spec.name)
    cached = Path(spec.cache) / slug(spec.name) if spec.cache else None
    if cached is not None and (cached / "config.json").exists():
        return cached
    return None


def _load_model(spec: BackboneSpec):
    from transformers import AutoModel

    weights = spec.weights
    if weights == "pretrained":
        where = _local_dir(spec)
        if where is None or not _has_weights(where):
            where = _download(spec)
        return AutoModel.from_pretrained(str(where), local_files_only=True)
    if weights == "none":
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return AutoModel.from_config(_config(spec))
    path = Path(weights).expanduser()
    if not path.exists():
        raise SettingsError(
            f"FLYWHEEL_BACKBONE_WEIGHTS={weights!r}: no such file or directory; use "
            "pretrained, none, or the path of a weights file or model directory"
        )
    if path.is_dir():
        return AutoModel.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_config(_config(spec))
    _load_state(model, path)
    return model


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def _config(spec: BackboneSpec):
    """The architecture: from a local directory, the cache, or (once) the hub."""
    from transformers import AutoConfig

    local = _local_dir(spec)
    if local is not None:
        return AutoConfig.from_pretrained(str(local), local_files_only=True)
    try:
        return AutoConfig.from_pretrained(spec.name, cache_dir=str(Path(spec.cache) / "hub"))
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, bad config
        raise SettingsError(
            f"FLYWHEEL_BACKBONE={spec.name!r}: cannot read its config ({_first_line(exc)}); "
            "on a machine without network give a local model directory instead"
        ) from None


def _load_state(model, path: Path) -> None:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as exc:  # noqa: BLE001 - truncated, not a state dict, ...
        raise SettingsError(
            f"FLYWHEEL_BACKBONE_WEIGHTS={str(path)!r} is not a readable weights file "
            f"({_first_line(exc)})"
        ) from None
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    if prefix != "." and state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ
        raise SettingsError(
            f"FLYWHEEL_BACKBONE_WEIGHTS={str(path)!r} does not fit FLYWHEEL_BACKBONE: "
            f"{_first_line(exc)}"
        ) from None
    if missing or unexpected:
        raise SettingsError(
            f"FLYWHEEL_BACKBONE_WEIGHTS={str(path)!r} does not fit FLYWHEEL_BACKBONE: "
            f"{len(missing)} weight(s) missing (e.g. {missing[:3]}), {len(unexpected)} "
            f"unexpected (e.g. {unexpected[:3]})"
        )


def _download(spec: BackboneSpec) -> Path:
    """Download the published weights once and keep them as `<cache>/<slug>/`."""
    from transformers import AutoModel

    if not spec.cache:
        raise SettingsError("no backbone cache directory (FLYWHEEL_BACKBONE_CACHE)")
    target = Path(spec.cache) / slug(spec.name)
    print(f"downloading the backbone {spec.name} once into {target}", file=sys.stderr, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    hub = Path(spec.cache) / "hub"
    try:
        model = AutoModel.from_pretrained(spec.name, cache_dir=str(hub))
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated model
        raise SettingsError(
            f"cannot download the backbone {spec.name!r} ({_first_line(exc)}); without "
            "network set FLYWHEEL_BACKBONE_WEIGHTS to a local weights file or directory"
        ) from None
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        model.save_pretrained(str(staging))
        _copy_preprocessor(spec.name, hub, staging)
        if target.exists():  # another process was faster
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _copy_preprocessor(name: str, hub: Path, folder: Path) -> None:
    """Keep the model's preprocessor_config.json (its mean/std) beside the weights."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(name, "preprocessor_config.json", cache_dir=str(hub))
        shutil.copyfile(path, folder / "preprocessor_config.json")
    except Exception:  # noqa: BLE001 - optional: ImageNet's mean/std otherwise
        pass


def _normalisation(spec: BackboneSpec) -> tuple[tuple, tuple]:
    local = _local_dir(spec)
    if spec.weights not in ("pretrained", "none") and Path(spec.weights).is_dir():
        local = Path(spec.weights)
    config = local / "preprocessor_config.json" if local else None
    if config is not None and config.exists():
        data = json.loads(config.read_text())
        mean, std = data.get("image_mean"), data.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            return tuple(map(float, mean)), tuple(map(float, std))
    return IMAGENET_MEAN, IMAGENET_STD


def weights_digest(model) -> str:
    """sha256 over the model's state dict: every name, dtype, shape and byte."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --- embedding ----------------------------------------------------------------------------


def preprocess(image, side: int, mean, std) -> np.ndarray:
    """One image -> float32 [3, side, side], normalised (see the module docstring)."""
    from PIL import Image

    from flywheel.features.representation import open_image

    try:
        img = open_image(image).convert("RGB")
        if img.size != (side, side):
            img = img.resize((side, side), Image.Resampling.BICUBIC)
        array = np.asarray(img, dtype=np.float32) / 255.0
    except OSError as exc:  # truncated or corrupt data fails at decode, not at open
        raise InputError(f"cannot read image {_describe(image)}: {exc}") from None
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _describe(image) -> str:
    return "bytes" if isinstance(image, bytes | bytearray) else str(getattr(image, "name", image))


def _pooled(model, pixel_values):
    out = model(pixel_values=pixel_values)
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        pooled = out.last_hidden_state.mean(dim=1)
    return pooled.reshape(len(pixel_values), -1)


def forward(backbone: Backbone, batch: np.ndarray) -> np.ndarray:
    """The bare batched forward: preprocessed float32 [n, 3, s, s] -> vectors [n, d]."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(batch).to(backbone.device, non_blocking=True)
        return _pooled(backbone.model, x).float().cpu().numpy()


def embed_images(
    images: Sequence,
    settings: Settings | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    backbone: Backbone | None = None,
) -> np.ndarray:
    """Embed images (PIL images, bytes or paths): float32 [n, d], in order.

    Batches of `FLYWHEEL_BACKBONE_BATCH`; the next batch is decoded and resized in a
    thread while the backbone runs the current one. Unreadable images raise InputError.
    """
    if backbone is None:
        if settings is None:
            raise SettingsError("embed_images needs the settings or a loaded backbone")
        backbone = backbone_for(settings)
    size = settings.backbone_batch if settings is not None else 32
    side = backbone.spec.image_size
    images = list(images)
    if not images:
        return np.zeros((0, backbone.dim), dtype=np.float32)

    def prepare(chunk):
        return np.stack([preprocess(i, side, backbone.mean, backbone.std) for i in chunk])

    chunks = [images[i : i + size] for i in range(0, len(images), size)]
    out, done = [], 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, chunks[0])
        for n in range(len(chunks)):
            batch = pending.result()
            if n + 1 < len(chunks):
                pending = pool.submit(prepare, chunks[n + 1])
            out.append(forward(backbone, batch))
            done += len(batch)
            if on_progress:
                on_progress(done, len(images))
    return np.concatenate(out).astype(np.float32, copy=False)


def embedding(image, settings: Settings | None = None) -> np.ndarray:
    """The `embedding` representation of one image (a 1-d float32 vector)."""
    if settings is None:
        raise SettingsError("the embedding representation needs the settings (its backbone)")
    return embed_images([image], settings)[0]
