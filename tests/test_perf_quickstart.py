"""benchmarks.perf.quickstart: medians and ratios of the report, one-line CLI errors."""
import pytest

from benchmarks.perf import quickstart as Q


def row(command, imports, load, fps):
    return {"command_s": command, "imports": imports, "load": load, "video_fps": fps, "draw_fps": 2 * fps,
            "cpu_s": 1.0, "encoder_cpu_s": 2.0, "heavy": ["sympy"], "motion": "m.npy"}


def test_medians_and_ratios():
    after = Q.summarise([row(10, 2, 0.5, 60), row(30, 3, 0.1, 50), row(20, 4, 0.3, 70)])
    before = Q.summarise([row(40, 3, 5, 20), row(40, 3, 5, 30)])
    assert after["command_s"] == 20 and after["imports_and_load"] == pytest.approx(3.1) and after["runs"] == 3
    assert before["video_fps"] == 25 and before["heavy"] == ["sympy"]
    text = Q.format_report({"this checkout": after, "base": before}, ("1.00", "2.00"))
    assert "| whole command, with the video (s) | 20.00 | 40.00 | 0.50x |" in text
    assert "| render_skeleton, 240 frames (frames/s) | 60 | 25 | 2.40x |" in text


@pytest.mark.parametrize("args,message", [
    (["--runs", "0"], "--runs must be at least 1, got 0"),
    (["--base", "/nonexistent/checkout"], "is not a checkout of this project"),
])
def test_cli_errors_one_line_exit_2(capsys, args, message):
    assert Q.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
