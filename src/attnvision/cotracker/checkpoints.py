"""CoTracker3 weight files: the official ``.pth`` files and ``.safetensors``, checked first.

The official files (``scaled_offline.pth``, ``scaled_online.pth``) are flat state dicts of
tensors, read with ``torch.load(weights_only=True)``, which runs no code. Their keys are the
model's module names, which ours mirror (the misspelt ``updateformer.virual_tracks``
included), so they load with ``strict=True`` and no table of keys to rename.

The official classes have one size, but nothing in the weights needs it: every width is
read from the shapes (:func:`config_from_weights`), so a smaller model trained or saved with
the same key names builds from its file alone. Only the input resolution and the stride are
not in the weights.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from torch import Tensor, nn

from attnvision.cotracker.configs import HEAD_DIM, MOTION_DIM, CoTrackerConfig
from attnvision.errors import UserError
from attnvision.weights import existing_file, key_problems, read_metadata, read_weights

OFFICIAL_FILES = {"cotracker3_offline": "scaled_offline.pth",
                  "cotracker3_online": "scaled_online.pth"}
OFFICIAL_URL = "https://huggingface.co/facebook/cotracker3/resolve/main/"
# Keys every CoTracker3 file has, whose shapes give the widths.
_NEEDED = ("fnet.conv3.weight", "corr_mlp.fc1.weight", "corr_mlp.fc2.weight",
           "updateformer.input_transform.weight", "updateformer.virual_tracks", "time_emb")


def where_to_get(offline: bool = True) -> str:
    file = OFFICIAL_FILES["cotracker3_offline" if offline else "cotracker3_online"]
    return f"the official weights are {OFFICIAL_URL}{file}"


def read_cotracker_weights(path: str | os.PathLike[str], offline: bool = True
                           ) -> dict[str, Tensor]:
    """The state dict of a CoTracker3 file, with one-line errors for a missing, corrupt or
    foreign file."""
    path = existing_file(path, hint=where_to_get(offline))
    sd, _ = read_weights(path)  # one line if corrupt; unwraps {"model": ...}
    return sd


def _header(path: str | os.PathLike[str]) -> dict[str, str]:
    """A safetensors file's metadata; empty for the official ``.pth`` files (which have none)
    and for a file that cannot be read (the loader says what is wrong with it)."""
    if not str(path).lower().endswith(".safetensors"):
        return {}
    try:
        return dict(read_metadata(path))
    except UserError:
        return {}


def stored_resolution(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The (H, W) model resolution a safetensors file of ours records in its metadata
    (``model_resolution: "H,W"``, written by ``attnvision train cotracker``), else None: the
    official ``.pth`` files have no metadata, and their models run at (384, 512)."""
    try:
        h, w = (int(v) for v in _header(path).get("model_resolution", "").split(","))
        return h, w
    except ValueError:
        return None


# Header keys of the visibility cuts a file of ours may record, by config field.
THRESHOLD_KEYS = {"offline_threshold": "offline_visible_threshold",
                  "online_threshold": "online_visible_threshold"}


def stored_thresholds(path: str | os.PathLike[str]) -> dict[str, float]:
    """The visibility thresholds a safetensors file of ours records (config field -> value;
    written by recipes/cotracker_visibility.py), only those it has: the others, and every
    one of an official file, stay the official cuts."""
    header, found = _header(path), {}
    for field, key in THRESHOLD_KEYS.items():
        if key not in header:
            continue
        try:
            value = float(header[key])
        except ValueError:
            value = float("nan")
        if not 0.0 <= value < 1.0:
            raise UserError(f"{path}: its header's {key} is {header[key]!r}, not a number in "
                            f"[0, 1); write it again (recipes/cotracker_visibility.py --ship) "
                            f"or remove the key")
        found[field] = value
    return found


def _blocks(sd: Mapping[str, Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found, default=-1) + 1


def config_from_weights(sd: Mapping[str, Tensor], source: str, offline: bool = True,
                        model_resolution: tuple[int, int] = (384, 512),
                        stride: int = 4) -> CoTrackerConfig:
    """The config whose model these weights fit: every width from a shape.

    The window is the time embedding's length; the heads are the official 48 wide (the
    weights cannot tell 8 heads of 48 from 4 of 96). Raises a one-line UserError when the
    file is not a CoTracker3 (or is the older CoTracker2).
    """
    if "pos_emb" in sd or "track_feat_updater.0.weight" in sd:
        raise UserError(f"{source} is a CoTracker2 checkpoint, which this version does not "
                        f"run: use CoTracker3 weights ({where_to_get(offline)})")
    missing = [k for k in _NEEDED if k not in sd]
    if missing:
        raise UserError(f"{source} is not a CoTracker3 checkpoint (no {', '.join(missing)}); "
                        f"{where_to_get(offline)}")
    fc1, fc2 = sd["corr_mlp.fc1.weight"], sd["corr_mlp.fc2.weight"]
    inp, virtual = sd["updateformer.input_transform.weight"], sd["updateformer.virual_tracks"]
    time_emb, fnet = sd["time_emb"], sd["fnet.conv3.weight"]
    if (fc1.ndim != 2 or fc2.ndim != 2 or inp.ndim != 2 or virtual.ndim != 4
            or time_emb.ndim != 3 or fnet.ndim != 4):
        raise UserError(f"{source} is not a CoTracker3 checkpoint (its correlation MLP, "
                        f"update transformer or time embedding has the wrong number of axes)")
    side = round(fc1.shape[1] ** 0.25)
    levels, rest = divmod(inp.shape[1] - 2 - MOTION_DIM, fc2.shape[0])
    hidden = inp.shape[0]
    if side ** 4 != fc1.shape[1] or side % 2 == 0 or rest or levels < 1:
        raise UserError(f"{source} is not a CoTracker3 checkpoint: its correlation MLP takes "
                        f"{fc1.shape[1]} inputs (not (2r+1)^4) or its transformer "
                        f"{inp.shape[1]} (not 86 + levels x {fc2.shape[0]})")
    if hidden % HEAD_DIM:
        raise UserError(f"{source}: a {hidden}-wide transformer does not split into the "
                        f"official {HEAD_DIM}-wide heads")
    time_depth = _blocks(sd, "updateformer.time_blocks.")
    space_depth = _blocks(sd, "updateformer.space_virtual_blocks.")
    mlp = sd.get("updateformer.time_blocks.0.mlp.fc1.weight")
    try:
        return CoTrackerConfig(
            window_len=time_emb.shape[1], model_resolution=tuple(model_resolution),
            latent_dim=fnet.shape[0], corr_radius=side // 2, corr_levels=levels,
            corr_mlp_hidden=fc1.shape[0], corr_emb_dim=fc2.shape[0], hidden_size=hidden,
            num_heads=hidden // HEAD_DIM, time_depth=time_depth, space_depth=space_depth,
            num_virtual_tracks=virtual.shape[1],
            mlp_ratio=4.0 if mlp is None else mlp.shape[0] / hidden, stride=stride,
            offline=offline)
    except ValueError as e:  # e.g. no time or space blocks at all
        raise UserError(f"{source} is not a CoTracker3 checkpoint the model can be built "
                        f"from: {e}") from None


def load_cotracker_weights(model: nn.Module, sd: Mapping[str, Tensor], source: str) -> None:
    """Load into ``model`` with strict=True; one line naming every problem."""
    problems = key_problems(model.state_dict(), dict(sd))
    if problems:
        raise UserError(f"{source} does not fit CoTracker3: {problems}")
    model.load_state_dict(sd, strict=True)
