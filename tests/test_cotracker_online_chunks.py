"""The chunks the online loops (ours and the ONNX runner) send: the official loop's
``video[ind : ind + 2 * step] for ind in range(0, T - step, step)``, each with its new frames."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import attnvision.cotracker as cotracker
from attnvision.cotracker.predictor import online_chunks


@given(frames=st.integers(1, 70), step=st.integers(1, 9))
def test_online_chunks_are_the_official_windows(frames, step):
    video = [np.full(1, t) for t in range(frames)]
    got = list(online_chunks(video[0], iter(video[1:]), step))
    starts = range(0, frames - step, step) if frames > step else [0]
    official = [video[ind:ind + 2 * step] for ind in starts]
    assert [[int(f[0]) for f in chunk] for chunk, _ in got] == \
        [[int(f[0]) for f in chunk] for chunk in official]
    # every frame counted once as new: the first chunk whole, each later one past its overlap
    assert [new for _, new in got] == [len(official[0])] + [len(c) - step for c in official[1:]]
    assert sum(new for _, new in got) == frames


def test_online_chunks_go_as_soon_as_their_frames_arrive():
    arrived = []

    def stream():
        for t in range(1, 10):
            arrived.append(t)
            yield np.full(1, t)

    for chunk, _ in online_chunks(np.zeros(1), stream(), 2):
        assert int(chunk[-1][0]) == arrived[-1]  # nothing read beyond the chunk's last frame


def test_the_runtime_module_imports_no_torch():
    # The ONNX Runtime tracker's module, and the package it sits in, load where torch cannot.
    code = ("import sys\n"
            "sys.modules['torch'] = None\n"
            "from attnvision.cotracker.runtime import grid_points, online_chunks\n"
            "import numpy as np\n"
            "chunks = list(online_chunks(np.zeros(1), iter([np.zeros(1)] * 9), 4))\n"
            "print(len(chunks), grid_points(2, (64, 64)).shape)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "(4,", "2)"]


def test_the_package_names_load_on_first_use():
    assert sorted(cotracker.__all__) == sorted(cotracker._NAMES)
    assert all(getattr(cotracker, name) is not None for name in cotracker.__all__)
    assert set(cotracker.__all__) <= set(dir(cotracker))
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        cotracker.not_a_name  # noqa: B018
