"""CUDA smoke check of the geometry-dependent paths: the GPU computes what the CPU computes.

    python -m benchmarks.gpu_smoke [--config config/toy.yaml]

Builds the config's model once, copies it to the GPU, and compares on random
inputs of 8k+1 and other sizes: the MSC outputs in training mode (caffe and
pytorch geometry), the Caffe loss terms and their gradients, and inference
with padding and test-time scales. TF32 is switched off so that float32 on
the GPU is comparable with the CPU. Exits non-zero on a mismatch.
"""

import sys

import click
import torch

from libs.inference.predict import predict_probs
from libs.models import build_model
from libs.training.loss import msc_loss_terms
from libs.utils.config import load_config

RTOL, ATOL = 1e-3, 1e-4


def compare(name, cpu, gpu):
    """Print the largest difference; True when within tolerance."""
    gpu = gpu.detach().float().cpu()
    cpu = cpu.detach().float()
    ok = cpu.shape == gpu.shape and torch.allclose(cpu, gpu, rtol=RTOL, atol=ATOL)
    diff = (cpu - gpu).abs().max().item() if cpu.shape == gpu.shape else float("inf")
    print(f"{'ok ' if ok else 'BAD'} {name:<48} max |cpu - gpu| = {diff:.2e}", flush=True)
    return ok


def training_pass(model, x, labels, device):
    """Train-mode outputs, loss terms and one ASPP gradient, computed on ``device``."""
    model.to(device).train().zero_grad()
    outputs = model(x.to(device))
    terms = msc_loss_terms(outputs, labels.to(device), 255, model.scales, model.geometry)
    terms.sum().backward()
    grad = model.base.aspp["c0"].weight.grad.detach().cpu().clone()
    model.cpu()
    return [o.detach().cpu() for o in outputs], terms.detach().cpu(), grad


def training_checks(model, size, n_classes, device):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)
    labels = torch.randint(0, n_classes, (2, *size))
    labels[0, :5] = 255
    out_c, terms_c, grad_c = training_pass(model, x, labels, torch.device("cpu"))
    out_g, terms_g, grad_g = training_pass(model, x, labels, device)
    ok = all(compare(f"{model.geometry} MSC output {i} at {size}", a, b)
             for i, (a, b) in enumerate(zip(out_c, out_g)))
    ok &= compare(f"{model.geometry} loss terms at {size}", terms_c, terms_g)
    return ok & compare(f"{model.geometry} ASPP gradient at {size}", grad_c, grad_g)


def inference_checks(model, size, device):
    torch.manual_seed(2)
    x = torch.randn(1, 3, *size)
    model.eval()
    with torch.no_grad():
        cpu = predict_probs(model.cpu(), x, size, tta_scales=(0.75, 1.0), flip=True)
        gpu = predict_probs(model.to(device), x.to(device), size, tta_scales=(0.75, 1.0),
                            flip=True)
    model.cpu()
    return compare(f"{model.geometry} TTA + flip probabilities at {size}", cpu, gpu)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default="config/toy.yaml", show_default=True)
def main(config_path):
    """Compare the GPU against the CPU on the geometry-dependent paths."""
    if not torch.cuda.is_available():
        raise click.ClickException("no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = load_config(config_path)
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(device), torch.__version__, flush=True)
    ok = True
    for geometry in ("caffe", "pytorch"):
        model_cfg = cfg.MODEL.to_dict() | {"MSC": cfg.MODEL.MSC.to_dict() | {"GEOMETRY": geometry}}
        torch.manual_seed(0)
        model = build_model(type(cfg)(model_cfg), cfg.DATASET.N_CLASSES)
        for size in ((97, 97), (65, 81)):
            ok &= training_checks(model, size, cfg.DATASET.N_CLASSES, device)
            ok &= inference_checks(model, size, device)
    print("all match" if ok else "MISMATCH", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
