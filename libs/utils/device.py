"""Which device to compute on."""

import torch

from .errors import DeviceError


def choose_device(cuda):
    """``cuda`` None means "CUDA when available"; an explicit ``True`` without CUDA is an error."""
    available = torch.cuda.is_available()
    if cuda and not available:
        raise DeviceError("--cuda: CUDA is not available on this machine (use --no-cuda)")
    return torch.device("cuda" if (available if cuda is None else cuda) else "cpu")
