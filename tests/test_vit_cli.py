"""The ViT commands end to end, on a small model trained here on scikit-learn's digits."""

import json

import numpy as np
import pytest
from PIL import Image

from attnvision.cli import main
from attnvision.vit import load_checkpoint


def run(capsys, *args: str) -> tuple[int, dict]:
    code = main([*args, "--json", "--quiet"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else {})


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    code = main(["train", "vit", "--dataset", "digits", "--epochs", "10", "--batch-size", "32",
                 "--lr", "3e-3", "--warmup-epochs", "1", "--out", str(out), "--json", "--quiet"])
    assert code == 0
    return out


def test_train_writes_a_self_describing_checkpoint(digits_run):
    meta = json.loads((digits_run / "model.json").read_text())
    assert meta["epoch"] == 10 and len(meta["history"]) == 10
    model = load_checkpoint(digits_run / "model.safetensors")
    assert model.config.img_size == 8 and model.config.class_names[3] == "3"
    assert meta["metrics"]["eval"]["accuracy"] > 0.5  # well above chance after 10 short epochs


def test_eval_reports_accuracy_and_draws_the_confusion_matrix(digits_run, tmp_path, capsys):
    code, result = run(capsys, "eval", "vit", "--checkpoint",
                       str(digits_run / "model.safetensors"), "--dataset", "digits",
                       "--out", str(tmp_path))
    assert code == 0
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 360
    assert result["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert len(result["per_class_accuracy"]) == 10
    with Image.open(result["files"][0]) as img:
        assert img.format == "PNG"


def test_classify_and_explain_with_a_bad_file_among_good_ones(digits_run, tmp_path, capsys):
    from attnvision.data.datasets import load_dataset

    x, y = load_dataset("digits").test.tensors
    paths = []
    for i in range(3):
        p = tmp_path / f"digit{int(y[i])}.png"
        Image.fromarray((255 - x[i, 0].numpy() * 255).astype(np.uint8)).resize(
            (64, 64), Image.NEAREST).save(p)  # dark on white, larger: as a user would draw it
        paths.append(str(p))
    (tmp_path / "notes.png").write_text("not an image")
    ckpt = str(digits_run / "model.safetensors")
    code, result = run(capsys, "classify", *paths, str(tmp_path / "notes.png"),
                       "--checkpoint", ckpt, "--top-k", "2")
    assert code == 3  # partial success: one input skipped and reported
    assert [r["path"] for r in result["results"]] == paths
    assert all(len(r["top_k"]) == 2 for r in result["results"])
    assert result["skipped"][0]["path"].endswith("notes.png")
    code, result = run(capsys, "explain", "vit", *paths, "--checkpoint", ckpt,
                       "--out", str(tmp_path / "expl"))
    assert code == 0 and len(result["files"]) == 3
    for f in result["files"]:
        with Image.open(f) as img:
            assert img.size[0] > 500


@pytest.mark.parametrize("args, message", [
    (["classify", "{bad}", "--checkpoint", "{ckpt}"], "none of the images could be read"),
    (["eval", "vit", "--checkpoint", "{ckpt}", "--dataset", "mnist5k"], "use the dataset"),
    (["classify", "{bad}", "--checkpoint", "{missing}"], "checkpoint not found"),
    (["train", "vit", "--dataset", "mnist5k", "--config", "vit_digits", "--out", "{tmp}"],
     "is for 8px images"),
    (["train", "vit", "--dataset", "cifar", "--out", "{tmp}"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(digits_run, tmp_path, capsys, args, message):
    (tmp_path / "bad.png").write_text("x")
    subs = {"bad": str(tmp_path / "bad.png"), "ckpt": str(digits_run / "model.safetensors"),
            "missing": str(tmp_path / "nope.pth"), "tmp": str(tmp_path / "o")}
    try:
        code = main([a.format(**subs) for a in args] + ["--quiet"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and "Traceback" not in "".join(err)


def test_best_checkpoint_of_the_loop_loads_through_its_json(digits_run):
    model = load_checkpoint(digits_run / "best.safetensors")  # no metadata: config from best.json
    assert model.config.img_size == 8


def test_the_same_command_runs_under_torchrun(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "-m", "attnvision", "train", "vit", "--dataset", "digits", "--epochs", "2",
         "--out", str(tmp_path), "--json", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)  # one JSON document: only rank 0 reports
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["world_size"] == 2 and result["epochs"] == 2
    assert load_checkpoint(tmp_path / "model.safetensors").config.img_size == 8
