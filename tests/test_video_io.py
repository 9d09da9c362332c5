"""Video in and out: files, folders of frames, arrays and streams, read lazily; bad input is
one line; a written video is whole or absent."""

import re

import numpy as np
import pytest
from PIL import Image

from attnvision.data.video import open_video, read_frames, sample_video, write_video
from attnvision.errors import UserError

av = pytest.importorskip("av")


def moving_square(t: int = 6, h: int = 48, w: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8: a bright square moving right on a smooth gradient, which codecs
    keep close to the original."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 2] = np.linspace(0, 120, w, dtype=np.uint8)[None, None]
    for i in range(t):
        frames[i, 10:30, 4 + 5 * i:24 + 5 * i] = (230, 200, 40)
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_written_video_reads_back_frame_by_frame(tmp_path, suffix):
    frames = moving_square()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=12)
    video = open_video(path)
    assert video.size == (48, 64) and video.fps == pytest.approx(12)
    back = np.stack(list(video))
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 4  # lossy, but the same pictures
    assert not list(tmp_path.glob(".*tmp"))


def test_odd_sizes_are_padded_by_one_pixel(tmp_path):
    frames = moving_square(h=47, w=63)
    back = read_frames(write_video(tmp_path / "odd.mp4", frames))
    assert back.shape == (6, 48, 64, 3)
    assert np.abs(back[:, :47, :63].astype(int) - frames).mean() < 4


def test_folders_arrays_and_streams(tmp_path):
    frames = moving_square()
    for i, frame in enumerate(frames):  # 2.png after 10.png by name, before it by number
        Image.fromarray(frame).save(tmp_path / f"frame{i * 4}.png")
    folder = open_video(tmp_path)
    assert len(folder) == 6 and np.array_equal(np.stack(list(folder)), frames)
    assert np.array_equal(read_frames(frames, max_frames=2), frames[:2])
    stream = open_video(f for f in frames)  # a generator: no length, read once
    assert stream.length is None and stream.size == (48, 64)
    with pytest.raises(TypeError, match="stream"):
        len(stream)
    assert np.array_equal(np.stack(list(stream)), frames)
    grey = open_video([frames[0, ..., 0], frames[1, ..., 0]])
    assert next(iter(grey)).shape == (48, 64, 3)


def test_a_real_clip_decodes_lazily():
    video = open_video(sample_video("bikes"))
    assert video.size == (272, 640) and len(video) == 250 and video.fps == 25
    first = next(iter(video))
    assert first.dtype == np.uint8 and first.std() > 10


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "video not found"),
    (lambda d: (d / "text.mp4").write_text("hello") and d / "text.mp4", "not a video FFmpeg"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no JPEG or PNG frames"),
    (lambda d: np.zeros((0, 4, 4, 3), np.uint8), "T >= 1"),
    (lambda d: np.zeros((2, 4, 4), np.uint8), "(T, H, W, 3)"),
    (lambda d: iter([]), "gave no frames"),
    (lambda d: [np.zeros((4, 4, 3), np.float32)], "uint8 RGB"),
])
def test_bad_videos_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        open_video(make(tmp_path))
    assert "\n" not in str(error.value)


def test_frames_of_another_size_and_unknown_outputs_are_refused(tmp_path):
    frames = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
    with pytest.raises(UserError, match="frame 1 of the stream is 10x8, the first was 8x8"):
        list(open_video(iter(frames)))
    with pytest.raises(UserError, match=r"frame 1 written to clip\.mp4 is 10x8"):
        write_video(tmp_path / "clip.mp4", frames)
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(UserError, match=r"name ending in \.mp4"):
        write_video(tmp_path / "clip.gif", frames[:1])
    with pytest.raises(UserError, match="no frames"):
        write_video(tmp_path / "clip.mp4", [])
    assert not list(tmp_path.iterdir())
