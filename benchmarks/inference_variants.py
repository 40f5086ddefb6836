"""Helpers of bench_inference: the ONNX Runtime variant and the quick-start agreement table."""

import subprocess
import sys
import time

import torch

from libs.datasets import build_dataset
from libs.inference.predict import load_model, predict_probs
from libs.models.prepared import prepare_for_inference
from libs.utils.config import load_config
from libs.utils.device import cpu_native_bf16

ORT_THREADS = 2  # the development machine's cores; ONNX Runtime otherwise picks its own


def onnx_variant(net, example, workdir, log):
    """``net`` exported to ONNX and run by ONNX Runtime, or None (with the reason) if unavailable."""
    try:
        from libs.inference.onnx_model import OnnxModel
        from libs.models.export import export_onnx
    except ImportError as e:
        log(f"  ONNX Runtime skipped: {e}")
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    start = time.perf_counter()
    export_onnx(net, path, example_size=tuple(example.shape[-2:]))
    log(f"  ONNX export: {time.perf_counter() - start:.1f} s, "
        f"{path.stat().st_size / 2 ** 20:.0f} MiB")
    return OnnxModel(path, "cpu", threads=ORT_THREADS)


def toy_checkpoint(repo_root, log):
    """The quick-start config and its trained checkpoint (trained now, about a minute, if absent)."""
    config = repo_root / "config" / "toy.yaml"
    cfg = load_config(config)
    checkpoint = repo_root / cfg.EXP.OUTPUT_DIR / cfg.EXP.ID / "checkpoint_final.pth"
    if not checkpoint.is_file():
        log(f"\n{checkpoint} missing: training the quick-start model first")
        subprocess.run([sys.executable, "train.py", "--config", str(config), "--no-eval"],
                       cwd=repo_root, check=True)
    return cfg, checkpoint


def toy_variants(model, workdir, log):
    variants = {"prepared fp32": prepare_for_inference(model, "fp32")}
    supported, reason = cpu_native_bf16()
    if supported:
        variants["prepared bf16"] = prepare_for_inference(model, "bf16")
    else:
        log(f"  bf16 agreement skipped: {reason}")
    example = torch.zeros(1, 3, 65, 65)
    onnx = onnx_variant(model, example, workdir, log)
    if onnx is not None:
        variants["ONNX Runtime"] = onnx
    return variants


def agreement_table(cfg, checkpoint, workdir, log):
    """Share of test pixels whose argmax equals the plain fp32 model's, per variant."""
    model = load_model(cfg, checkpoint, torch.device("cpu"), log=lambda line: None)
    variants = toy_variants(model, workdir, log)
    dataset = build_dataset(cfg, "test", augment=False)
    same = {key: 0 for key in variants}
    total = 0
    with torch.inference_mode():
        for index in range(len(dataset)):
            _, image, label = dataset[index]
            size = tuple(label.shape)
            reference = predict_probs(model, image[None], size).argmax(1)
            for key, variant in variants.items():
                labels = predict_probs(variant, image[None], size).argmax(1)
                same[key] += (labels == reference).sum().item()
            total += reference.numel()
    log(f"\nargmax agreement with the plain fp32 model, quick-start model, "
        f"{len(dataset)} synthetic test images ({total:,} pixels)")
    log("| variant | same label |")
    log("|---|---:|")
    for key in variants:
        log(f"| {key} | {same[key] / total:.4%} |")
