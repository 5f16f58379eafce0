"""Real-data figures of an evaluator on a test split (what a perfect generator would score).

    python -m eval.real_data --evaluator save/evaluator_bandai [--data DIR] [--replications 20]

Per replication (seeded): every usable test clip once, in a random order, with one random caption
and the official random crop (:func:`eval.data.random_unit_crop`). Reported, mean and 95% CI over
replications:

- R-precision top-1/2/3 and MM-Dist over consecutive batches of 32 (incomplete last batch dropped);
- diversity (300 random pairs, or as many as there are clips);
- ``fid_halves``: FID between the two halves of the shuffled clips (disjoint clips, so it measures
  how far two independent real samples of that size are);
- ``fid_self``: FID between this replication's crops and a fixed reference crop of every clip (the
  same clips, different crops and captions: the "real data" FID of the published tables).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from eval import metrics as M
from eval.data import random_unit_crop
from eval.suites import Embedder, Reference, SplitData, rng_for
from motion_core.atomic import check_output_file, staged_file
from motion_core.cli import OneLineParser, UsageError, run_cli


def real_figures(evaluator, data: SplitData, replications: int = 20, seed: int = 0,
                 batch_size: int = M.R_PRECISION_BATCH, diversity_pairs: int = M.DIVERSITY_PAIRS) -> dict:
    """Metrics per replication and their mean/CI (see the module doc)."""
    embedder = Embedder(evaluator)
    ref = Reference(data, embedder, seed=seed)
    per_rep: dict[str, list[float]] = {}
    for rep in range(replications):
        rng = rng_for(seed, rep, 101)
        order = rng.permutation(len(data.clips))
        clips = [data.clips[i] for i in order]
        tokens = [c.captions[int(rng.integers(len(c.captions)))].tokens for c in clips]
        motion = embedder.motions([random_unit_crop(c.features, rng) for c in clips])
        text = embedder.texts(tokens)
        scores = M.matching_scores(text, motion, batch_size=min(batch_size, len(clips)))
        half = len(clips) // 2
        values = {**{f"top{k + 1}": float(v) for k, v in enumerate(scores.r_precision)},
                  "mm_dist": scores.mm_dist,
                  "diversity": M.diversity(motion, min(diversity_pairs, len(clips)), rng),
                  "fid_halves": M.fid(motion[:half], motion[half:]),
                  "fid_self": M.fid(motion, ref.motion_emb)}
        for k, v in values.items():
            per_rep.setdefault(k, []).append(float(v))
    summary = {k: dict(zip(("mean", "ci"), M.mean_ci(v))) for k, v in per_rep.items()}
    return {"clips": len(data.clips), "replications": replications, "seed": seed, "summary": summary,
            "values": per_rep}


def build_parser() -> argparse.ArgumentParser:
    from eval.benchmark import DEFAULT_EVALUATOR
    p = OneLineParser(prog="python -m eval.real_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--evaluator", default=str(DEFAULT_EVALUATOR))
    p.add_argument("--glove_dir", default=None)
    p.add_argument("--evaluator_stats", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--replications", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p


def write_json(path: Path, payload: dict) -> None:
    """``payload`` as JSON at ``path``, written beside it under a temporary name and renamed."""
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")


def run(args: argparse.Namespace) -> str:
    """parse -> build (evaluator, data) -> figures -> save; returns the summary to print."""
    from eval.benchmark import EvaluatorSource, data_folder
    if args.replications < 1:
        raise UsageError(f"--replications must be >= 1, got {args.replications}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    source = EvaluatorSource(Path(args.evaluator), None if args.glove_dir is None else Path(args.glove_dir),
                             None if args.evaluator_stats is None else Path(args.evaluator_stats))
    source.check()
    out = None if args.out is None else check_output_file(args.out, (".json",))
    data = SplitData.load(data_folder(args.data, source.path, args.split), args.split)
    result = real_figures(source.load("cpu"), data, args.replications, args.seed)
    result.update({"evaluator": args.evaluator, "data": str(data.root), "split": args.split})
    if out is not None:
        write_json(out, result)
    return json.dumps({k: {m: round(v, 4) for m, v in s.items()} for k, s in result["summary"].items()}, indent=1)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
