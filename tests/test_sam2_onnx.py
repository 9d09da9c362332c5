"""SAM 2's memory attention, rotary positions included, exports to ONNX and runs in ONNX
Runtime with PyTorch's outputs: the rotation is written with cos and sin because ONNX has no
complex type (the official code's complex product does not export)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attnvision.sam2.memory_attention import MemoryAttention

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

GRID = (4, 6)  # not square: the grid's two axes turn different halves of each head
POINTER_TOKENS = 4  # object-pointer tokens at the end of the memory take no rotation


class _OnGrid(nn.Module):
    def __init__(self, attention: MemoryAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor, x_pos: Tensor, memory: Tensor, memory_pos: Tensor) -> Tensor:
        return self.attention(x, x_pos, memory, memory_pos, POINTER_TOKENS, grid=GRID)


def test_memory_attention_runs_in_onnx_runtime_as_in_torch(tmp_path):
    torch.manual_seed(0)
    attention = MemoryAttention(d_model=64, num_layers=2, kv_dim=16, dim_feedforward=128).eval()
    n = GRID[0] * GRID[1]
    m = 2 * n + POINTER_TOKENS  # two memory frames and the pointers
    inputs = (torch.randn(1, n, 64), torch.randn(1, n, 64), torch.randn(1, m, 16),
              torch.randn(1, m, 16))
    with torch.no_grad():
        expected = _OnGrid(attention)(*inputs).numpy()
    path = tmp_path / "memory_attention.onnx"
    names = ["x", "x_pos", "memory", "memory_pos"]
    torch.onnx.export(_OnGrid(attention), inputs, str(path), dynamo=False, opset_version=17,
                      input_names=names, output_names=["conditioned"])
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert {"Cos", "Sin"} <= ops  # the rotary code, as real arithmetic in the graph
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {k: v.numpy() for k, v in zip(names, inputs, strict=True)})
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    # The rotation is there: memories and their sine codes reordered on the grid (which an
    # attention without positions would not notice, keys being a set) change the answer.
    def flipped(t: Tensor) -> Tensor:
        out = t.clone()
        out[:, :n] = t[:, :n].view(1, GRID[0], GRID[1], -1).flip(1).reshape(1, n, -1)
        return out

    feed = {"x": inputs[0].numpy(), "x_pos": inputs[1].numpy(),
            "memory": flipped(inputs[2]).numpy(), "memory_pos": flipped(inputs[3]).numpy()}
    (moved,) = session.run(None, feed)
    assert np.abs(moved - got).max() > 1e-3
