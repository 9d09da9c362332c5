"""benchmarks/flops.py: the arithmetic it counts and the floor it derives, against equations."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load():
    spec = importlib.util.spec_from_file_location("flops", BENCHMARKS / "flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


flops = load()


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40))
def test_a_product_counts_two_operations_per_multiply_add(m, k, n):
    a, b = torch.randn(m, k), torch.randn(k, n)
    result, count = flops.counted_flops(lambda: a @ b)
    assert torch.equal(result, a @ b)
    assert count == 2 * m * k * n


def test_attention_is_counted_through_its_products():
    # Fused CPU attention has no formula in the counter; the math kernel's two products do.
    b, h, nq, nk, d = 2, 3, 17, 29, 8
    q, k, v = torch.randn(b, h, nq, d), torch.randn(b, h, nk, d), torch.randn(b, h, nk, d)
    _, count = flops.counted_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert count == 2 * (2 * b * h * nq * nk * d)


def test_a_convolution_counts_its_multiply_adds_per_output():
    x, w = torch.randn(1, 4, 10, 12), torch.randn(6, 4, 3, 3)
    _, count = flops.counted_flops(lambda: F.conv2d(x, w, padding=1))
    assert count == 2 * (6 * 10 * 12) * (4 * 3 * 3)


def test_the_floor_is_the_work_at_that_pace_over_the_reference_time():
    # 50 GFLOP at 100 GFLOP/s take 500 ms at least: a quarter of a 2 s reference.
    assert flops.floor_ratio(50 * 10**9, 100.0, 2000.0) == pytest.approx(0.25)


def test_the_product_pace_is_the_fastest_shape_and_a_plausible_figure():
    pace = flops.matmul_gflops(((64, 64, 64), (128, 128, 128)), repeats=2)
    assert 0.01 < pace < 1e5


def test_the_cotracker_update_transformer_is_counted_in_inference_mode():
    """cotracker_speed.py --floor counts a run under inference_mode: the virtual tracks' first
    block, whose input is a parameter, once broke torch's module tracker there."""
    from attnvision.cotracker.update_transformer import UpdateTransformer

    model = UpdateTransformer(10, 16, 2, 1, 1, 3).eval()
    x = torch.randn(1, 4, 5, 10)

    def run():
        with torch.inference_mode():
            return model(x)

    out, count = flops.counted_flops(run)
    assert out.shape == (1, 4, 5, 4)
    # At least the input projection of the 4 x 5 track tokens: 2 * 20 * 10 * 16.
    assert count >= 2 * 20 * 10 * 16
