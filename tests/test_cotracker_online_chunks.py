"""The chunks the online loops (ours and the ONNX runner) send: the official loop's
``video[ind : ind + 2 * step] for ind in range(0, T - step, step)``, each with its new frames."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

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
