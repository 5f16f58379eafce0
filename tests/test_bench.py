"""The benchmark: a smoke run's report, call counts, chunked piece evaluation, FLOP count, sync audit.

No timing is asserted: only what the report contains and what the code path does.
"""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mdm_adapter.args import MDMArgs
from mdm_adapter.model import MDM
from motion_collage import bench
from motion_core.denoiser import PieceConditions

DURATIONS = (10.0, 24.0)
STEPS = 2


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--smoke", "--warmup-steps", "0", "--out", str(out), "--tag", "smoke"]) == 0
    data = json.loads((out / "smoke.json").read_text())
    assert (out / "smoke.png").stat().st_size > 0
    return data


def _by(report, method, duration):
    (row,) = [r for r in report["latency"] if r["method"] == method and r["duration_s"] == duration]
    return row


def test_report_has_every_method_and_duration(report):
    for method in bench.ALL_METHODS:
        for d in DURATIONS:
            row = _by(report, method, d)
            assert row["frames"] == int(d * bench.FPS) and row["steps"] == STEPS and row["batch"] == 1
            assert row["seconds"] > 0 and row["flops"] > 0 and row["frame_evaluations"] > 0
    env = report["environment"]
    for key in ("date", "device", "dtype", "steps", "torch", "git_commit", "memory_method", "model"):
        assert key in env
    assert env["device"] == "cpu" and env["steps"] == STEPS
    assert set(report["ratios"]) >= {"replacement/collage @ 10s", "replacement/collage @ 24s", "collage 24s / 10s"}
    (tp,) = report["throughput"]
    assert tp["batch"] == 2 and tp["extra"]["motions_per_s"] > 0 and tp["extra"]["frames_per_s"] > 0


def test_collage_one_call_per_step_and_replacement_grows(report):
    for d in DURATIONS:
        row = _by(report, "collage", d)
        # one piece-denoiser call and one network call per step, all pieces and both guidance branches
        assert row["sequential_calls"] == STEPS and row["network_calls"] == STEPS
    assert _by(report, "collage", 24.0)["network_rows_per_call_max"] > _by(report, "collage", 10.0)["network_rows_per_call_max"]
    short, long = (_by(report, "replacement", d)["sequential_calls"] for d in DURATIONS)
    assert long > short > STEPS and short % STEPS == 0 and long % STEPS == 0
    assert _by(report, "naive", 24.0)["sequential_calls"] == STEPS


def test_collage_loop_never_waits_for_the_device(report):
    plain, guided = report["sync_audit"]
    assert plain["host_reads_after_first_step"] == {} and plain["host_writes_after_first_step"] == {}
    assert plain["device_moves_after_first_step"] == {}
    assert guided["host_reads_after_first_step"] == {} and guided["host_writes_after_first_step"] == {}
    assert guided["device_moves_after_first_step"] == {}  # the guidance tensor is moved once, not per step


def test_chunked_pieces_equal_unchunked(report):
    check = report["chunking"]
    assert check["network_calls_chunked"] > check["network_calls_unchunked"] == check["steps"]
    assert check["max_abs_diff"] < 1e-5 and check["max_abs_diff_bucketed"] < 1e-5
    assert check["network_calls_bucketed"] == 2 * check["steps"]


@torch.no_grad()
def test_chunked_piece_call_equals_one_call():
    model = bench.build_model("tiny", torch.device("cpu"))
    den = model.denoiser
    g = torch.Generator().manual_seed(0)
    P, L = 5, 30
    x = torch.randn(P, L, 263, generator=g) * 3
    sigma = torch.tensor([0.5, 2.0, 2.0, 10.0, 0.1])
    mask = torch.arange(L)[None, :] < torch.tensor([30, 12, 30, 7, 20])[:, None]
    cond = PieceConditions(("walk", None, "run", "walk", "jump"), torch.tensor([2.5, 1.0, 1.0, 4.0, 2.5]))
    whole = den(x, sigma, mask, cond)
    calls = den.network_calls
    for rows in (1, 2, 3):
        den.max_rows_per_call = rows
        chunked = den(x, sigma, mask, cond)
        torch.testing.assert_close(chunked[mask], whole[mask], atol=1e-5, rtol=0)
    assert den.network_calls - calls == 8 + 4 + 3  # 8 rows: 5 pieces + 3 unconditional copies
    den.max_rows_per_call = None
    for buckets, rows in ((2, None), (3, None), (2, 2)):
        den.length_buckets, den.max_rows_per_call = buckets, rows
        before = den.network_calls
        bucketed = den(x, sigma, mask, cond)
        torch.testing.assert_close(bucketed[mask], whole[mask], atol=1e-5, rtol=0)
        assert den.network_calls - before > 1
    assert min(n for _, n, _ in model.recorder.calls[-3:]) < L  # short rows ran cut to their length
    with pytest.raises(ValueError, match="max_rows_per_call"):
        type(den)(den.network, den.text_encoder, den.schedule, max_rows_per_call=0)


@pytest.mark.parametrize("frames, rows", [(40, 3), (197, 1)])
def test_analytic_flops_match_counted_matmuls(frames, rows):
    args = MDMArgs(latent_dim=32, ff_size=64, layers=2, num_heads=2)
    net = MDM.from_args(args).eval()
    x = torch.randn(rows, args.feature_dim, 1, frames)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, torch.zeros(rows, dtype=torch.long), torch.randn(rows, 512))
    counted = counter.get_total_flops()  # weight matmuls (the CPU attention kernel is not counted)
    assert bench.forward_flops(args, rows, frames, attention=False) == counted
    S, d = frames + 1, args.latent_dim
    assert bench.forward_flops(args, rows, frames) - bench.forward_flops(args, rows, frames, attention=False) \
        == rows * args.layers * 4 * S * S * d  # QK^T and AV: 2 * S * S * d each


def test_sync_audit_sees_host_reads(monkeypatch):
    monkeypatch.setattr(bench, "_call_site", lambda: "here")  # normally only toolkit files are recorded
    audit = bench.HostSyncAudit()
    x = torch.ones(3)
    with audit:
        audit.step = 1
        bool(x.all()), x.tolist(), x[x > 0], torch.tensor([1.0]), x.to("cpu")
    kinds = [e["kind"] for e in audit.events]
    assert kinds.count("host_read") == 3 and kinds.count("host_write") == 1 and kinds.count("device_move") == 1


def test_gpu_estimate_is_labelled_and_uses_real_shapes():
    est = bench.estimate_section("h100", [10.0], ["collage", "replacement"], 50, "bf16", False, 10)
    assert "ANALYTIC ESTIMATE" in est["note"] and est["assumptions"]["host_s_per_kernel"] > 0
    collage, replacement = est["latency"]
    assert collage["sequential_calls_per_step"] == 1 and replacement["sequential_calls_per_step"] == 2
    assert collage["kernels_per_step"] > 100 and collage["flops_per_step"] > 1e10  # release architecture
    assert est["throughput"]["batch"] == 10 and est["throughput"]["estimated_seconds"] > 0
