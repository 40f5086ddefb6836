"""Which device to compute on."""

import torch

from .errors import ConfigError


def choose_device(cuda):
    """``cuda`` None means "CUDA when available"; an explicit ``True`` without CUDA is an error."""
    available = torch.cuda.is_available()
    if cuda and not available:
        raise ConfigError("--cuda: CUDA is not available on this machine (use --no-cuda)")
    return torch.device("cuda" if (available if cuda is None else cuda) else "cpu")


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 arithmetic


def cpu_flags():
    """The CPU feature flags the kernel reports (Linux), or an empty set elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bf16():
    """``(supported, reason)``: whether this CPU computes bf16 natively (AMX or AVX512-BF16; else
    PyTorch emulates bf16 matrix products, ~100x slower than fp32). Without /proc/cpuinfo,
    oneDNN's own check decides."""
    if flags := cpu_flags():
        found = [f for f in BF16_CPU_FLAGS if f in flags]
        if found:
            return True, f"the CPU has {found[0]}"
        return False, ("the CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated, ~100x "
                       "slower)")
    supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return supported, "oneDNN reports " + ("native" if supported else "no native") + " bf16"


def require_precision(precision, device):
    """Refuse a precision ``device`` cannot run fast, with one line saying why."""
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16: float16 inference needs CUDA; use fp32 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16: this GPU has no bf16 support; use fp16")
    if precision == "bf16" and device.type != "cuda":
        supported, reason = cpu_native_bf16()
        if not supported:
            raise ConfigError(f"--precision bf16: {reason}; use fp32")
