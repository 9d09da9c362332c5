import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_under_torchrun_keeps_ranks_identical_and_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # rank 1 started elsewhere
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [s["world_size"] for s in seen] == [2, 2] and all(s["group_left"] for s in seen)
    assert seen[0]["losses"] == seen[1]["losses"] and seen[0]["eval"] == seen[1]["eval"]
    assert seen[0]["losses"][-1] < seen[0]["losses"][0]

    # Only rank 0 wrote the checkpoint, and it is the trained model.
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 2 * 4
    assert not list((tmp_path / "run").glob("*.tmp")) and not list((tmp_path / "run").glob(".*"))

    # Two half batches averaged by DDP are one full batch: the same run as in one process.
    worker = _worker_module()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = worker.toy_model(seed=0)
        single = worker.fit(model, worker.toy_data(), None, worker.CONFIG, tmp_path / "single",
                            progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert single["global_step"] == info["global_step"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ranks[0][key], atol=1e-5, rtol=1e-4)


def test_train_sam_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node 2 -m attnvision train sam`: one run, the model on rank 0's
    disk, the same weights on both ranks (every parameter is reduced, even unused ones)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "sam"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "-m", "attnvision", "train", "sam", "--scenes", "4",
           "--eval-scenes", "1", "--epochs", "1", "--batch-size", "4", "--rounds", "1",
           "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "model.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 1
    assert info["metrics"]["eval"]["objects"] > 0
