"""Stick-figure videos of joint motion (headless matplotlib, frames piped to ffmpeg).

    python -m motion_collage.render RESULTS.npy [--sample I --rep J] [--out video.mp4|.gif]

Draws the five kinematic chains in distinct colours, a grey floor grid, the root trajectory,
the caption of the current segment (it changes along a long motion and flashes when a new
segment starts), a timeline bar with a tick at every segment boundary, and a "loop" badge for
looped motion. One figure is built once and its artists are updated frame by frame; frames go
straight to ffmpeg (imageio-ffmpeg), so nothing is held in memory.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from motion_core.spec import HUMANML3D, DatasetSpec

PathLike = Union[str, Path]

CHAIN_COLOURS = ("#d62728", "#1f77b4", "#2b2b2b", "#ff7f0e", "#2ca02c")  # r-leg, l-leg, spine, r-arm, l-arm
SEGMENT_COLOURS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fc9272", "#c7e9c0")
_FLASH_SECONDS = 0.6
_VIEW_RADIUS = 1.25  # metres shown around the root horizontally
_SIZE = (640, 576)  # pixels; multiples of 16 for the video encoder


@dataclass(frozen=True)
class Segment:
    """A captioned frame range ``[start, end)`` of a long motion."""

    text: str
    start: int
    end: int


def _parse_segments(segments, num_frames: int) -> list[Segment]:
    out = []
    for i, seg in enumerate(segments or []):
        if isinstance(seg, Segment):
            seg = {"text": seg.text, "start": seg.start, "end": seg.end}
        try:
            text, start, end = str(seg["text"]), int(seg["start"]), int(seg["end"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"segment {i} is {seg!r}; expected a dict with 'text', 'start', 'end' (frames)") from None
        if not 0 <= start < end:
            raise ValueError(f"segment {i} ({text!r}) has start {start}, end {end}; expected 0 <= start < end")
        if start < num_frames:
            out.append(Segment(text, start, min(end, num_frames)))
    return sorted(out, key=lambda s: s.start)


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
        text = self.segments[k].text if k is not None else (self.title or "")
        flash = k is not None and k > 0 and (t - self.segments[k].start) < _FLASH_SECONDS * self.fps
        self.caption.set_text("\n".join(textwrap.wrap(text, 60)[:2]))
        self.caption.set_bbox(dict(boxstyle="round,pad=0.35", ec="none",
                                   fc="#ffe066" if flash else "white"))

    def rgb(self) -> bytes:
        """The current frame as packed RGB bytes (height x width x 3)."""
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].tobytes()


def render_skeleton(
    joints: np.ndarray,
    out_path: PathLike,
    *,
    segments: Optional[Sequence[dict]] = None,
    fps: float = HUMANML3D.fps,
    loop: bool = False,
    title: Optional[str] = None,
    progress: bool = False,
    spec: DatasetSpec = HUMANML3D,
) -> Path:
    """Render joint positions ``[T, J, 3]`` (metres, Y up) to ``out_path`` (.mp4 or .gif).

    segments: ``[{"text", "start", "end"}, ...]`` in frames; the caption shows the segment of
        the current frame (else ``title``). loop: mark the motion as looping.
    Returns the written path.
    """
    import imageio_ffmpeg
    from tqdm import tqdm

    joints = _check_joints(joints, spec)
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"output {out_path} must end in .mp4 or .gif")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    scene = _Scene(joints, _parse_segments(segments, joints.shape[0]), loop, title, fps, spec, _SIZE)
    if suffix == ".mp4":
        writer = imageio_ffmpeg.write_frames(str(out_path), _SIZE, fps=fps, codec="libx264",
                                             quality=6, macro_block_size=16,
                                             ffmpeg_log_level="error")
    else:
        writer = imageio_ffmpeg.write_frames(
            str(out_path), _SIZE, fps=fps, codec="gif", pix_fmt_out="pal8", macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-filter_complex", "split[a][b];[a]palettegen=max_colors=64[p];[b][p]paletteuse=dither=none"],
        )
    writer.send(None)
    try:
        for t in tqdm(range(joints.shape[0]), desc="rendering", unit="frame", disable=not progress):
            scene.update(t)
            writer.send(scene.rgb())
    finally:
        writer.close()
    return out_path


def render_frame(
    joints: np.ndarray,
    frame: int,
    out_path: PathLike,
    *,
    segments: Optional[Sequence[dict]] = None,
    fps: float = HUMANML3D.fps,
    loop: bool = False,
    title: Optional[str] = None,
    spec: DatasetSpec = HUMANML3D,
) -> Path:
    """Render frame ``frame`` of joints ``[T, J, 3]`` as a still image (.png), same look as
    :func:`render_skeleton`. Returns the written path."""
    joints = _check_joints(joints, spec)
    if not 0 <= frame < joints.shape[0]:
        raise ValueError(f"frame {frame} is out of range for a motion of {joints.shape[0]} frames")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scene = _Scene(joints, _parse_segments(segments, joints.shape[0]), loop, title, fps, spec, _SIZE)
    scene.update(frame)
    scene.fig.savefig(out_path, dpi=scene.fig.dpi)
    return out_path


def _check_joints(joints: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (spec.num_joints, 3):
        raise ValueError(f"joints have shape {joints.shape}; expected [T, {spec.num_joints}, 3]")
    if joints.shape[0] < 1 or not np.isfinite(joints).all():
        raise ValueError("joints must have at least one frame and only finite values")
    return joints


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def load_results(path: PathLike) -> dict:
    """MDM's pickled ``results.npy`` dict (see formats.md section 6)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist; pass the results.npy written by sampling")
    try:
        data = np.load(path, allow_pickle=True).item()
    except (ValueError, OSError, AttributeError) as exc:
        raise ValueError(f"{path} is not a results.npy dict ({exc})") from None
    if not isinstance(data, dict) or "motion" not in data:
        raise ValueError(f"{path} has no 'motion' entry; expected MDM's results.npy dict")
    return data


def results_row(results: dict, sample: int, rep: int) -> tuple[np.ndarray, Optional[list], Optional[str], bool]:
    """Joints ``[T, 22, 3]``, segments, caption and loop flag of one (sample, repetition)."""
    motion = np.asarray(results["motion"])
    num_samples = int(results.get("num_samples", motion.shape[0]))
    num_reps = int(results.get("num_repetitions", max(1, motion.shape[0] // max(num_samples, 1))))
    if not 0 <= sample < num_samples:
        raise ValueError(f"sample {sample} is out of range: the results have {num_samples} samples (0..{num_samples - 1})")
    if not 0 <= rep < num_reps:
        raise ValueError(f"rep {rep} is out of range: the results have {num_reps} repetitions (0..{num_reps - 1})")
    row = rep * num_samples + sample
    if row >= motion.shape[0]:
        raise ValueError(f"results hold {motion.shape[0]} motions, fewer than num_samples x num_repetitions")
    lengths = results.get("lengths")
    length = int(lengths[row]) if lengths is not None else motion.shape[-1]
    joints = np.transpose(motion[row][..., :length], (2, 0, 1))  # [22, 3, T] -> [T, 22, 3]
    texts = list(results.get("text", []))
    caption = texts[row] if row < len(texts) else (texts[sample] if sample < len(texts) else None)
    segments = results.get("segments")
    segs = segments[row] if segments is not None and row < len(segments) else None
    return joints, segs, caption, bool(results.get("loop", False))


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m motion_collage.render",
                                     description="Render one motion of a results.npy as a stick-figure video.")
    parser.add_argument("results", help="results.npy written by sampling")
    parser.add_argument("--sample", type=int, default=0, help="sample index (default 0)")
    parser.add_argument("--rep", type=int, default=0, help="repetition index (default 0)")
    parser.add_argument("--out", default=None, help="output .mp4 or .gif (default: sampleII_repJJ.mp4 next to RESULTS)")
    parser.add_argument("--fps", type=float, default=HUMANML3D.fps, help="frame rate (default 20)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: parse, load, render. User errors: one line on stderr, exit status 2."""
    args = _parse_args(argv)
    try:
        results = load_results(args.results)
        joints, segments, caption, loop = results_row(results, args.sample, args.rep)
        out = Path(args.out) if args.out else Path(args.results).parent / f"sample{args.sample:02d}_rep{args.rep:02d}.mp4"
        render_skeleton(joints, out, segments=segments, fps=args.fps, loop=loop, title=caption, progress=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
