"""Weight files for every model: read without executing code, check keys in one error.

``.safetensors`` files are read with safetensors; ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``
with ``torch.load(weights_only=True)``, which refuses pickled code. ``state_dict`` /
``model`` wrappers and DDP's ``module.`` prefixes are removed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from attnvision.errors import UserError
from attnvision.files import atomic_path

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# KeyError: torch's weights-only unpickler on a file that is not a pickle at all (text).
# What torch.load and safetensors raise on junk bytes (IndexError and struct.error: a zip whose
# records point past the data).
LOAD_ERRORS = (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, OSError,
                ValueError, KeyError, IndexError, struct.error)


def shipped_path(package: str, name: str) -> Path:
    """Where the weights file ``name`` that ships in ``package`` lies (``weights/``), if any."""
    return Path(str(resources.files(package) / "weights" / name))


def shipped_file(package: str, name: str, missing: str) -> Path:
    """The weights file ``name`` in ``package``'s ``weights/`` folder; ``missing`` is the
    one-line error of an install without it (what to pass or train instead)."""
    path = shipped_path(package, name)
    if not path.is_file():
        raise UserError(missing)
    return path


def load_failure(error: BaseException) -> str:
    """Why a weights file did not load, in one line.

    torch's weights-only unpickler opens its message with advice to load with
    ``weights_only=False``, which runs whatever the file holds. That advice is never passed
    on; the reason after "WeightsUnpickler error:" is."""
    text = str(error)
    refused = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if refused:
        return refused.group(1).strip()
    return text.splitlines()[0] if text else type(error).__name__


def corrupt(path: Path, error: BaseException) -> UserError:
    """The one-line error of a file that cannot be read as weights; a pickled object (a whole
    model saved instead of its state dict, or code) is named as what it is."""
    reason = load_failure(error)
    pickled = re.match(r"Unsupported global: GLOBAL (\S+)", reason)
    if pickled:
        return UserError(
            f"{path} is unsafe to load: it pickles Python objects ({pickled.group(1)}), "
            "which could run code when read (a whole model saved instead of its "
            "state_dict?); save model.state_dict() or safetensors from a copy you trust")
    return UserError(f"{path} is corrupt, truncated or unsafe to load ({reason[:200]}); "
                     "download it again or export the weights as safetensors")


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no state dict of tensors: save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def existing_file(path: str | os.PathLike[str], hint: str = "") -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}" + (f" ({hint})" if hint else ""))
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file")
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata in a .safetensors file's header, without reading its tensors."""
    path = existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except LOAD_ERRORS as e:
        raise corrupt(path, e) from None


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(state dict, safetensors metadata) of a .safetensors or PyTorch file."""
    path = existing_file(path)
    suffix = path.suffix.lower()
    # Outside the try: it says itself, in the same words, when the header is corrupt.
    metadata = read_metadata(path) if suffix == ".safetensors" else {}
    if suffix != ".safetensors" and suffix not in TORCH_SUFFIXES:
        raise UserError(f"{path}: unknown checkpoint format {suffix!r}: use .safetensors or "
                        f"{', '.join(TORCH_SUFFIXES)}")
    try:
        if suffix == ".safetensors":
            return load_file(str(path)), metadata
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as e:
        raise corrupt(path, e) from None
    # Outside the try too: a file that loads but holds no state dict is not corrupt (UserError
    # is a ValueError, which the try would re-word as one).
    return _unwrap(obj, path), {}


def key_problems(expected: dict[str, Tensor], sd: dict[str, Tensor]) -> str:
    """'' when ``sd`` fits ``expected`` exactly, else one line listing what does not."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
                    for k, v in expected.items() if k in sd and sd[k].shape != v.shape)

    def few(items: list[str]) -> str:
        return ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")

    problems = [f"missing keys: {few(missing)}" if missing else "",
                f"unexpected keys: {few(unexpected)}" if unexpected else "",
                f"shape mismatches: {few(shapes)}" if shapes else ""]
    return "; ".join(p for p in problems if p)


def save_weights(model: torch.nn.Module, path: str | os.PathLike[str],
                 metadata: dict[str, str], extra: dict[str, Any] | None = None,
                 dtype: torch.dtype | None = None) -> Path:
    """A model's state dict as safetensors, atomically, with ``metadata`` (and ``extra`` as
    JSON under the key "extra") in the file's header; floating-point parameters in ``dtype``
    if given (loading casts them back to the model's), buffers as they are (constants such as
    a positional encoding's frequencies keep their precision)."""
    metadata = dict(metadata)
    if extra:
        metadata["extra"] = json.dumps(extra, default=str)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        params = {name for name, _ in model.named_parameters()}
        state = {k: v.to(dtype) if k in params and v.is_floating_point() else v
                 for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def restamp(path: str | os.PathLike[str], out: str | os.PathLike[str],
            metadata: dict[str, str]) -> Path:
    """``path``'s tensors as they are, written atomically to ``out`` (``path`` itself is fine)
    with ``metadata`` as the whole header: how a recipe records a choice made after training
    (a default guidance scale, a frame size) without touching the weights."""
    tensors, _ = read_weights(path)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata))
    return Path(out)
