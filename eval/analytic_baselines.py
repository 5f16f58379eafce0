"""Every long-motion method on the analytic Gaussian AR(1) model, against the exact answer.

All denoisers here are exact for their windows, so the only error is the method's: the printed
table gives, for each method, the largest error of the covariance between frames on the two sides
of a segment boundary (lags up to ``max_lag``), measured against ``naive`` — one window over the
whole sequence, which is exact on this model (it has no length limit) up to the sampler's
discretisation. With ``--channels 0`` (the default) covariances are exact: every method is linear
in the initial noise here, so running it on the identity (one basis vector per channel) gives the
linear map M and the covariance ``M C0 M^T``; DoubleTake's second take adds fresh noise, so in
that mode it runs its first take only. ``--channels N`` estimates by Monte Carlo over N
independent channels instead (all methods on the same noise, DoubleTake complete).

The collage appears once per merge rule: ``collage`` with its default merge and, when that is
not the exact signed merge, ``collage[exact]`` (and ``collage[taper]``) beside it, so that the
error a seamless merge adds on an exact model is printed next to the exact one. Lengths scale
the default model's (overlap 20, harmonisation window 80, plateau 30 frames) by 8 / 20.

    python -m eval.analytic_baselines [--channels 0] [--steps 100]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from motion_collage.analytic import GaussianPieceDenoiser, ar_autocovariance
from motion_collage.graph import MERGES
from motion_collage.methods import METHODS, Frames, SamplingSetup, total_frames
from motion_collage.methods.collage import CollageOptions
from motion_collage.samplers import karras_sigmas, prior_noise, sample_ddim
from motion_core.cli import OneLineParser, run_cli

SEGMENTS = [("a", 24), ("b", 24), ("c", 24), ("d", 24)]
MAX_FRAMES = 32
# The AR model has no frame rate: every duration here is given in frames.
COLLAGE = {"overlap": Frames(8), "taper": Frames(4), "window": Frames(32), "plateau": Frames(12)}
METHOD_OPTIONS = {
    "collage": COLLAGE,
    **{f"collage[{m}]": {**COLLAGE, "merge": m} for m in MERGES if m != CollageOptions.merge},
    "average": {"overlap": Frames(8)},
    "doubletake": {"overlap": Frames(8), "blend": Frames(4)},
    "replacement": {"window": Frames(24)},
    "reconstruction": {"window": Frames(24), "weight": 1.0},
    "independent": {},
    "naive": {},
}


def boundary_covariance_error(cov: np.ndarray, ref: np.ndarray, boundaries: list[int], max_lag: int) -> float:
    """Largest |cov - ref| over frame pairs (i, j), i < b <= j, j - i <= max_lag, across any boundary b."""
    worst = 0.0
    for b in boundaries:
        for i in range(max(0, b - max_lag), b):
            for j in range(b, min(len(cov), i + max_lag + 1)):
                worst = max(worst, abs(cov[i, j] - ref[i, j]))
    return worst


def run_study(channels: int = 0, steps: int = 100, phi: float = 0.9, max_lag: int = 8,
              seed: int = 0) -> dict[str, dict[str, float]]:
    """Covariance error across boundaries and network-call counts for every method."""
    gamma = ar_autocovariance([phi], 256)
    den = GaussianPieceDenoiser(gamma)
    T = total_frames([SEGMENTS])
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    gen = torch.Generator().manual_seed(seed)
    init_var = 1 + 80.0 ** 2
    exact = channels == 0
    if exact:
        noise = torch.eye(T, dtype=torch.float64)[None] * init_var ** 0.5
    else:
        noise = prior_noise((1, T, channels), 80.0, gen, dtype=torch.float64)
    boundaries = list(np.cumsum([f for _, f in SEGMENTS])[:-1])
    covs, stats = {}, {}
    for name, options in METHOD_OPTIONS.items():
        setup = SamplingSetup(sample_ddim, sigmas, {"generator": torch.Generator().manual_seed(seed + 1)})
        if exact and name == "doubletake":
            options = {**options, "second_take": False}
        method = METHODS[name.split("[")[0]]
        out = method(den, [SEGMENTS], noise, setup, max_frames=MAX_FRAMES, fps=1.0, options=options)
        x = out.motion[0].numpy()  # [T, channels]
        covs[name] = x @ x.T / (1 if exact else channels)
        stats[name] = {"sequential_calls": out.sequential_calls, "frame_evaluations": out.frame_evaluations}
    lags = np.abs(np.arange(T)[:, None] - np.arange(T)[None, :])
    true_cov = np.asarray(gamma, dtype=np.float64)[lags]  # the stationary AR(1) covariance
    for name in covs:
        stats[name]["boundary_cov_error"] = boundary_covariance_error(covs[name], covs["naive"], boundaries, max_lag)
        stats[name]["true_boundary_cov_error"] = boundary_covariance_error(covs[name], true_cov, boundaries,
                                                                           max_lag)
        stats[name]["interior_var_error"] = float(np.abs(np.diag(covs[name]) - 1).max())
    return stats


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m eval.analytic_baselines", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=0,
                        help="0: exact covariances (default); N > 0: Monte Carlo over N samples")
    parser.add_argument("--steps", type=int, default=100, help="DDIM steps (default 100)")
    return parser


def run(args: argparse.Namespace) -> str:
    if args.channels < 0:
        raise ValueError(f"--channels must be 0 (exact) or a positive sample count, got {args.channels}")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    stats = run_study(args.channels, args.steps)
    mode = "exact covariances" if args.channels == 0 else f"{args.channels} samples"
    lines = [f"AR(1) phi=0.9, segments {[f for _, f in SEGMENTS]}, window max 32, {args.steps} DDIM steps, "
             f"{mode}; reference = naive; collage default merge: {CollageOptions.merge}",
             f"{'method':<16}{'max boundary cov err':>22}{'max |var-1|':>14}{'seq. calls':>12}{'frame evals':>13}"]
    for name, s in sorted(stats.items(), key=lambda kv: kv[1]["boundary_cov_error"]):
        lines.append(f"{name:<16}{s['boundary_cov_error']:>22.3f}{s['interior_var_error']:>14.3f}"
                     f"{s['sequential_calls']:>12}{s['frame_evaluations']:>13}")
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
