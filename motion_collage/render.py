"""Stick-figure videos of joint motion (headless matplotlib, frames piped to ffmpeg).

    python -m motion_collage.render RESULTS.npy [--sample I --rep J] [--out video.mp4|.gif]

Draws the five kinematic chains in distinct colours, a grey floor grid, the root trajectory,
the caption of the current segment (it changes along a long motion and flashes when a new
segment starts), a timeline bar with a tick at every segment boundary, and a "loop" badge for
looped motion. One figure is built once and its artists are updated frame by frame; frames go
straight to an ffmpeg child process, so nothing is held in memory.

Outputs are written atomically: a video is encoded into a temporary file beside the target
(``.NAME.PID.RANDOM.partial``) and renamed into place only when ffmpeg has finished. On Linux
the ffmpeg child is killed with its parent (even by ``kill -9``), and a temporary left by a
killed run is removed by the next write into the same folder. ``results.npy`` is read without
running code from it (:mod:`motion_collage.safe_pickle`); ``results.npz`` beside it is preferred.
"""
from __future__ import annotations

import functools

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from motion_collage.graph import Segment
from motion_core.atomic import check_output_file, die_with_parent, staged_file
from motion_core.cli import OneLineParser, run_cli
from motion_core.spec import HUMANML3D, DatasetSpec

PathLike = Union[str, Path]

CHAIN_COLOURS = ("#d62728", "#1f77b4", "#2b2b2b", "#ff7f0e", "#2ca02c")  # r-leg, l-leg, spine, r-arm, l-arm
SEGMENT_COLOURS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fc9272", "#c7e9c0")
_FLASH_SECONDS = 0.6
_VIEW_RADIUS = 1.25  # metres shown around the root horizontally
_SIZE = (640, 576)  # pixels; multiples of 16 for the video encoder
VIDEO_SUFFIXES = (".mp4", ".gif")


def _parse_segments(segments, num_frames: int) -> list[Segment]:
    """Segments (``graph.Segment`` or results dicts ``{"text", "start", "end"}``) clipped to
    ``num_frames`` and sorted by start."""
    out = []
    for i, seg in enumerate(segments or []):
        if isinstance(seg, Segment):
            seg = {"text": seg.prompt, "start": seg.start, "end": seg.end}
        try:
            text, start, end = seg["text"], int(seg["start"]), int(seg["end"])
        except (KeyError, TypeError, ValueError, OverflowError, IndexError):
            raise ValueError(f"segment {i} is {_short(seg)}; expected a dict with 'text', 'start', 'end' (frames)") from None
        if not isinstance(text, str):
            raise ValueError(f"segment {i} has text {_short(text)}; expected a string")
        if not 0 <= start < end:
            raise ValueError(f"segment {i} ({text!r}) has start {start}, end {end}; expected 0 <= start < end")
        if start < num_frames:
            out.append(Segment(text, start, min(end, num_frames)))
    return sorted(out, key=lambda s: s.start)


def _short(value, limit: int = 60) -> str:
    """A value for an error message: arrays by dtype and shape, others by a clipped repr."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= limit else text[:limit] + '...'}"


def _current_segment(segments: list[Segment], frame: int) -> Optional[int]:
    """Index of the latest-starting segment containing ``frame`` (None if none does)."""
    current = None
    for k, seg in enumerate(segments):
        if seg.start <= frame < seg.end:
            current = k
    return current


def _to_plot(points: np.ndarray) -> np.ndarray:
    """Our (x, y-up, z) to matplotlib's (x, y, z-up) by a proper rotation (keeps left/right)."""
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)


def _floor_grid(cx: float, cy: float, step: float = 0.5) -> list:
    """World-fixed floor lines (every ``step`` metres) inside the view square around (cx, cy)."""
    x0, x1, y0, y1 = cx - _VIEW_RADIUS, cx + _VIEW_RADIUS, cy - _VIEW_RADIUS, cy + _VIEW_RADIUS
    lines = [[(x, y0, 0.0), (x, y1, 0.0)] for x in np.arange(np.ceil(x0 / step), np.floor(x1 / step) + 1) * step]
    lines += [[(x0, y, 0.0), (x1, y, 0.0)] for y in np.arange(np.ceil(y0 / step), np.floor(y1 / step) + 1) * step]
    return lines


class _Scene:
    """One figure whose artists are updated per frame."""

    def __init__(self, joints: np.ndarray, segments: list[Segment], loop: bool, title: Optional[str],
                 fps: float, spec: DatasetSpec, size: tuple[int, int]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from mpl_toolkits.mplot3d.art3d import Line3DCollection

        self.joints = _to_plot(joints)
        self.segments, self.fps, self.spec, self.title = segments, fps, spec, title
        self.num_frames = joints.shape[0]
        dpi = 100
        self.fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.fig.add_axes((0.0, 0.1, 1.0, 0.8), projection="3d")
        ax.set_axis_off()
        ax.view_init(elev=18, azim=-65)
        ax.set_box_aspect((1, 1, 0.8), zoom=1.35)
        ax.set_zlim(0, 2 * _VIEW_RADIUS * 0.8)  # 2 m
        self.ax = ax

        self.floor = Line3DCollection(_floor_grid(*self.joints[0, 0, :2]), colors="#c8c8c8", linewidths=0.7)
        ax.add_collection3d(self.floor, autolim=False)
        (self.trajectory,) = ax.plot([], [], [], color="#7f7f7f", lw=1.5, alpha=0.9)
        self.chains = [
            ax.plot([], [], [], color=CHAIN_COLOURS[k % len(CHAIN_COLOURS)], lw=3.5 if k == 2 else 2.8,
                    solid_capstyle="round")[0]
            for k in range(len(spec.kinematic_chains))
        ]
        self.caption = self.fig.text(0.5, 0.95, "", ha="center", va="center", fontsize=12, wrap=False)
        self.clock = self.fig.text(0.02, 0.115, "", ha="left", va="bottom", fontsize=8, color="#555555")
        if loop:
            self.fig.text(0.97, 0.86, "\u21bb loop", ha="right", va="center", fontsize=11, color="white",
                          weight="bold", bbox=dict(boxstyle="round,pad=0.3", fc="#6a3d9a", ec="none"))
        self._build_timeline(loop)

    def _build_timeline(self, loop: bool) -> None:
        bar = self.fig.add_axes((0.05, 0.035, 0.9, 0.04))
        bar.set_xlim(0, max(self.num_frames - 1, 1))
        bar.set_ylim(0, 1)
        bar.set_yticks([])
        bar.set_xticks([])
        for side in ("top", "right", "left"):
            bar.spines[side].set_visible(False)
        for k, seg in enumerate(self.segments):
            bar.axvspan(seg.start, seg.end - 1, ymin=0.15, ymax=0.85, color=SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)], lw=0)
        for seg in self.segments[1:]:
            bar.axvline(seg.start, color="black", lw=1.5)  # segment boundary tick
        if loop:
            bar.annotate("", xy=(0, 1.25), xytext=(self.num_frames - 1, 1.25), xycoords="data",
                         arrowprops=dict(arrowstyle="->", color="#6a3d9a", connectionstyle="arc3,rad=0.08"),
                         annotation_clip=False)
        self.cursor = bar.axvline(0, color="#d62728", lw=2.0)

    def update(self, t: int) -> None:
        """Pose the figure at frame ``t``."""
        pose = self.joints[t]
        for line, chain in zip(self.chains, self.spec.kinematic_chains):
            pts = pose[list(chain)]
            line.set_data_3d(pts[:, 0], pts[:, 1], pts[:, 2])
        cx, cy = pose[0, 0], pose[0, 1]
        path = self.joints[: t + 1, 0, :2].copy()
        path[(np.abs(path - [cx, cy]) > _VIEW_RADIUS).any(-1)] = np.nan  # only inside the view
        self.trajectory.set_data_3d(path[:, 0], path[:, 1], np.zeros(len(path)))
        self.floor.set_segments(_floor_grid(cx, cy))
        self.ax.set_xlim(cx - _VIEW_RADIUS, cx + _VIEW_RADIUS)
        self.ax.set_ylim(cy - _VIEW_RADIUS, cy + _VIEW_RADIUS)
        self.cursor.set_xdata([t, t])
        self.clock.set_text(f"{t / self.fps:5.2f} s  frame {t}")

        k = _current_segment(self.segments, t)
        text = self.segments[k].prompt if k is not None else (self.title or "")
        flash = k is not None and k > 0 and (t - self.segments[k].start) < _FLASH_SECONDS * self.fps
        self.caption.set_text("\n".join(textwrap.wrap(text, 60)[:2]))
        self.caption.set_bbox(dict(boxstyle="round,pad=0.35", ec="none",
                                   fc="#ffe066" if flash else "white"))

    def rgb(self) -> bytes:
        """The current frame as packed RGB bytes (height x width x 3)."""
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].tobytes()


# ---------------------------------------------------------------------------------------------
# ffmpeg: raw RGB frames in, mp4 or gif out; the child dies with its parent
# ---------------------------------------------------------------------------------------------

def _ffmpeg_command(path: Path, size: tuple[int, int], fps: float, fmt: str) -> list[str]:
    import imageio_ffmpeg

    rate = str(Fraction(fps).limit_denominator())
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
           "-s", f"{size[0]}x{size[1]}", "-pix_fmt", "rgb24", "-r", rate, "-i", "-", "-an"]
    if fmt == "mp4":
        cmd += ["-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "20"]
    else:  # one 64-colour palette for the whole clip
        cmd += ["-vcodec", "gif", "-filter_complex",
                "split[a][b];[a]palettegen=max_colors=64[p];[b][p]paletteuse=dither=none"]
    return cmd + ["-f", fmt, str(path)]


class VideoWriter:
    """An ffmpeg child encoding packed RGB frames (height x width x 3 bytes) into ``path``."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, fmt: str) -> None:
        self.path, self.frames = path, 0
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(_ffmpeg_command(path, size, fps, fmt), stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True,
                                      preexec_fn=functools.partial(die_with_parent, os.getpid()))

    @property
    def pid(self) -> int:
        """Process id of the ffmpeg child."""
        return self._proc.pid

    def write(self, frame: bytes) -> None:
        """Send one frame."""
        try:
            self._proc.stdin.write(frame)
        except BrokenPipeError:
            self._proc.wait()
            raise RuntimeError(f"ffmpeg stopped while writing {self.path}: {self._error()}") from None
        self.frames += 1

    def finish(self) -> None:
        """Close the input and wait for ffmpeg to finalise the file."""
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        if self._proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed (status {self._proc.returncode}) writing {self.path}: {self._error()}")
        self._log.close()

    def abort(self) -> None:
        """Kill ffmpeg (the caller deletes the unfinished file)."""
        self._proc.kill()
        self._proc.wait()
        self._log.close()

    def _error(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"


def _check_fps(fps: float) -> float:
    try:
        ok = float(fps) > 0 and np.isfinite(float(fps))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return float(fps)


@contextmanager
def video_writer(out_path: PathLike, fps: float, *, size: tuple[int, int] = _SIZE) -> Iterator[VideoWriter]:
    """A :class:`VideoWriter` whose file appears at ``out_path`` (.mp4 or .gif) only once it
    is complete. On Linux the ffmpeg child is killed if this process dies."""
    fps = _check_fps(fps)
    out_path = check_output_file(out_path, VIDEO_SUFFIXES)
    with staged_file(out_path) as tmp:
        writer = VideoWriter(tmp, size, fps, out_path.suffix.lower()[1:])
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.finish()


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def _joints(joints: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    from motion_collage.representation import check_joints

    return check_joints(joints, spec, min_frames=1)


def render_skeleton(
    joints: np.ndarray,
    out_path: PathLike,
    *,
    segments: Optional[Sequence[Union[dict, Segment]]] = None,
    fps: float = HUMANML3D.fps,
    loop: bool = False,
    title: Optional[str] = None,
    progress: bool = False,
    spec: DatasetSpec = HUMANML3D,
) -> Path:
    """Render joint positions ``[T, J, 3]`` (metres, Y up) to ``out_path`` (.mp4 or .gif).

    segments: ``graph.Segment`` or ``{"text", "start", "end"}`` in frames; the caption shows
        the segment of the current frame (else ``title``). loop: mark the motion as looping.
    The file appears only when complete (see :func:`video_writer`). Returns the written path.
    """
    from tqdm import tqdm

    joints = _joints(joints, spec)
    fps = _check_fps(fps)
    out_path = check_output_file(out_path, VIDEO_SUFFIXES)
    parsed = _parse_segments(segments, joints.shape[0])
    with video_writer(out_path, fps) as writer:
        scene = _Scene(joints, parsed, loop, title, fps, spec, _SIZE)
        for t in tqdm(range(joints.shape[0]), desc="rendering", unit="frame", disable=not progress):
            scene.update(t)
            writer.write(scene.rgb())
    return out_path


def render_frame(
    joints: np.ndarray,
    frame: int,
    out_path: PathLike,
    *,
    segments: Optional[Sequence[Union[dict, Segment]]] = None,
    fps: float = HUMANML3D.fps,
    loop: bool = False,
    title: Optional[str] = None,
    spec: DatasetSpec = HUMANML3D,
) -> Path:
    """Render frame ``frame`` of joints ``[T, J, 3]`` as a still image (.png), same look as
    :func:`render_skeleton`. Returns the written path (written atomically)."""
    joints = _joints(joints, spec)
    if not 0 <= frame < joints.shape[0]:
        raise ValueError(f"frame {frame} is out of range for a motion of {joints.shape[0]} frames")
    out_path = check_output_file(out_path)
    scene = _Scene(joints, _parse_segments(segments, joints.shape[0]), loop, title, fps, spec, _SIZE)
    scene.update(frame)
    with staged_file(out_path) as tmp:
        scene.fig.savefig(tmp, dpi=scene.fig.dpi, format=(out_path.suffix[1:] or "png").lower())
    return out_path


# ---------------------------------------------------------------------------------------------
# Results files (MDM's results.npy, our results.npz)
# ---------------------------------------------------------------------------------------------

_RESULTS_KEYS = ("motion", "text", "lengths")
_NPZ_KEYS = ("motion", "text", "lengths", "num_samples", "num_repetitions")


def load_results(path: PathLike) -> dict:
    """The results dict of ``results.npy`` (MDM's format plus ``segments`` and ``loop``) or of
    ``results.npz``. For a ``.npy``, a ``.npz`` of the same name beside it, complete and not
    older, is read instead (no pickle); otherwise the pickle is read with an allow-list (numpy
    arrays and builtin containers only, never code). Raises FileNotFoundError or ValueError."""
    from motion_collage.safe_pickle import load_npy_object

    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"results file {path} {what}; pass the results.npy written by sampling")
    if path.suffix.lower() == ".npz":
        data = _load_results_npz(path)
        check_results(data, str(path))
        return data
    twin = path.with_suffix(".npz")
    if _fresh_twin(path, twin):
        try:
            data = _load_results_npz(twin)
            check_results(data, str(twin))
            return data
        except ValueError:
            pass  # an unusable twin: read the .npy itself
    data = load_npy_object(path)
    check_results(data, str(path))
    return data


def _fresh_twin(npy: Path, npz: Path) -> bool:
    """``npz`` exists and was not written before ``npy`` (2 s slack for coarse file systems)."""
    try:
        return npz.is_file() and npz.stat().st_mtime >= npy.stat().st_mtime - 2.0
    except OSError:
        return False


def _load_results_npz(path: Path) -> dict:
    """Results from our pickle-free ``results.npz`` (``segments`` stored as JSON)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise ValueError(f"{path} lacks the keys {missing}; expected {list(_NPZ_KEYS)}")
            data = {k: npz[k] for k in npz.files}
        data["text"] = [str(t) for t in np.atleast_1d(data["text"])]
        for key in ("num_samples", "num_repetitions"):
            data[key] = _int_value(data[key], key, path)
        if "loop" in data:
            data["loop"] = bool(data["loop"])
        if "segments_json" in data:
            data["segments"] = json.loads(str(data.pop("segments_json")))
    except (ValueError, OSError, EOFError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable results.npz ({' '.join(str(exc).split())})") from None
    return data


def _int_value(value, key: str, source) -> int:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{source}: '{key}' is {_short(value)}; expected a whole number")
    return int(value)


def check_results(results, source: str = "results") -> None:
    """Raise ValueError (one line) unless ``results`` is a results dict: ``motion [N, J, 3, T]``
    (numbers), ``text`` a list of strings, ``lengths [N]`` in 1..T, optional ``num_samples``,
    ``num_repetitions`` (whole numbers >= 1, product <= N), ``segments`` (N lists), ``loop``."""
    if not isinstance(results, dict):
        raise ValueError(f"{source} holds {_short(results)}, not MDM's results dict")
    missing = [k for k in _RESULTS_KEYS if k not in results]
    if missing:
        raise ValueError(f"{source} lacks the keys {missing}; MDM's results hold {list(_RESULTS_KEYS)}")
    motion, text, lengths = (results[k] for k in _RESULTS_KEYS)
    if (not isinstance(motion, np.ndarray) or motion.dtype.kind not in "fiu" or motion.ndim != 4
            or motion.shape[2] != 3 or 0 in motion.shape):
        raise ValueError(f"{source}: 'motion' is {_short(motion)}; expected a float array [N, joints, 3, T]")
    num, frames = motion.shape[0], motion.shape[3]
    if isinstance(text, str) or not isinstance(text, (list, tuple, np.ndarray)) or not all(isinstance(t, str) for t in text):
        raise ValueError(f"{source}: 'text' is {_short(text)}; expected a list of strings, one per motion")
    if (not isinstance(lengths, (np.ndarray, list, tuple)) or np.asarray(lengths).dtype.kind not in "iu"
            or np.shape(lengths) != (num,) or not all(1 <= int(n) <= frames for n in lengths)):
        raise ValueError(f"{source}: 'lengths' is {_short(lengths)}; expected {num} whole numbers in 1..{frames}")
    samples = _int_value(results.get("num_samples", num), "num_samples", source)
    reps = _int_value(results.get("num_repetitions", max(1, num // max(samples, 1))), "num_repetitions", source)
    if samples < 1 or reps < 1 or samples * reps > num:
        raise ValueError(f"{source}: num_samples {samples} x num_repetitions {reps} does not fit the {num} motions")
    segments = results.get("segments")
    if segments is not None and (not isinstance(segments, (list, tuple))
                                 or not all(isinstance(row, (list, tuple)) for row in segments)):
        raise ValueError(f"{source}: 'segments' is {_short(segments)}; expected one list of segment dicts per motion")
    if not isinstance(results.get("loop", False), (bool, np.bool_, int, np.integer)):
        raise ValueError(f"{source}: 'loop' is {_short(results['loop'])}; expected true or false")


def results_row(results: dict, sample: int, rep: int) -> tuple[np.ndarray, Optional[list[Segment]], Optional[str], bool]:
    """Joints ``[T, J, 3]``, segments, caption and loop flag of one (sample, repetition)."""
    check_results(results)
    motion = results["motion"]
    num_samples = _int_value(results.get("num_samples", motion.shape[0]), "num_samples", "results")
    num_reps = _int_value(results.get("num_repetitions", max(1, motion.shape[0] // num_samples)),
                          "num_repetitions", "results")
    if not 0 <= sample < num_samples:
        raise ValueError(f"sample {sample} is out of range: the results have {num_samples} samples (0..{num_samples - 1})")
    if not 0 <= rep < num_reps:
        raise ValueError(f"rep {rep} is out of range: the results have {num_reps} repetitions (0..{num_reps - 1})")
    row = rep * num_samples + sample
    length = int(results["lengths"][row])
    joints = np.transpose(motion[row][..., :length], (2, 0, 1))  # [J, 3, T] -> [T, J, 3]
    texts = list(results["text"])
    caption = texts[row] if row < len(texts) else (texts[sample] if sample < len(texts) else None)
    segments = results.get("segments")
    segs = _parse_segments(segments[row], length) if segments is not None and row < len(segments) else None
    return joints, segs, caption, bool(results.get("loop", False))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def build_parser() -> OneLineParser:
    """The ``python -m motion_collage.render`` command line."""
    parser = OneLineParser(prog="python -m motion_collage.render",
                           description="Render one motion of a results.npy as a stick-figure video.")
    parser.add_argument("results", help="results.npy (or results.npz) written by sampling")
    parser.add_argument("--sample", type=int, default=0, help="sample index (default 0)")
    parser.add_argument("--rep", type=int, default=0, help="repetition index (default 0)")
    parser.add_argument("--out", default=None, help="output .mp4 or .gif (default: sampleII_repJJ.mp4 next to RESULTS)")
    parser.add_argument("--fps", type=float, default=HUMANML3D.fps, help="frame rate (default 20)")
    return parser


def run(args) -> str:
    """Load the results, check the output path, render; returns the line to print."""
    results = load_results(args.results)
    joints, segments, caption, loop = results_row(results, args.sample, args.rep)
    out = Path(args.out) if args.out else Path(args.results).parent / f"sample{args.sample:02d}_rep{args.rep:02d}.mp4"
    render_skeleton(joints, out, segments=segments, fps=args.fps, loop=loop, title=caption, progress=True)
    return f"wrote {out}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point. User errors: one line on stderr, exit status 2."""
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
