"""Run by tests/test_ddp.py under torchrun: train a toy classifier with ``fit`` on every rank.

    python -m torch.distributed.run --nproc_per_node 2 --standalone tests/ddp_worker.py OUT

Each rank writes OUT/rank{r}.safetensors (its final weights) and OUT/rank{r}.json (what it saw).
The model is initialised with seed = rank on purpose: DistributedDataParallel must start every
rank from rank 0's weights.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from attnvision.train import TrainConfig, fit
from attnvision.train.ddp import rank, world_size

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=1e-2, warmup_epochs=0.5)


def toy_data(n: int = 64) -> TensorDataset:
    """Four Gaussian blobs in 8 dimensions, 16 points each."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    centres = torch.randn(4, 8, generator=g) * 2
    return TensorDataset(centres[y] + torch.randn(n, 8, generator=g), y)


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 4))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    model = toy_model(seed=int(os.environ["RANK"]))
    data = toy_data()
    result = fit(model, data, data, CONFIG, out / "run", progress=False, device="cpu")
    r = rank()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              out / f"rank{r}.safetensors")
    seen = {"rank": r, "world_size": world_size(), "group_left": not dist.is_initialized(),
            "losses": [h["train_loss"] for h in result["history"]], "eval": result["eval"]}
    (out / f"rank{r}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
