"""Data-parallel training over the processes that ``torchrun`` starts.

``fit`` calls :func:`setup` first: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1 in the
environment) it joins the process group (gloo on CPU, nccl on CUDA, one GPU per local rank);
in a plain ``python`` run it does nothing and every helper answers as for a single process.

Data sharding is ``DistributedSampler``'s, written out so that one process and N processes walk
the same global batches: every rank draws the same permutation (seeded with seed + epoch, as
``set_epoch`` does), pads it by repeating its head to a multiple of N, and rank r takes every
N-th index from r. Each rank then cuts its shard into batches of batch_size // N, so global
step s sees exactly the examples a single process would see at step s (when N divides both the
dataset and the batch size), and the learning-rate schedule has the same number of steps.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def launched_distributed() -> bool:
    """True in a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True once this process belongs to a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; outside a group, torchrun's RANK (so it holds after ``fit``)."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Only the main process writes files and draws progress bars."""
    return rank() == 0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` means CUDA if there is one, else CPU; a bare "cuda" means this rank's GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() if launched_distributed()
                              else torch.cuda.current_device())
    return device


def setup(device: str | torch.device | None = None) -> bool:
    """Join torchrun's process group if launched by it and not yet joined; True if joined here."""
    if is_distributed() or not launched_distributed():
        return False
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Rendezvous comes from torchrun's MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE variables.
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def cleanup() -> None:
    """Leave the process group (no-op in a single process)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in a process group, else the model itself."""
    if not is_distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as it is on rank ``src``, on every rank (picklable objects)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: Tensor) -> Tensor:
    """Element-wise sum over ranks (in place, returned for convenience)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def steps_per_epoch(num_examples: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps in one epoch: every rank takes the same number."""
    shard = math.ceil(num_examples / world)
    return math.ceil(shard / max(1, batch_size // world))


def epoch_batches(num_examples: int, batch_size: int, seed: int, epoch: int,
                  rank: int = 0, world: int = 1) -> list[Tensor]:
    """This rank's index batches for one epoch (``DistributedSampler`` with ``set_epoch``)."""
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed + epoch))
    padded = math.ceil(num_examples / world) * world
    if padded > num_examples:  # repeat the head so every rank gets as many examples
        order = order.repeat(math.ceil(padded / num_examples))[:padded]
    shard = order[rank::world]
    return list(shard.split(max(1, batch_size // world)))
