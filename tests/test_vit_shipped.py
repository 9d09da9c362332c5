"""The ViT that ships in the package: its accuracy, and classify on pictures a person makes."""

import json

import numpy as np
from PIL import Image

from attnvision.cli import main
from attnvision.data.datasets import load_dataset
from attnvision.train.loop import evaluate_classifier
from attnvision.vit.pretrained import load_shipped


def test_shipped_model_meets_the_mnist5k_target():
    model = load_shipped()
    assert model.config.img_size == 28 and model.num_parameters() < 2_000_000
    metrics = evaluate_classifier(model, load_dataset("mnist5k").test)
    assert metrics["accuracy"] >= 0.95
    assert min(metrics["per_class_accuracy"]) >= 0.85


def test_classify_reads_dark_ink_on_white_paper_at_any_size(tmp_path, capsys):
    x, y = load_dataset("mnist5k").test.tensors
    paths, labels = [], []
    for c in range(10):
        i = int((y == c).nonzero()[1])  # not the demo's digit: the second of each class
        ink = (255 - x[i, 0].numpy() * 255).astype(np.uint8)  # dark on light
        page = np.full((200, 160), 255, np.uint8)
        page[30:142, 20:132] = np.asarray(Image.fromarray(ink).resize((112, 112)))
        Image.fromarray(page).convert("RGB").save(tmp_path / f"{c}.jpg", quality=92)
        paths.append(str(tmp_path / f"{c}.jpg"))
        labels.append(str(c))
    assert main(["classify", *paths, "--json", "--quiet"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    predicted = [r["top_k"][0]["class"] for r in results]
    assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 9
