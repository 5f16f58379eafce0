"""Contact sheets of generated motion, one row per prompt: look at what a model does per label.

    python -m prepare.preview_labels [--model_path save/default] [--out docs/default_model]

By default one prompt per content label of the default model's training data (the first
phrasing of each label in :mod:`prepare.captions`). Each row shows ``--frames`` evenly spaced
frames of one generated clip; sheets hold ``--rows_per_sheet`` rows.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.atomic import staged_file, terminate_as_exit
from prepare.captions import CONTENT_PHRASES

# Accepted ranges of the options: (low, high), both included.
LIMITS = {"seconds": (0.1, 60.0), "frames": (1, 50), "rows_per_sheet": (1, 50), "steps": (1, 1000)}


def label_prompts() -> list[tuple[str, str]]:
    """(label, prompt) for every content label, e.g. ("wave-left-hand", "a person waves the left hand")."""
    return [(label, f"a person {phrases[0]}") for label, phrases in CONTENT_PHRASES.items()]


def contact_sheet(rows: Sequence[tuple[str, list[Path]]], out_path: Path) -> Path:
    """Tile frame images: one row per (label, frame images); the PNG appears at ``out_path``
    only when complete."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(frames) for _, frames in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.2 * n_rows), squeeze=False)
    for r, (label, frames) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(frames):
                image = plt.imread(frames[c])
                h, w = image.shape[:2]
                ax.imshow(image[int(0.12 * h):int(0.9 * h), int(0.15 * w):int(0.85 * w)])  # crop margins
        axes[r][0].set_title(label, loc="left", fontsize=9)
    fig.tight_layout()
    try:
        with staged_file(out_path) as tmp:
            fig.savefig(tmp, dpi=80, format="png")
    finally:
        plt.close(fig)
    return out_path


def build_parser() -> OneLineParser:
    """The command line of ``python -m prepare.preview_labels``."""
    parser = OneLineParser(prog="python -m prepare.preview_labels", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=None, help="model (default: save/default)")
    parser.add_argument("--out", default="docs/default_model", help="folder for the sheets")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip, 0.1 to 60")
    parser.add_argument("--frames", type=int, default=5, help="frames shown per clip, 1 to 50")
    parser.add_argument("--rows_per_sheet", type=int, default=9, help="rows per sheet, 1 to 50")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps, 1 to 1000")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Raise UsageError for an option out of range or an --out that is a file, before any work."""
    for name, (low, high) in LIMITS.items():
        value = getattr(args, name)
        if not (math.isfinite(value) and low <= value <= high):
            raise UsageError(f"--{name} {value} is out of range; expected {low} to {high}")
    out = Path(args.out)
    for p in [out, *out.parents]:
        if p.exists() and not p.is_dir():
            raise UsageError(f"--out {out}: {p} is a file, not a folder; give a folder for the sheets")


def generate_rows(model, args: argparse.Namespace, tmp: Path) -> list[tuple[str, list[Path]]]:
    """Generate one clip per content label and render its frames into ``tmp``."""
    from motion_collage.pipeline import generate_motions
    from motion_collage.render import render_frame

    labels = label_prompts()
    frames = max(2, model.spec.seconds_to_frames(args.seconds))
    motions = generate_motions(model, [[(p, frames)] for _, p in labels], method_options={"overlap": 0},
                               steps=args.steps, seed=args.seed, progress=True)
    rows = []
    for (label, prompt), joints in zip(labels, motions.joints):
        picks = np.linspace(0, joints.shape[0] - 1, args.frames).round().astype(int)
        rows.append((f"{label}: \"{prompt}\"",
                     [render_frame(joints, int(t), tmp / f"{label}_{t}.png") for t in picks]))
    return rows


def run(args: argparse.Namespace) -> None:
    """Check the options, load the model, generate, and write the sheets (printing their paths)."""
    check_args(args)
    import mdm_adapter
    from motion_collage.sample import DEFAULT_MODEL

    model = mdm_adapter.load(args.model_path or DEFAULT_MODEL)
    with terminate_as_exit(), tempfile.TemporaryDirectory() as tmp:
        rows = generate_rows(model, args, Path(tmp))
        for i in range(0, len(rows), args.rows_per_sheet):
            name = f"labels_{i // args.rows_per_sheet + 1}.png"
            print(f"wrote {contact_sheet(rows[i:i + args.rows_per_sheet], Path(args.out) / name)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; a user mistake is one line on stderr and exit status 2."""
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
