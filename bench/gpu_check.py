"""GPU check: flywheel's training entry point against a bare compiled PyTorch loop.

Both train the same ResNet-50 (flywheel.training.model, random init, 3x224x224 inputs,
1000 classes) with the same batch, AdamW and bf16 autocast, channels-last, torch.compile.

- flywheel: `torchrun --standalone --nproc_per_node=1 -m flywheel.training --synthetic N
  ... --compile --no-track`: Lightning, DDP (nccl), bf16-mixed, data resident on the GPU;
  samples/s measured by the entry point's own Throughput callback after the warm-up steps.
- bare: the loop a person would write by hand, on one fixed batch already on the GPU.

Run it through bench/gpu_check.sh (sets PYTHONPATH, caps the time). `--cpu` runs a tiny
configuration on the CPU (fp32, no compile) so the script is tested where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from flywheel.training.model import build_model
from flywheel.training.module import make_optimizer

GPU = dict(
    arch="resnet50",
    width=64,
    image=224,
    classes=1000,
    batch=256,
    warmup=25,
    steps=100,
    synthetic=12800,  # 50 batches an epoch: epoch boundaries are not what we time
    compile=True,
)
CPU = dict(
    arch="resnet50",
    width=8,
    image=32,
    classes=10,
    batch=8,
    warmup=2,
    steps=4,
    synthetic=64,
    compile=False,
)
LR = 1e-3


def flywheel(cfg: dict, device: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "flywheel.training",
            "--synthetic",
            str(cfg["synthetic"]),
            "--image-size",
            str(cfg["image"]),
            "--channels",
            "3",
            "--classes",
            str(cfg["classes"]),
            "--arch",
            cfg["arch"],
            "--width",
            str(cfg["width"]),
            "--batch-size",
            str(cfg["batch"]),
            "--lr",
            str(LR),
            "--max-steps",
            str(cfg["warmup"] + cfg["steps"]),
            "--max-epochs",
            "100000",
            "--warmup",
            str(cfg["warmup"]),
            "--accelerator",
            "gpu" if device == "cuda" else "cpu",
            "--no-track",
            "--result",
            str(result),
        ] + (["--compile"] if cfg["compile"] else [])
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, timeout=timeout, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"flywheel entry point failed (exit {proc.returncode})")
        out = json.loads(result.read_text())
        out["wall_s"] = time.perf_counter() - started
        return out


def bare(cfg: dict, device: str) -> dict:
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    torch.manual_seed(0)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    model = build_model(cfg["arch"], cfg["classes"], cfg["image"], 3, cfg["width"])
    model = model.to(dev, memory_format=torch.channels_last).train()
    opt = make_optimizer(model.parameters(), LR, 1e-4, dev)
    step = torch.compile(model) if cfg["compile"] else model
    b, s = cfg["batch"], cfg["image"]
    x = torch.rand(b, 3, s, s, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, cfg["classes"], (b,), device=dev)
    started = time.perf_counter()
    for i in range(cfg["warmup"] + cfg["steps"]):
        if i == cfg["warmup"]:
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            loss = F.cross_entropy(step(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if gpu:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {
        "samples_per_s": b * cfg["steps"] / elapsed,
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
        "wall_s": time.perf_counter() - started,
        "final_loss": float(loss.detach()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cpu", action="store_true", help="tiny CPU configuration")
    ap.add_argument("--steps", type=int, help="timed steps per loop")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu for the tiny CPU check")
    cfg = dict(CPU if args.cpu else GPU)
    cfg.update({k: v for k, v in (("steps", args.steps), ("batch", args.batch)) if v})
    if args.no_compile:
        cfg["compile"] = False
    import lightning

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    head = (
        f"device {name}; torch {torch.__version__}; lightning {lightning.__version__}; "
        f"{cfg['arch']} width {cfg['width']}, {cfg['image']}x{cfg['image']}x3, batch "
        f"{cfg['batch']}, {cfg['warmup']} warm-up + {cfg['steps']} timed steps, "
        f"{'bf16, ' if device == 'cuda' else 'fp32, '}compile={cfg['compile']}"
    )
    print(head, flush=True)
    fw = flywheel(cfg, device, timeout=220 if device == "cuda" else 280)
    print(f"flywheel done in {fw['wall_s']:.0f} s", flush=True)
    bl = bare(cfg, device)
    print(f"bare done in {bl['wall_s']:.0f} s", flush=True)
    ratio = fw["samples_per_s"] / bl["samples_per_s"]

    def mem(v):
        return "-" if v is None else f"{v:.1f}"

    prec = "bf16" if device == "cuda" else "fp32"
    backend = "nccl" if device == "cuda" else "gloo"
    bare_name = f"bare PyTorch (channels_last, {prec})"
    fw_name = f"flywheel entry point (Lightning, DDP {backend} x1)"
    lines = [
        head,
        f"{'loop':44} {'samples/s':>10} {'peak GiB':>9} {'wall s':>7}",
        f"{bare_name:44} {bl['samples_per_s']:10.0f} "
        f"{mem(bl['peak_gpu_mem_gib']):>9} {bl['wall_s']:7.0f}",
        f"{fw_name:44} {fw['samples_per_s']:10.0f} "
        f"{mem(fw['extra'].get('peak_gpu_mem_gib')):>9} {fw['wall_s']:7.0f}",
        f"ratio flywheel/bare: {ratio:.3f} (goal >= 0.95: "
        f"{'met' if ratio >= 0.95 else 'NOT met'}); mlflow imported by the entry point: "
        f"{fw['extra'].get('mlflow_imported')}",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.txt").write_text(text + "\n")
        (out / "gpu_check.json").write_text(
            json.dumps(
                {"config": cfg, "device": name, "flywheel": fw, "bare": bl, "ratio": ratio},
                default=str,
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
