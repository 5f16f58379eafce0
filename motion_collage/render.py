"""Stick-figure videos of joint motion (headless matplotlib, frames piped to ffmpeg).

    python -m motion_collage.render RESULTS.npy [--sample I --rep J] [--out video.mp4|.gif]
    python -m motion_collage.render --grid A/results.npy B/results.npy [--titles A B] [--out cmp.mp4]
    python -m motion_collage.render RESULTS.npy --sample 0 1 2 --camera follow --preview

A 640x480 frame (480p): the figure fills about two thirds of the frame height (the scale is
set once per video from the tallest pose, so it does not pulse), limbs drawn thick in five
colours (right side warm, left side cool), a head with a nose dot showing where the body
faces, a floor disc with the root's path and a shadow, the caption of the current segment on
top (it flashes when a new segment starts), the time and a timeline bar with a tick at every
segment boundary, and a "loop" badge for looped motion. The camera is orthographic, 15 degrees
above the floor and 30 degrees to the subject's right; it tracks the root. ``camera="fixed"``
(the default) keeps the azimuth chosen from the first half second, so turns and curved paths
read as the body turning over a still floor, and panels of a grid share one view;
``camera="follow"`` turns with the subject's (smoothed) heading, so the body keeps facing the
viewer and the floor turns instead (for long motions that walk away from the camera).

A grid puts several motions side by side (480x480 panels, up to 4 per row), each panel
titled, all at one scale; a shorter motion holds its last pose (a loop cycles). ``preview``
writes a small GIF for a README (0.625 scale, at most 10 fps, 48 colours).

The static parts (timeline, titles, shadow, badge) are drawn once; per frame only the moving
artists are drawn over a saved background (blitting), and the projections of every frame are
computed up front with numpy. Frames go straight to an ffmpeg child process.

Outputs are written atomically: a video is encoded into a temporary file beside the target
(``.NAME.PID.RANDOM.partial``) and renamed into place only when ffmpeg has finished. On Linux
the ffmpeg child is killed with its parent (even by ``kill -9``), and a temporary left by a
killed run is removed by the next write into the same folder. ``results.npy`` is read without
running code from it (:mod:`motion_collage.safe_pickle`); ``results.npz`` beside it is preferred.
"""
from __future__ import annotations

import functools

import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from motion_collage.graph import Segment
from motion_core.atomic import check_output_file, die_with_parent, staged_file
from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.spec import HUMANML3D, DatasetSpec

PathLike = Union[str, Path]

CHAIN_COLOURS = ("#d62728", "#1f77b4", "#2b2b2b", "#ff7f0e", "#2ca02c")  # r-leg, l-leg, spine, r-arm, l-arm
CHAIN_WIDTHS = (5.0, 5.0, 6.0, 4.5, 4.5)  # points (1 pt = 1.39 px at 480p)
SEGMENT_COLOURS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fc9272", "#c7e9c0")
CAMERAS = ("fixed", "follow")
FRAME_SIZE = (640, 480)  # pixels of a one-motion video (480p)
PANEL_SIZE = (480, 480)  # pixels of one panel of a grid
MAX_PANELS = 12
PREVIEW_SCALE, PREVIEW_MAX_FPS, PREVIEW_COLOURS = 0.625, 10.0, 48
CAPTION_PT, TITLE_PT, CLOCK_PT = 14.0, 13.0, 12.0  # at 100 dpi: 19, 18, 17 px per em
_FLASH_SECONDS = 0.6
_ELEVATION = math.radians(15.0)  # camera above the floor plane
_SIDE_ANGLE = math.radians(-30.0)  # camera azimuth from the subject's front, towards its right
_FIXED_HEADING_S = 0.5  # the fixed camera faces the mean heading of the first half second
_FOLLOW_SMOOTHING_S = 1.0  # moving-average window of the follow camera's heading
_FLOOR_RADIUS, _FLOOR_STEP = 2.0, 0.5  # metres
_HEAD_RADIUS, _NOSE = 0.11, 0.1  # metres
_VIEW_RADIUS = 1.25  # metres around the root: smpl_fit's mesh video (mplot3d)
_SIZE = (640, 576)  # pixels of smpl_fit's mesh video and video_writer's default
VIDEO_SUFFIXES = (".mp4", ".gif")
# 240 frames of 640x480 on our CPU: 1.35 s of encoder CPU against 4.45 s for the default preset
# (medium), 740 kB against 547 kB, PSNR to the drawn frames 39.2 dB against 40.1 dB
# (docs/performance.md, the CPU quickstart).
X264_SPEED = ("-preset", "veryfast", "-x264-params", "me=dia:subme=0")


def parse_segments(segments, num_frames: int) -> list[Segment]:
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
    """Our (x, y-up, z) to matplotlib's (x, y, z-up) by a proper rotation (smpl_fit's mplot3d)."""
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)


def _floor_grid(cx: float, cy: float, step: float = 0.5) -> list:
    """World-fixed floor lines (mplot3d coordinates, smpl_fit's mesh video) around (cx, cy)."""
    x0, x1, y0, y1 = cx - _VIEW_RADIUS, cx + _VIEW_RADIUS, cy - _VIEW_RADIUS, cy + _VIEW_RADIUS
    lines = [[(x, y0, 0.0), (x, y1, 0.0)] for x in np.arange(np.ceil(x0 / step), np.floor(x1 / step) + 1) * step]
    lines += [[(x0, y, 0.0), (x1, y, 0.0)] for y in np.arange(np.ceil(y0 / step), np.floor(y1 / step) + 1) * step]
    return lines


# ---------------------------------------------------------------------------------------------
# Camera: an orthographic view from an azimuth about +Y, tracking the root
# ---------------------------------------------------------------------------------------------

def check_camera(camera: str) -> str:
    """``camera`` if it is one of :data:`CAMERAS`, else ValueError (one line)."""
    if camera not in CAMERAS:
        raise ValueError(f"camera {camera!r} is not one of {', '.join(CAMERAS)}; "
                         f"use 'fixed' (one view) or 'follow' (turns with the subject)")
    return camera


def headings(joints: np.ndarray, spec: DatasetSpec = HUMANML3D) -> np.ndarray:
    """Facing angle ``[T]`` (radians about +Y; 0 faces +Z, pi/2 faces +X) of joints
    ``[T, J, 3]``, from the left-minus-right hip and shoulder vectors (chains ordered r-leg,
    l-leg, spine, r-arm, l-arm)."""
    r_leg, l_leg, _, r_arm, l_arm = spec.kinematic_chains[:5]
    across = joints[:, l_leg[1]] - joints[:, r_leg[1]] + joints[:, l_arm[2]] - joints[:, r_arm[2]]
    return np.arctan2(-across[:, 2], across[:, 0])  # forward = across x up


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of ``x [T]`` over ``width`` samples (edges padded)."""
    if width <= 1 or len(x) < 2:
        return x.copy()
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def camera_azimuths(joints: np.ndarray, camera: str = "fixed", *, fps: float = HUMANML3D.fps,
                    spec: DatasetSpec = HUMANML3D) -> np.ndarray:
    """Camera azimuth ``[T]`` (radians about +Y; 0 looks at the subject from +Z) for joints
    ``[T, J, 3]``: 30 degrees to the subject's right of its heading, either the mean heading
    of the first half second (``fixed``) or the heading smoothed over one second (``follow``)."""
    phi = np.unwrap(headings(joints, spec))
    if check_camera(camera) == "fixed":
        first = phi[: max(1, int(round(_FIXED_HEADING_S * fps)))]
        phi = np.full(len(phi), first.mean())
    else:
        phi = _moving_average(phi, int(round(_FOLLOW_SMOOTHING_S * fps)))
    return phi + _SIDE_ANGLE


def camera_axes(azimuth, elevation: float = _ELEVATION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen-right, screen-up and towards-camera unit vectors ``[..., 3]`` (Y-up world) of
    orthographic cameras at ``azimuth [...]`` (radians), ``elevation`` above the floor."""
    a = np.asarray(azimuth, dtype=np.float64)[..., None]
    zero, up = np.zeros_like(a), np.array([0.0, 1.0, 0.0])
    towards = np.concatenate([np.sin(a), zero, np.cos(a)], axis=-1)  # from subject to camera
    right = np.concatenate([np.cos(a), zero, -np.sin(a)], axis=-1)  # up x towards
    screen_up = math.cos(elevation) * up - math.sin(elevation) * towards
    back = math.cos(elevation) * towards + math.sin(elevation) * up
    return right, screen_up, back


def project(points: np.ndarray, centre: np.ndarray, axes) -> tuple[np.ndarray, np.ndarray]:
    """Screen coordinates ``[..., 2]`` (metres; x right, y up) and depth ``[...]`` (larger is
    nearer the camera) of ``points [..., 3]`` seen from ``axes`` (:func:`camera_axes`) centred
    on ``centre`` (broadcast against ``points``)."""
    right, screen_up, back = axes
    d = points - centre
    return np.stack([(d * right).sum(-1), (d * screen_up).sum(-1)], axis=-1), (d * back).sum(-1)


@dataclass
class _Track:
    """A motion seen by its camera: per-frame screen joints ``[T, J, 2]``, joint depths
    ``[T, J]``, camera axes ``3 x [T, 3]``, root on the floor ``[T, 3]``, heading ``[T]``."""

    screen: np.ndarray
    depth: np.ndarray
    axes: tuple
    root: np.ndarray
    heading: np.ndarray

    @classmethod
    def of(cls, joints: np.ndarray, camera: str, fps: float, spec: DatasetSpec) -> "_Track":
        axes = camera_axes(camera_azimuths(joints, camera, fps=fps, spec=spec))
        root = joints[:, 0] * [1.0, 0.0, 1.0]  # the root's foot point on the floor (y = 0)
        screen, depth = project(joints, root[:, None], tuple(a[:, None] for a in axes))
        return cls(screen, depth, axes, root, headings(joints, spec))

    def floor(self, t: int) -> np.ndarray:
        """Screen segments ``[N, 2, 2]`` of the world-fixed floor lines (every 0.5 m) inside a
        disc around the root at frame ``t``."""
        cx, cz = self.root[t, 0], self.root[t, 2]
        lines = []
        for axis, c, other in ((0, cx, cz), (2, cz, cx)):
            ks = np.arange(np.ceil((c - _FLOOR_RADIUS) / _FLOOR_STEP), np.floor((c + _FLOOR_RADIUS) / _FLOOR_STEP) + 1)
            pos = ks * _FLOOR_STEP
            half = np.sqrt(np.maximum(_FLOOR_RADIUS ** 2 - (pos - c) ** 2, 0.0))
            ends = np.zeros((len(pos), 2, 3))
            ends[:, :, axis] = pos[:, None]
            ends[:, :, 2 - axis] = other + np.stack([-half, half], axis=-1)
            lines.append(ends)
        return self.to_screen(np.concatenate(lines), t)

    def to_screen(self, points: np.ndarray, t: int) -> np.ndarray:
        """Screen coordinates ``[..., 2]`` of world points ``[..., 3]`` at frame ``t``."""
        return project(points, self.root[t], tuple(a[t] for a in self.axes))[0]

    def path(self, t: int) -> np.ndarray:
        """Screen path ``[t+1, 2]`` of the root on the floor up to frame ``t`` (NaN outside the disc)."""
        past = self.root[: t + 1]
        out = self.to_screen(past, t)
        out[np.linalg.norm(past - self.root[t], axis=-1) > _FLOOR_RADIUS] = np.nan
        return out


# ---------------------------------------------------------------------------------------------
# Scene: panels of moving artists drawn over a saved background
# ---------------------------------------------------------------------------------------------

@dataclass
class GridPanel:
    """One motion of a video: joints ``[T, J, 3]`` (metres, Y up), a panel title (a method or
    sample name, or None), segments (``graph.Segment`` or ``{"text", "start", "end"}`` in
    frames), the caption shown where no segment covers a frame, and the loop flag."""

    joints: np.ndarray
    title: Optional[str] = None
    segments: Optional[Sequence[Union[dict, Segment]]] = None
    caption: Optional[str] = None
    loop: bool = False


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``count`` panels: one row of up to 4, then balanced rows."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_PANELS:
        raise ValueError(f"a video holds 1 to {MAX_PANELS} panels, got {count!r}; render fewer motions at once")
    rows = math.ceil(count / 4)
    return rows, math.ceil(count / rows)


def frame_size(count: int, scale: float = 1.0) -> tuple[int, int]:
    """Pixels (width, height) of a video of ``count`` panels at ``scale``."""
    rows, cols = grid_shape(count)
    width, height = FRAME_SIZE if count == 1 else PANEL_SIZE
    return int(round(cols * width * scale)), int(round(rows * height * scale))


@dataclass
class _Item:
    """A checked panel: joints, parsed segments, texts, loop flag and camera track."""

    joints: np.ndarray
    segments: list
    title: Optional[str]
    caption: Optional[str]
    loop: bool
    track: _Track
    head: tuple  # screen [T, 2] and depth [T] of the head centre, then of the nose


def _check_panels(panels: Sequence[GridPanel], spec: DatasetSpec) -> list[GridPanel]:
    """Panels with checked joints ``[T, J, 3]`` and parsed segments (ValueError otherwise)."""
    if isinstance(panels, (GridPanel, np.ndarray)) or not isinstance(panels, (list, tuple)):
        raise ValueError(f"panels is {_short(panels)}; expected a list of GridPanel")
    grid_shape(len(panels))
    out = []
    for k, panel in enumerate(panels):
        if not isinstance(panel, GridPanel):
            raise ValueError(f"panel {k} is {_short(panel)}; expected a GridPanel(joints, title, ...)")
        for name in ("title", "caption"):
            if getattr(panel, name) is not None and not isinstance(getattr(panel, name), str):
                raise ValueError(f"panel {k}: {name} is {_short(getattr(panel, name))}; expected a string or None")
        joints = _joints(panel.joints, spec)
        out.append(GridPanel(joints, panel.title, parse_segments(panel.segments, len(joints)),
                             panel.caption, bool(panel.loop)))
    return out


def _item(panel: GridPanel, camera: str, fps: float, spec: DatasetSpec) -> _Item:
    """The camera track and head marker of a checked panel."""
    joints = panel.joints.astype(np.float64)
    track = _Track.of(joints, camera, fps, spec)
    spine = spec.kinematic_chains[2]
    head = joints[:, spine[-1]] + 0.8 * (joints[:, spine[-1]] - joints[:, spine[-2]])
    forward = np.stack([np.sin(track.heading), np.zeros(len(joints)), np.cos(track.heading)], axis=-1)
    axes = tuple(a for a in track.axes)
    centre, nose = (project(p, track.root, axes) for p in (head, head + _NOSE * forward))
    return _Item(joints, panel.segments, panel.title, panel.caption, panel.loop, track, (*centre, *nose))


def _vertical_limits(items: Sequence[_Item]) -> tuple[float, float]:
    """Screen heights (metres) shown by every panel: the floor in front to above the tallest pose."""
    top = max(max(i.track.screen[..., 1].max(), i.head[0][:, 1].max() + _HEAD_RADIUS) for i in items)
    bottom = min(min(i.track.screen[..., 1].min() for i in items) - 0.05, -0.22)
    return bottom, max(top + 0.06, bottom + 1.0)


class _Panel:
    """The artists of one motion in the figure box ``(x, y, w, h)`` (pixels at 100 dpi from the
    bottom left); ``dynamic`` lists those redrawn every frame, in drawing order."""

    def __init__(self, fig, box, item: _Item, limits: tuple[float, float], fps: float, spec: DatasetSpec) -> None:
        self.item, self.fps, self.spec = item, fps, spec
        self.fig_px = (fig.get_figwidth() * 100, fig.get_figheight() * 100)
        self.box = box
        top = 8 + (26 if item.title else 0) + 2 * 1.22 * CAPTION_PT * 100 / 72 + 6
        self.ax_box = (box[0], box[1] + 36, box[2], box[3] - 36 - top)  # pixels
        self._build_axes(fig, limits)
        self._build_texts(fig)
        self._build_timeline(fig)
        self._flash, self.changed = None, True  # changed: the caption differs from the background's
        self._chain_index = [list(chain) for chain in spec.kinematic_chains]
        self._geometry: dict = {}  # artist -> this frame's path(s) or text (set by update)
        self._replays: dict = {}  # artist -> replay function, or False (draw the artist itself)

    def _frac(self, x: float, y: float) -> tuple[float, float]:
        return x / self.fig_px[0], y / self.fig_px[1]

    def _build_axes(self, fig, limits) -> None:
        from matplotlib.collections import LineCollection
        from matplotlib.patches import Circle, Ellipse

        x, y, w, h = self.ax_box
        ax = fig.add_axes((*self._frac(x, y), *self._frac(w, h)))
        ax.set_axis_off()
        ax.set_autoscale_on(False)
        half = (limits[1] - limits[0]) * w / h / 2
        ax.set_xlim(-half, half)
        ax.set_ylim(*limits)
        self.ax = ax
        self.floor = LineCollection([], colors="#cccccc", linewidths=0.9, zorder=1, animated=True)
        ax.add_collection(self.floor)
        (self.trajectory,) = ax.plot([], [], color="#8c8c8c", lw=1.6, zorder=1.5, animated=True)
        ax.add_patch(Ellipse((0, 0), 0.7, 0.7 * math.sin(_ELEVATION), color="black", alpha=0.13, zorder=2, lw=0))
        self.chains = [ax.plot([], [], color=CHAIN_COLOURS[k % 5], lw=CHAIN_WIDTHS[k % 5], solid_capstyle="round",
                               solid_joinstyle="round", animated=True)[0] for k in range(len(self.spec.kinematic_chains))]
        self.head = Circle((0, 0), _HEAD_RADIUS, fc=CHAIN_COLOURS[2], ec="white", lw=1.0, animated=True)
        ax.add_patch(self.head)
        (self.nose,) = ax.plot([], [], "o", ms=5.5, mfc="#ffd43b", mec=CHAIN_COLOURS[2], mew=0.8, animated=True)

    def _build_texts(self, fig) -> None:
        x, y, w, h = self.box
        chars = max(12, int((w - 24) / (CAPTION_PT * 100 / 72 * 0.56)))
        self.wrap = chars
        if self.item.title:
            title = self.item.title if len(self.item.title) <= chars else self.item.title[: chars - 1] + "\u2026"
            self.title = fig.text(*self._frac(x + w / 2, y + h - 8), title, ha="center", va="top",
                                  fontsize=TITLE_PT, weight="bold", color="#222222")
        caption_top = y + h - 8 - (26 if self.item.title else 0)
        self.caption = fig.text(*self._frac(x + w / 2, caption_top - 2), "", ha="center", va="top",
                                fontsize=CAPTION_PT, linespacing=1.1)  # static until it changes
        self.clock = fig.text(*self._frac(x + 10, y + 17), "", ha="left", va="center", fontsize=CLOCK_PT,
                              color="#333333", family="monospace", animated=True)
        if self.item.loop:
            ax_top = self.ax_box[1] + self.ax_box[3]
            fig.text(*self._frac(x + w - 10, ax_top - 8), "\u21bb loop", ha="right", va="top", fontsize=12,
                     color="white", weight="bold", bbox=dict(boxstyle="round,pad=0.3", fc="#6a3d9a", ec="none"))

    def _build_timeline(self, fig) -> None:
        x, y, w, _ = self.box
        n = len(self.item.joints)
        bar = fig.add_axes((*self._frac(x + 100, y + 11), *self._frac(w - 114, 12)))
        bar.set_xlim(0, max(n - 1, 1))
        bar.set_ylim(0, 1)
        bar.set_axis_off()
        bar.axhspan(0.3, 0.7, color="#e6e6e6", lw=0)
        for k, seg in enumerate(self.item.segments):
            bar.axvspan(seg.start, seg.end - 1, ymin=0.05, ymax=0.95, color=SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)], lw=0)
        for seg in self.item.segments[1:]:
            bar.axvline(seg.start, color="black", lw=1.5)  # segment boundary tick
        if self.item.loop:
            bar.annotate("", xy=(0, 1.45), xytext=(n - 1, 1.45), arrowprops=dict(arrowstyle="->", color="#6a3d9a", lw=1.2),
                         annotation_clip=False)
        self.cursor = bar.axvline(0, color="#d62728", lw=2.5, animated=True)

    @property
    def dynamic(self) -> list:
        """Artists redrawn every frame, back to front."""
        body = sorted([*self.chains, self.head, self.nose], key=lambda a: a.get_zorder())
        return [self.floor, self.trajectory, *body, self.clock, self.cursor]

    def update(self, t: int) -> None:
        """Pose the panel at video frame ``t`` (a loop cycles, a shorter motion holds its end)."""
        from matplotlib.path import Path as MplPath

        item, n = self.item, len(self.item.joints)
        f = t % n if item.loop else min(t, n - 1)
        track, geometry = item.track, self._geometry
        self.floor.set_segments(track.floor(f))
        geometry[self.floor] = self.floor.get_paths()  # the collection's own paths of this frame
        path = track.path(f)
        self.trajectory.set_data(path[:, 0], path[:, 1])
        geometry[self.trajectory] = MplPath(path)
        for k, (line, chain) in enumerate(zip(self.chains, self._chain_index)):
            pts = track.screen[f, chain]
            line.set_data(pts[:, 0], pts[:, 1])
            line.set_zorder(3 + 0.01 * k + float(track.depth[f, chain].mean()))
            geometry[line] = MplPath(pts)
        head_xy, head_depth, nose_xy, nose_depth = (a[f] for a in item.head)
        self.head.set_center(head_xy)
        self.head.set_zorder(3 + float(head_depth))
        self.nose.set_data([nose_xy[0]], [nose_xy[1]])
        self.nose.set_zorder(3 + float(nose_depth) + 0.005)
        geometry[self.nose] = MplPath(nose_xy[None])
        self.cursor.set_xdata([f, f])
        geometry[self.cursor] = MplPath(np.array([[f, 0.0], [f, 1.0]]))
        clock = f"{t / self.fps:5.2f} s"
        self.clock.set_text(clock)
        geometry[self.clock] = clock
        self._set_caption(f)

    def draw_dynamic(self, renderer) -> None:
        """Draw the moving artists (back to front) onto ``renderer``: each one's first draw is
        recorded, later frames repeat its renderer call with this frame's geometry (the same
        graphics context and transform, so the same pixels, without the artist machinery)."""
        for artist in self.dynamic:
            replay = self._replays.get(artist)
            geometry = self.head.get_transform().get_affine() if artist is self.head else self._geometry.get(artist)
            if replay is None:
                self._replays[artist] = _record(artist, renderer)
            elif replay is False or geometry is None:
                artist.draw(renderer)
            else:
                replay(renderer, geometry)

    def _set_caption(self, f: int) -> None:
        k = _current_segment(self.item.segments, f)
        text = self.item.segments[k].prompt if k is not None else (self.item.caption or "")
        flash = k is not None and k > 0 and (f - self.item.segments[k].start) < _FLASH_SECONDS * self.fps
        text = "\n".join(textwrap.wrap(text, self.wrap)[:2])
        if text != self.caption.get_text():
            self.caption.set_text(text)
            self.changed = True
        if flash != self._flash:
            self.changed = True
            self.caption.set_bbox(dict(boxstyle="round,pad=0.3", ec="none", fc="#ffe066" if flash else "white"))
            self._flash = flash


# Renderer calls a moving artist makes, and the argument that carries its geometry: a line's
# path, a marker line's points, a collection's paths, a text's string, a patch's transform.
_REPLAYED = {"draw_path": (1, 2), "draw_markers": (3,), "draw_path_collection": (2,), "draw_text": (3,)}


def _record(artist, renderer):
    """Draw ``artist`` while recording its renderer calls; returns a replay function
    ``(renderer, geometry)`` repeating them with new geometry, or False where the calls are
    not the single one expected of such an artist (it is then always drawn by itself)."""
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    calls = []
    originals = {}
    for name in _REPLAYED:
        method = getattr(renderer, name)
        originals[name] = renderer.__dict__.get(name)

        def recorder(*args, _name=name, _method=method, **kwargs):
            calls.append((_name, args, kwargs))
            return _method(*args, **kwargs)

        setattr(renderer, name, recorder)
    try:
        artist.draw(renderer)
    finally:
        for name, original in originals.items():
            if original is None:
                del renderer.__dict__[name]
            else:
                setattr(renderer, name, original)
    calls = [c for c in calls if not (c[0] == "draw_path_collection" and len(c[1][2]) == 0)]  # mpl's probe call
    if len(calls) != 1:
        return False
    name, args, kwargs = calls[0]
    wanted = {Text: "draw_text", Patch: "draw_path"}
    kind = next((v for k, v in wanted.items() if isinstance(artist, k)), None)
    if kind is not None and name != kind:
        return False
    slot = 2 if isinstance(artist, Patch) else 3 if name in ("draw_markers", "draw_text") else \
        2 if name == "draw_path_collection" else 1
    if slot not in _REPLAYED[name]:
        return False

    if name == "draw_text":
        return _TextReplay(args, kwargs)

    def replay(target, geometry) -> None:
        if slot in (1, 3) and not len(geometry.vertices):
            return  # the artist draws nothing for an empty path
        if name == "draw_path_collection" and not geometry:
            return
        call = list(args)
        call[slot] = geometry
        getattr(target, name)(*call, **kwargs)

    return replay


class _GlyphRecorder:
    """Stands in for the Agg core during one ``draw_text``, keeping the glyph images it draws."""

    def __init__(self, core) -> None:
        self._core, self.glyphs = core, []

    def draw_text_image(self, image, x, y, angle, gc) -> None:
        self.glyphs.append((np.array(image), x, y, angle))
        self._core.draw_text_image(image, x, y, angle, gc)

    def __getattr__(self, name):
        return getattr(self._core, name)


class _TextReplay:
    """Repeats a text's ``draw_text`` call with a new string. Where matplotlib draws one image
    per character (monospace text at a fixed place, as the clock), each character's image
    depends only on its place and the character: those are kept and drawn again directly
    (the same pixels; every string with an unseen character is drawn by matplotlib and checks
    the kept images, any mismatch turns the keeping off)."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.args, self.kwargs = args, kwargs
        self.glyphs: Optional[dict] = {}  # (place, character) -> (image, x, y, angle); None: off

    def __call__(self, target, text: str) -> None:
        gc = self.args[0]
        if self.glyphs is not None:
            kept = [self.glyphs.get(key) for key in enumerate(text)]
            if all(g is not None for g in kept):
                for image, x, y, angle in kept:
                    target._renderer.draw_text_image(image, x, y, angle, gc)
                return
        call = list(self.args)
        call[3] = text
        if self.glyphs is None:
            target.draw_text(*call, **self.kwargs)
            return
        core = target._renderer
        target._renderer = recorder = _GlyphRecorder(core)
        try:
            target.draw_text(*call, **self.kwargs)
        finally:
            target._renderer = core
        if len(recorder.glyphs) != len(text):
            self.glyphs = None  # not one image per character: always draw the string
            return
        for key, glyph in zip(enumerate(text), recorder.glyphs):
            old = self.glyphs.setdefault(key, glyph)
            if old[1:] != glyph[1:] or not np.array_equal(old[0], glyph[0]):
                self.glyphs = None
                return


class Scene:
    """One figure of one or more panels (a grid); per frame only the moving artists are drawn
    over the saved static background (blitting); the background, captions included, is redrawn
    only when a caption changes."""

    def __init__(self, panels: Sequence[GridPanel], fps: float, spec: DatasetSpec = HUMANML3D, *,
                 camera: str = "fixed", scale: float = 1.0) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        items = [_item(p, check_camera(camera), fps, spec) for p in _check_panels(panels, spec)]
        rows, cols = grid_shape(len(items))
        width, height = FRAME_SIZE if len(items) == 1 else PANEL_SIZE
        self.fig = Figure(figsize=(cols * width / 100, rows * height / 100), dpi=100 * scale, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        limits = _vertical_limits(items)
        self.panels = [_Panel(self.fig, ((k % cols) * width, (rows - 1 - k // cols) * height, width, height),
                              item, limits, fps, spec) for k, item in enumerate(items)]
        self.num_frames = max(len(i.joints) for i in items)
        self._background = None

    @property
    def size(self) -> tuple[int, int]:
        """Frame (width, height) in pixels."""
        return self.canvas.get_width_height()

    def update(self, t: int) -> None:
        """Pose every panel at frame ``t``."""
        for panel in self.panels:
            panel.update(t)

    def rgb(self) -> bytes:
        """The current frame as packed RGB bytes (height x width x 3)."""
        return np.frombuffer(self.rgba(), np.uint8).reshape(-1, 4)[:, :3].tobytes()

    def rgba(self) -> memoryview:
        """The current frame as packed RGBA bytes (height x width x 4), a view of the canvas
        buffer valid until the next frame (no copy)."""
        if self._background is None or any(p.changed for p in self.panels):
            self.canvas.draw()  # the static artists and captions (the moving ones are animated)
            for panel in self.panels:
                panel.changed = False
            self._background = self.canvas.copy_from_bbox(self.fig.bbox)
        else:
            self.canvas.restore_region(self._background)
        renderer = self.canvas.get_renderer()
        for panel in self.panels:
            panel.draw_dynamic(renderer)
        return memoryview(self.canvas.buffer_rgba()).cast("B")

    def still(self):
        """The figure with every artist drawn by ``savefig`` (for a still image)."""
        for panel in self.panels:
            for artist in panel.dynamic:
                artist.set_animated(False)
        return self.fig


# ---------------------------------------------------------------------------------------------
# ffmpeg: raw RGB frames in, mp4 or gif out; the child dies with its parent
# ---------------------------------------------------------------------------------------------

def _ffmpeg_command(path: Path, size: tuple[int, int], fps: float, fmt: str, colours: int = 64,
                    pixels: str = "rgb24") -> list[str]:
    import imageio_ffmpeg

    rate = str(Fraction(fps).limit_denominator())
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
           "-s", f"{size[0]}x{size[1]}", "-pix_fmt", pixels, "-r", rate, "-i", "-", "-an"]
    if fmt == "mp4":  # x264's fastest motion search: under a third of the default preset's CPU, same look
        cmd += ["-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "20", *X264_SPEED]
    else:  # one palette for the whole clip; each frame stores only the rectangle that changed
        cmd += ["-vcodec", "gif", "-filter_complex",
                f"split[a][b];[a]palettegen=max_colors={int(colours)}:stats_mode=diff[p];"
                f"[b][p]paletteuse=dither=none:diff_mode=rectangle"]
    return cmd + ["-f", fmt, str(path)]


class VideoWriter:
    """An ffmpeg child encoding packed RGB frames (height x width x 3 bytes; x 4 for
    ``pixels="rgba"``) into ``path``."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, fmt: str, colours: int = 64,
                 pixels: str = "rgb24") -> None:
        self.path, self.frames = path, 0
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(_ffmpeg_command(path, size, fps, fmt, colours, pixels), stdin=subprocess.PIPE,
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
def video_writer(out_path: PathLike, fps: float, *, size: tuple[int, int] = _SIZE,
                 colours: int = 64, pixels: str = "rgb24") -> Iterator[VideoWriter]:
    """A :class:`VideoWriter` whose file appears at ``out_path`` (.mp4 or .gif, ``colours`` in
    its palette; frames ``pixels`` rgb24 or rgba) only once it is complete. On Linux the ffmpeg child is killed if this process dies."""
    fps = _check_fps(fps)
    out_path = check_output_file(out_path, VIDEO_SUFFIXES)
    with staged_file(out_path) as tmp:
        writer = VideoWriter(tmp, size, fps, out_path.suffix.lower()[1:], colours, pixels)
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


def render_grid(
    panels: Sequence[GridPanel],
    out_path: PathLike,
    *,
    fps: float = HUMANML3D.fps,
    camera: str = "fixed",
    preview: bool = False,
    progress: bool = False,
    spec: DatasetSpec = HUMANML3D,
) -> Path:
    """Render 1 to 12 motions side by side (:class:`GridPanel`, each titled) to ``out_path``
    (.mp4 or .gif), all at one scale; the video lasts as long as the longest motion.

    camera: ``fixed`` or ``follow`` (see the module docstring). preview: a small GIF for a
    README (``out_path`` must end in .gif; 0.625 scale, at most 10 fps, 48 colours).
    The file appears only when complete (see :func:`video_writer`). Returns the written path.
    """
    from tqdm import tqdm

    checked = _check_panels(panels, spec)
    fps, camera = _check_fps(fps), check_camera(camera)
    if preview and Path(out_path).suffix.lower() != ".gif":
        raise ValueError(f"a preview is a GIF: output {out_path} must end in .gif, or render without the preview")
    out_path = check_output_file(out_path, VIDEO_SUFFIXES)
    step = max(1, math.ceil(fps / PREVIEW_MAX_FPS - 1e-9)) if preview else 1
    scene = Scene(checked, fps, spec, camera=camera, scale=PREVIEW_SCALE if preview else 1.0)
    colours = PREVIEW_COLOURS if preview else 64
    with video_writer(out_path, fps / step, size=scene.size, colours=colours, pixels="rgba") as writer:
        for t in tqdm(range(0, scene.num_frames, step), desc="rendering", unit="frame", disable=not progress):
            scene.update(t)
            writer.write(scene.rgba())
    return out_path


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
    camera: str = "fixed",
    preview: bool = False,
) -> Path:
    """Render joint positions ``[T, J, 3]`` (metres, Y up) to ``out_path`` (.mp4 or .gif),
    640x480 (400x300 for ``preview``).

    segments: ``graph.Segment`` or ``{"text", "start", "end"}`` in frames; the caption shows
        the segment of the current frame (else ``title``). loop: mark the motion as looping.
    camera, preview: as in :func:`render_grid`.
    The file appears only when complete (see :func:`video_writer`). Returns the written path.
    """
    panel = GridPanel(joints, None, segments, title, loop)
    return render_grid([panel], out_path, fps=fps, camera=camera, preview=preview, progress=progress, spec=spec)


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
    camera: str = "fixed",
    panels: Optional[Sequence[GridPanel]] = None,
) -> Path:
    """Render frame ``frame`` of joints ``[T, J, 3]`` as a still image (.png), same look as
    :func:`render_skeleton`; with ``panels`` (then ``joints`` is ignored and may be None), frame
    ``frame`` of that grid, as :func:`render_grid`. Returns the written path (written atomically)."""
    checked = _check_panels(panels if panels is not None else [GridPanel(joints, None, segments, title, loop)], spec)
    frames = max(len(p.joints) for p in checked)
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < frames:
        raise ValueError(f"frame {frame!r} is out of range for a motion of {frames} frames (0..{frames - 1})")
    out_path = check_output_file(out_path)
    scene = Scene(checked, _check_fps(fps), spec, camera=check_camera(camera))
    scene.update(int(frame))
    fig = scene.still()
    with staged_file(out_path) as tmp:
        fig.savefig(tmp, dpi=fig.dpi, format=(out_path.suffix[1:] or "png").lower())
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
    segs = parse_segments(segments[row], length) if segments is not None and row < len(segments) else None
    return joints, segs, caption, bool(results.get("loop", False))



# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def build_parser() -> OneLineParser:
    """The ``python -m motion_collage.render`` command line."""
    parser = OneLineParser(prog="python -m motion_collage.render",
                           description="Render motions of results files as a stick-figure video: one motion, or "
                                       "several side by side (--grid files, or several --sample/--rep).")
    parser.add_argument("results", nargs="?", default=None, help="results.npy (or results.npz) written by sampling")
    parser.add_argument("--grid", nargs="+", default=[], metavar="RESULTS",
                        help="more results files, shown side by side (one panel per file, sample and rep)")
    parser.add_argument("--sample", type=int, nargs="+", default=[0], help="sample index (default 0); several make a grid")
    parser.add_argument("--rep", type=int, nargs="+", default=[0], help="repetition index (default 0); several make a grid")
    parser.add_argument("--titles", nargs="+", default=None,
                        help="one title per panel, in the order files x samples x reps (default: folder, sample, rep)")
    parser.add_argument("--camera", choices=CAMERAS, default="fixed",
                        help="fixed (default): one view, turns read against a still floor; "
                             "follow: the camera turns with the subject's heading")
    parser.add_argument("--preview", action="store_true",
                        help="write a small GIF for a README (400x300 per motion, 10 fps, 48 colours)")
    parser.add_argument("--out", default=None,
                        help="output .mp4 or .gif (default: sampleII_repJJ.mp4, or grid.mp4 for several panels, "
                             "next to the first results file; .gif with --preview)")
    parser.add_argument("--fps", type=float, default=HUMANML3D.fps, help="frame rate (default 20)")
    return parser


def _panel_titles(keys: list[tuple[str, int, int]], titles: Optional[Sequence[str]]) -> list[Optional[str]]:
    """One title per (file, sample, rep): the given ones, else what tells the panels apart."""
    if titles is not None:
        if len(titles) != len(keys):
            raise UsageError(f"--titles gives {len(titles)} titles for {len(keys)} panels; "
                             f"give one per panel, in the order files x samples x reps")
        return list(titles)
    if len(keys) == 1:
        return [None]
    files, samples, reps = (len({k[i] for k in keys}) for i in range(3))
    out = []
    for path, sample, rep in keys:
        parts = [_file_label(Path(path))] if files > 1 else []
        parts += [f"sample {sample}"] if samples > 1 else []
        parts += [f"rep {rep}"] if reps > 1 else []
        out.append(" \u00b7 ".join(parts))
    return out


def _file_label(path: Path) -> str:
    """A results file by its folder name (``A/results.npy`` is "A"), else by its stem."""
    if path.stem.lower() == "results":
        folder = path.resolve().parent.name
        return folder or path.stem
    return path.stem


def _cli_panels(args) -> tuple[list[GridPanel], Path]:
    """The panels asked for on the command line, and the default output path."""
    files = ([args.results] if args.results else []) + list(args.grid)
    if not files:
        raise UsageError("no results file given; pass RESULTS.npy, or several with --grid A/results.npy B/results.npy")
    keys = [(f, s, r) for f in files for s in args.sample for r in args.rep]
    if len(keys) > MAX_PANELS:
        raise UsageError(f"{len(keys)} panels asked for ({len(files)} files x {len(args.sample)} samples x "
                         f"{len(args.rep)} reps); at most {MAX_PANELS} fit in one video")
    titles = _panel_titles(keys, args.titles)
    loaded, panels = {}, []
    for (path, sample, rep), title in zip(keys, titles):
        if path not in loaded:
            loaded[path] = load_results(path)
        joints, segments, caption, loop = results_row(loaded[path], sample, rep)
        panels.append(GridPanel(joints, title, segments, caption, loop))
    suffix = ".gif" if args.preview else ".mp4"
    name = f"sample{args.sample[0]:02d}_rep{args.rep[0]:02d}" if len(keys) == 1 else "grid"
    return panels, Path(files[0]).parent / f"{name}{suffix}"


def run(args) -> str:
    """Load the results, check the output path, render; returns the line to print."""
    panels, default_out = _cli_panels(args)
    out = Path(args.out) if args.out else default_out
    render_grid(panels, out, fps=args.fps, camera=args.camera, preview=args.preview, progress=True)
    return f"wrote {out} ({len(panels)} panel{'s' if len(panels) > 1 else ''}, {out.stat().st_size / 1e3:.0f} kB)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point. User errors: one line on stderr, exit status 2."""
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
