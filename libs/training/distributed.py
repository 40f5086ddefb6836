"""Process-group helpers: the same code runs alone or under ``torchrun``."""

import os

import torch
import torch.distributed as dist


def setup(use_cuda):
    """Join the process group when launched by torchrun; return ``(rank, world, device)``. NCCL on
    GPUs, Gloo on CPUs. Each process drives the GPU of its LOCAL_RANK."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # not under torchrun
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    device = torch.device("cpu")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), device


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size():
    """This process's rank and the number of processes: ``(0, 1)`` outside a process group."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def all_reduce_sum(tensor):
    """Sum a tensor over all processes (a no-op when running alone)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def cleanup():
    if is_distributed():
        dist.destroy_process_group()


def wants_data_parallel(use_cuda, world_size):
    """One process that sees several GPUs spreads each batch over them (DataParallel)."""
    return use_cuda and world_size == 1 and torch.cuda.device_count() > 1


def sync_batchnorm(model, device):
    """Turn each training BatchNorm (exactly ``nn.BatchNorm2d``: the frozen ones are a subclass) of
    ``model`` into ``SyncBatchNorm`` in place, keeping its tensors; returns the count. CUDA only: on
    CPUs (Gloo) each process keeps its own batch statistics (docs/model.md, "BatchNorm")."""
    if device.type != "cuda":
        return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.BatchNorm2d:
                parent.add_module(name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
                count += 1
    return count


def wrap_model(model, device, world_size, data_parallel):
    """The module that runs the batches: DDP (with :func:`sync_batchnorm`) under torchrun,
    DataParallel, or the model itself."""
    if world_size > 1:
        sync_batchnorm(model, device)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.nn.DataParallel(model) if data_parallel else model
