"""The official CoTracker3 outputs beside the repository (../shared/fixtures/cotracker3, its
README says what each file holds), read in place; a test skips, saying where it looked, when
they are absent."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cotracker3"
COORDS_TOL, PROB_TOL = 0.05, 1e-3  # the README's bar: px, probabilities


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"CoTracker3 fixtures not found at {FIXTURES} (official outputs, "
                    f"made from facebookresearch/co-tracker; see its README)")
    return path


def load_cases() -> dict[str, torch.Tensor]:
    """Every case's inputs and official outputs, keyed CASE.NAME."""
    return load_file(fixture("cases.safetensors"))


def load_spec() -> dict:
    """cases.json: each case's kind and arguments, the small model's sizes."""
    return json.loads(fixture("cases.json").read_text())
