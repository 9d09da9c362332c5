"""Any bytes given as a checkpoint either load or give the one-line UserError: junk, zips
whose records point nowhere, truncated torch files, bare pickles."""

import io
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.errors import UserError
from attnvision.weights import read_weights, shipped_file

_buf = io.BytesIO()
torch.save({"w": torch.arange(12.0).reshape(3, 4)}, _buf)
TORCH_FILE = _buf.getvalue()

junk = st.one_of(
    st.binary(min_size=1, max_size=200),
    st.binary(max_size=200).map(lambda b: b"PK\x03\x04" + b),  # a zip's magic, then junk
    st.binary(max_size=60).map(lambda b: b"\x80" + b),  # a pickle's protocol byte, then junk
    st.integers(1, len(TORCH_FILE) - 1).map(lambda n: TORCH_FILE[:n]),
)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@settings(max_examples=300, deadline=None)
@given(data=junk, suffix=st.sampled_from([".pth", ".pt", ".safetensors"]))
def test_junk_is_a_user_error_or_loads(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"weights{suffix}"
        path.write_bytes(data)
        try:
            weights = read_weights(path)
        except UserError as e:
            assert "\n" not in str(e) and str(path) in str(e)
        else:
            assert isinstance(weights[0], dict)


def test_torchs_advice_to_load_unsafely_is_never_passed_on(tmp_path):
    # Junk that reaches torch's weights-only unpickler: its reason, not its advice to set
    # weights_only=False (which would run whatever the file holds).
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02\xc2" + bytes(range(40)))
    with pytest.raises(UserError) as caught:
        read_weights(junk)
    message = str(caught.value)
    assert "corrupt" in message and "Unsupported operand" in message, message
    assert "weights_only" not in message and "\n" not in message
    # A whole model pickled: named as such, with what to save instead.
    model = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), model)
    with pytest.raises(UserError) as caught:
        read_weights(model)
    message = str(caught.value)
    assert message.startswith(f"{model} is unsafe to load: it pickles Python objects "
                              "(torch.nn.modules.linear.Linear)"), message
    assert "state_dict()" in message and "corrupt" not in message
    assert "weights_only" not in message and "\x1b" not in message and "\n" not in message


def test_shipped_file_finds_the_package_weights_or_says_what_to_pass():
    path = shipped_file("attnvision.vit", "vit_mnist5k.safetensors", "unused")
    assert path.is_file() and path.parent.name == "weights"
    with pytest.raises(UserError, match=r"^this install ships none: pass --checkpoint$"):
        shipped_file("attnvision.vit", "none-such.safetensors",
                     "this install ships none: pass --checkpoint")


@pytest.mark.parametrize("obj", [[torch.zeros(2)], {"w": torch.zeros(2), "step": 3},
                                 {"model": {"w": "not a tensor"}}])
def test_a_file_that_loads_but_holds_no_state_dict_says_so_not_corrupt(tmp_path, obj):
    path = tmp_path / "weights.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match=r"holds no state dict of tensors: save "
                                        r"model\.state_dict\(\)$") as caught:
        read_weights(path)
    assert "corrupt" not in str(caught.value)


def test_a_wrapped_state_dict_loads_and_an_unknown_suffix_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"model": {"module.w": torch.ones(2)}}, path)
    state, metadata = read_weights(path)
    assert list(state) == ["w"] and metadata == {}
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match=r"unknown checkpoint format '\.onnx'"):
        read_weights(other)


def test_restamp_keeps_the_tensors_bit_for_bit_and_writes_the_new_header(tmp_path):
    from safetensors.torch import save_file

    from attnvision.weights import read_metadata, restamp

    path = tmp_path / "model.safetensors"
    tensors = {"w": torch.randn(4, 3).half(), "b": torch.arange(3, dtype=torch.int64)}
    save_file(tensors, str(path), metadata={"format": "pt", "old": "1"})
    restamp(path, path, {"format": "pt", "new": "2"})  # in place, as the recipes do
    assert read_metadata(path) == {"format": "pt", "new": "2"}
    loaded, _ = read_weights(path)
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
               for k, v in tensors.items())
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    out = tmp_path / "out.safetensors"
    with pytest.raises(UserError, match=r"junk\.safetensors"):
        restamp(junk, out, {})
    assert not out.exists()  # nothing half-written
