"""Stick-figure rendering: videos read back with the right frame count, rate and duration."""

import imageio_ffmpeg
import numpy as np
import pytest

from motion_collage.render import _current_segment, _parse_segments, main, render_frame, render_skeleton
from motion_collage.representation import SMPL_NEUTRAL_REST_JOINTS


def walking(frames: int) -> np.ndarray:
    """A rest-pose body sliding forward along +z with a swinging arm, [T, 22, 3]."""
    base = SMPL_NEUTRAL_REST_JOINTS - [0, SMPL_NEUTRAL_REST_JOINTS[:, 1].min(), 0]
    t = np.arange(frames)[:, None, None] / 20.0
    out = base[None] + t * np.array([0.0, 0.0, 1.2])
    out[:, 20, 2] += 0.2 * np.sin(6 * t[:, 0, 0])
    return out


def read_back(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    return meta, count


@pytest.mark.parametrize("suffix,frames", [(".mp4", 30), (".gif", 12)])
def test_video_has_every_frame_at_the_spec_rate(tmp_path, suffix, frames):
    segments = [{"text": "walk", "start": 0, "end": frames // 2}, {"text": "wave", "start": frames // 2, "end": frames}]
    out = render_skeleton(walking(frames), tmp_path / f"clip{suffix}", segments=segments, loop=True)
    meta, count = read_back(out)
    assert count == frames
    assert meta["fps"] == 20.0
    assert meta["size"] == (640, 576)
    assert meta["duration"] == pytest.approx(frames / 20.0, abs=0.051)


def test_segments_pick_the_current_caption():
    segs = _parse_segments([{"text": "b", "start": 10, "end": 30}, {"text": "a", "start": 0, "end": 12}], 25)
    assert [(s.text, s.start, s.end) for s in segs] == [("a", 0, 12), ("b", 10, 25)]
    assert [_current_segment(segs, t) for t in (0, 9, 10, 11, 12, 24)] == [0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="start 5, end 5"):
        _parse_segments([{"text": "x", "start": 5, "end": 5}], 10)
    with pytest.raises(ValueError, match="'text', 'start', 'end'"):
        _parse_segments([{"caption": "x"}], 10)


def test_still_frame_and_bad_inputs(tmp_path):
    out = render_frame(walking(5), 2, tmp_path / "f.png", title="walk")
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (576, 640)
    with pytest.raises(ValueError, match=r"expected \[T, 22, 3\]"):
        render_skeleton(np.zeros((5, 21, 3)), tmp_path / "x.mp4")
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        render_skeleton(walking(5), tmp_path / "x.avi")


def write_results(path, num_samples=2, num_reps=1, frames=16):
    motion = np.stack([walking(frames)] * (num_samples * num_reps)).transpose(0, 2, 3, 1).astype(np.float32)
    data = {"motion": motion, "text": ["a person walks", "a person waves"] * num_reps,
            "lengths": np.array([frames, frames - 6] * num_reps), "num_samples": num_samples,
            "num_repetitions": num_reps}
    np.save(path, data, allow_pickle=True)


def test_cli_renders_the_requested_row(tmp_path):
    write_results(tmp_path / "results.npy")
    assert main([str(tmp_path / "results.npy"), "--sample", "1"]) == 0
    meta, count = read_back(tmp_path / "sample01_rep00.mp4")
    assert count == 10  # lengths[1]


@pytest.mark.parametrize("args,message", [
    (["--sample", "2"], "sample 2 is out of range: the results have 2 samples (0..1)"),
    (["--rep", "1"], "rep 1 is out of range"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    write_results(tmp_path / "results.npy")
    assert main([str(tmp_path / "results.npy"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert main([str(tmp_path / "missing.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
