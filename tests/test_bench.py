"""The performance lab (``python -m benchmarks.perf``): a smoke run's report, call counts, chunked
piece evaluation, FLOP count, sync audit, GPU table and estimate, and the command's promise.

No timing is asserted: only what the report contains and what the code path does.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ is not installed: it runs from the repository root
sys.path.insert(0, str(Path(__file__).parent))
from benchmarks.perf import cli, device, estimate, flops, settings, sync_audit, zoo  # noqa: E402
from mdm_adapter.args import MDMArgs  # noqa: E402
from mdm_adapter.model import MDM  # noqa: E402
from motion_core.denoiser import PieceConditions  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

DURATIONS = (10.0, 24.0)
STEPS = 2


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    stale = [out / ".smoke.json.k1ll3d.tmp.json", out / ".smoke.png.k1ll3d.tmp.png"]  # left by a killed run
    for path in stale:
        path.write_text("half-written")
    assert cli.main(["--smoke", "--warmup-steps", "0", "--out", str(out), "--tag", "smoke"]) == 0
    data = json.loads((out / "smoke.json").read_text())
    assert (out / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["smoke.json", "smoke.png"]  # temporaries gone
    return data


def _by(report, method, duration):
    (row,) = [r for r in report["latency"] if r["method"] == method and r["duration_s"] == duration]
    return row


def test_report_has_every_method_and_duration(report):
    for method in settings.TIMED_METHODS:
        for d in DURATIONS:
            row = _by(report, method, d)
            assert row["frames"] == int(d * settings.FPS) and row["steps"] == STEPS and row["batch"] == 1
            assert row["seconds"] > 0 and row["flops"] > 0 and row["frame_evaluations"] > 0
    env = report["environment"]
    for key in ("date", "device", "dtype", "steps", "torch", "git_commit", "memory_method", "model"):
        assert key in env
    assert env["device"] == "cpu" and env["steps"] == STEPS and env["guidance"] == 2.5
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


def test_smoke_figures_are_those_of_the_bench_before_the_move(report):
    """Call counts, rows and frame evaluations of the smoke run as motion_collage.bench gave them
    (the collage's since its cross-fade default: the same pieces as the average, no variable nodes;
    with the exact merge it was (2, 6, 480) at 10 s and (2, 10, 1120) at 24 s)."""
    expected = {("collage", 10.0): (2, 4, 440), ("average", 10.0): (2, 4, 440), ("replacement", 10.0): (4, 2, 784),
                ("reconstruction", 10.0): (4, 2, 784), ("doubletake", 10.0): (2, 4, 440), ("naive", 10.0): (2, 2, 400),
                ("collage", 24.0): (2, 6, 1040), ("average", 24.0): (2, 6, 1040),
                ("replacement", 24.0): (8, 2, 1568), ("doubletake", 24.0): (2, 6, 1040)}
    for (method, d), figures in expected.items():
        row = _by(report, method, d)
        assert (row["network_calls"], row["network_rows_per_call_max"], row["frame_evaluations"]) == figures


def test_collage_loop_never_waits_for_the_device(report):
    plain, guided = report["sync_audit"]
    assert plain["host_reads_after_first_step"] == {} and plain["host_writes_after_first_step"] == {}
    assert plain["device_moves_after_first_step"] == {}
    assert guided["host_reads_after_first_step"] == {} and guided["host_writes_after_first_step"] == {}
    assert guided["device_moves_after_first_step"] == {}  # the guidance tensor is moved once, not per step
    assert any("mdm_adapter/piece_denoiser.py" in site for site in plain["first_step_host_reads"])


def test_chunked_pieces_equal_unchunked(report):
    check = report["chunking"]
    assert check["network_calls_chunked"] > check["network_calls_unchunked"] == check["steps"]
    assert check["max_abs_diff"] < 1e-5 and check["max_abs_diff_bucketed"] < 1e-5
    assert check["network_calls_bucketed"] == 2 * check["steps"]


def test_bench_options_come_from_the_registry():
    """The registry's defaults plus the bench's one choice give the frames the bench always used."""
    fps = settings.FPS
    collage = settings.method_options("collage").frame_kwargs(fps)  # (other options: the registry's defaults)
    assert (collage["overlap"], collage["transition"]) == (20, "prompt")
    assert settings.method_options("average").frame_kwargs(fps) == {"overlap": 20}
    assert settings.method_options("doubletake").frame_kwargs(fps) == {
        "handshake": 20, "blend": 10, "second_take": True, "second_take_fraction": 0.5}
    for method in ("replacement", "reconstruction"):  # 196-frame windows, 50 % overlap (other options: defaults)
        assert settings.method_options(method).frame_kwargs(fps).items() >= {"window": None, "overlap_ratio": 0.5}.items()
    assert settings.method_options("reconstruction").frame_kwargs(fps)["weight"] == 1.0
    assert settings.method_options("naive").frame_kwargs(fps) == {}


@torch.no_grad()
def test_chunked_piece_call_equals_one_call():
    model = zoo.build_model("tiny", torch.device("cpu"))
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
    assert min(c.frames for c in model.recorder.calls[-3:]) < L  # short rows ran cut to their length
    with pytest.raises(ValueError, match="max_rows_per_call"):
        type(den)(den.network, den.text_encoder, den.schedule, max_rows_per_call=0)


@torch.no_grad()
def test_loaded_model_is_wrapped_not_patched(tmp_path):
    import mdm_adapter

    loaded = mdm_adapter.load(build_tiny_model(tmp_path / "tiny"))
    original = loaded.denoiser
    model = zoo.wrap_loaded(loaded, "tiny-on-disk", max_rows_per_call=2)
    assert loaded.denoiser is original and original.network is loaded.network  # the loaded model is untouched
    assert original.max_rows_per_call is None
    assert model.loaded.denoiser is model.denoiser and model.loaded.network is loaded.network
    x = torch.randn(2, 40, 263, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 40, dtype=torch.bool)
    cond = PieceConditions(("a person walks forward", None))
    torch.testing.assert_close(model.denoiser(x, torch.tensor([1.0, 5.0]), mask, cond),
                               original(x, torch.tensor([1.0, 5.0]), mask, cond), atol=1e-5, rtol=0)
    # 3 rows (the prompt, its unconditional copy, the null piece) in the bench's chunks of 2; the original: 1 call
    assert model.recorder.calls == [(2, 40, False, None, None), (1, 40, False, None, None)] and model.denoiser.network_calls == 2
    assert original.network_calls == 1


@pytest.mark.parametrize("frames, rows", [(40, 3), (197, 1)])
def test_analytic_flops_match_counted_matmuls(frames, rows):
    args = MDMArgs(latent_dim=32, ff_size=64, layers=2, num_heads=2)
    net = MDM.from_args(args).eval()
    x = torch.randn(rows, args.feature_dim, 1, frames)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, torch.zeros(rows, dtype=torch.long), torch.randn(rows, 512))
    counted = counter.get_total_flops()  # weight matmuls (the CPU attention kernel is not counted)
    assert flops.forward_flops(args, rows, frames, attention=False) == counted
    S, d = frames + 1, args.latent_dim
    assert flops.forward_flops(args, rows, frames) - flops.forward_flops(args, rows, frames, attention=False) \
        == rows * args.layers * 4 * S * S * d  # QK^T and AV: 2 * S * S * d each


def test_packed_call_flops_match_counted_matmuls():
    """A packed call computes the linear layers on real tokens only: 3 rows of 40, 5 and 12 frames."""
    from mdm_adapter.packing import build_packing

    args = MDMArgs(latent_dim=32, ff_size=64, layers=2, num_heads=2)
    net = MDM.from_args(args).eval()
    mask = torch.arange(40)[None, :] < torch.tensor([40, 5, 12])[:, None]
    packing = build_packing(mask, "cpu")
    x = torch.randn(3, args.feature_dim, 1, 40)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, torch.zeros(3, dtype=torch.long), torch.randn(3, 512), None, packing)
    tokens = 3 + 57
    assert flops.forward_flops(args, 3, 40, attention=False, tokens=tokens) == counter.get_total_flops()
    assert flops.forward_flops(args, 3, 40, attention=False, tokens=tokens) < 0.55 * flops.forward_flops(
        args, 3, 40, attention=False)  # 60 of 123 padded tokens


def test_sync_audit_sees_host_reads():
    audit = sync_audit.HostSyncAudit(call_site=lambda frame: "here")  # normally only toolkit frames count
    x = torch.ones(3)
    with audit:
        audit.step = 1
        bool(x.all()), x.tolist(), x[x > 0], torch.tensor([1.0]), x.to("cpu")
    kinds = [e["kind"] for e in audit.events]
    assert kinds.count("host_read") == 3 and kinds.count("host_write") == 1 and kinds.count("device_move") == 1
    bench_only = sync_audit.HostSyncAudit()  # the default: calls from outside the toolkit are not recorded
    with bench_only:
        bool(x.all()), x.tolist()
    assert bench_only.events == []


def test_gpu_table_serves_peaks_and_estimate_targets():
    assert device.gpu_named("NVIDIA H100 PCIe").peak("bf16", False) == 756e12
    h100 = device.gpu_named("NVIDIA H100 80GB HBM3")
    assert h100.peak("bf16", False) == 989.4e12 and h100.peak("fp32", True) == 494.7e12 and h100.hbm == 3.35e12
    assert device.gpu_named("NVIDIA H200").hbm == 4.8e12 and device.gpu_named("NVIDIA A100-SXM4-80GB").fp32_tflops == 19.5
    assert device.gpu_named("Tesla T4") is None and device.nominal_peak(torch.device("cpu"), "bf16", False) is None
    assert device.estimate_targets() == ["h100", "h200"]


def test_gpu_estimate_is_labelled_and_uses_real_shapes():
    est = estimate.estimate_section("h100", [10.0], ["collage", "replacement"], 50, "bf16", False, 10)
    assert "ANALYTIC ESTIMATE" in est["note"] and est["assumptions"]["host_s_per_kernel"] > 0
    assert est["target"] == "H100 SXM5" and est["peak_flops_per_s"] == 989.4e12 and est["hbm_bytes_per_s"] == 3.35e12
    collage, replacement = est["latency"]
    assert collage["sequential_calls_per_step"] == 1 and replacement["sequential_calls_per_step"] == 2
    assert collage["kernels_per_step"] > 100 and collage["flops_per_step"] > 1e10  # release architecture
    assert est["throughput"]["batch"] == 10 and est["throughput"]["estimated_seconds"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "error: --steps must be an integer >= 1, got 0"),
    (["--smoke", "--durations", "10", "-5"], "error: --durations must be positive seconds, got -5.0"),
    (["--smoke", "--durations", "nan"], "error: --durations must be positive seconds, got nan"),
    (["--smoke", "--batch", "0"], "error: --batch must be an integer >= 1, got 0"),
    (["--smoke", "--repeats", "0"], "error: --repeats must be an integer >= 1, got 0"),
    (["--smoke", "--warmup-steps", "-1"], "error: --warmup-steps must be an integer >= 0 (0 = no warm-up), got -1"),
    (["--smoke", "--tag", "../x"], "error: --tag must be a file name stem without '/', got '../x'"),
    (["--methods", "nope"], "error: argument --methods: invalid choice: 'nope'"),
    (["--model", "no/such/model", "--device", "cpu"], "error: "),
])
def test_user_mistakes_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert cli.main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("keep")
    assert cli.main(["--smoke", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --out {out} is a file, not a folder; give a folder for the JSON and PNG\n"
    assert out.read_text() == "keep"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_asked_for_but_absent(tmp_path, capsys):
    assert cli.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: device cuda was asked for, but no CUDA device is available; use cpu\n"


def test_one_command_from_the_repository_root(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--steps", "0", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr == "error: --steps must be an integer >= 1, got 0\n"


def test_gpu_command_quick_is_partial_safe_and_resumable(tmp_path, capsys):
    """The GPU command end to end on the CPU (tiny model, emulated graphs): goal files written as
    they complete, a rerun keeps them, goals past the budget are marked skipped, not lost."""
    from benchmarks.perf import gpu

    out = tmp_path / "gpu"
    argv = ["--quick", "--device", "cpu", "--out", str(out), "--precisions", "fp32", "tf32"]
    assert gpu.main(argv + ["--goals", "agreement", "latency"]) == 0
    printed = capsys.readouterr().out
    assert "agreement-fp32" in printed and "eager vs graph, seed 7: max |diff| 0.00e+00" in printed
    assert sorted(p.name for p in (out / "goals").iterdir()) == ["agreement-fp32.json", "latency-fp32.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goals"]["latency"]["tf32"]["status"] == "skipped: TF32 is a CUDA setting"
    assert summary["goals"]["agreement"]["fp32"]["figure"] == 0.0 and (out / "summary.png").stat().st_size > 0
    latency = json.loads((out / "goals" / "latency-fp32.json").read_text())["result"]["runs"]
    assert set(latency) == {"eager", "graph"} and latency["graph"]["cuda_graph"] is True
    # a rerun keeps what is there and skips (does not lose) what the budget leaves out
    assert gpu.main(argv + ["--goals", "latency", "scaling", "--budget-s", "1e-9"]) == 0
    err = capsys.readouterr().err
    assert "latency-fp32: kept from" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goals"]["scaling"]["fp32"]["status"].startswith("skipped: past the")
    assert summary["goals"]["latency"]["fp32"]["status"] == "ok"


def test_gpu_command_needs_a_gpu_without_quick(tmp_path, capsys):
    from benchmarks.perf import gpu

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert gpu.main(["--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == ("error: no CUDA device here (cpu); this command measures a GPU (use --quick "
                                       "for an end-to-end check on the CPU)\n")
    assert not (tmp_path / "x").exists()
