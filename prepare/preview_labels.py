"""Contact sheets of generated motion, one row per prompt: look at what a model does per label.

    python -m prepare.preview_labels [--model_path save/default] [--out docs/default_model]

By default one prompt per content label of the default model's training data (the first
phrasing of each label in :mod:`prepare.captions`). Each row shows ``--frames`` evenly spaced
frames of one generated clip; sheets hold ``--rows_per_sheet`` rows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from prepare.captions import CONTENT_PHRASES


def label_prompts() -> list[tuple[str, str]]:
    """(label, prompt) for every content label, e.g. ("wave-left-hand", "a person waves the left hand")."""
    return [(label, f"a person {phrases[0]}") for label, phrases in CONTENT_PHRASES.items()]


def contact_sheet(rows: Sequence[tuple[str, list[Path]]], out_path: Path) -> Path:
    """Tile frame images: one row per (label, frame images)."""
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
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return out_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prepare.preview_labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=None, help="model (default: save/default)")
    parser.add_argument("--out", default="docs/default_model", help="folder for the sheets")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--frames", type=int, default=5, help="frames shown per clip")
    parser.add_argument("--rows_per_sheet", type=int, default=9)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import mdm_adapter
    from motion_collage.pipeline import generate_motions
    from motion_collage.render import render_frame
    from motion_collage.sample import DEFAULT_MODEL

    try:
        model = mdm_adapter.load(args.model_path or DEFAULT_MODEL)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels = label_prompts()
    frames = model.spec.seconds_to_frames(args.seconds)
    motions = generate_motions(model, [[(p, frames)] for _, p in labels], method_options={"overlap": 0},
                               steps=args.steps, seed=args.seed,
                               progress=True)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for (label, prompt), joints in zip(labels, motions.joints):
            picks = np.linspace(0, joints.shape[0] - 1, args.frames).round().astype(int)
            rows.append((f"{label}: \"{prompt}\"",
                         [render_frame(joints, int(t), Path(tmp) / f"{label}_{t}.png") for t in picks]))
        for i in range(0, len(rows), args.rows_per_sheet):
            path = contact_sheet(rows[i:i + args.rows_per_sheet], out / f"labels_{i // args.rows_per_sheet + 1}.png")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
