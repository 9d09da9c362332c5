"""Fine-tuning an official vit_b checkpoint, as the issue's users would: the file the official
package writes, ``--init sam_vit_b_01ec64.pth --freeze image_encoder``, a COCO dataset."""

import json

import torch
from segment_anything import sam_model_registry as official_registry

from attnvision.cli import main
from attnvision.sam import build_sam
from tests.test_sam_training import write_coco


def test_official_vit_b_decoder_fine_tunes_on_coco(tmp_path, capsys):
    annotations, _ = write_coco(tmp_path, n_images=1, size=(48, 64))
    torch.manual_seed(0)
    official = official_registry["vit_b"]()
    init = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(official.state_dict(), init)
    out = tmp_path / "tuned"
    code = main(["train", "sam", "--coco", str(annotations), "--init", str(init),
                 "--freeze", "image_encoder,prompt_encoder", "--epochs", "1",
                 "--batch-size", "1", "--rounds", "1", "--out", str(out), "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["model"] == "vit_b"
    assert result["frozen"] == ["image_encoder", "prompt_encoder"]
    decoder = sum(p.numel() for p in official.mask_decoder.parameters())
    assert result["parameters_trained"] == decoder  # the mask decoder only
    tuned = build_sam(None, result["files"]["checkpoint"])  # vit_b, read from the file
    start = official.state_dict()
    for key, value in tuned.state_dict().items():
        if not key.startswith("mask_decoder."):  # the frozen parts are the official weights
            assert torch.equal(value, start[key]), key
    assert any(not torch.equal(v, start[k]) for k, v in tuned.state_dict().items()
               if k.startswith("mask_decoder."))
