"""The suite registry and interface: discovery, settings as flags, loop methods from the method
registry, and a new suite added as one new file (run end to end by the benchmark command)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_fixtures import build_dataset, build_evaluator  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

from eval import suites as S  # noqa: E402
from eval.suites.base import MAX_ROWS  # noqa: E402
from motion_collage.methods import METHODS, loop_methods  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_the_published_suites_are_registered_in_order():
    assert list(S.SUITES) == ["single", "long", "compose", "loop"]
    assert all(issubclass(c, S.Suite) and c.summary and c.table_metrics and c.bar_metrics for c in S.SUITES.values())
    with pytest.raises(ValueError, match=r"unknown suite 'huge'; expected one of \['single', 'long', 'compose'"):
        S.get_suite("huge")
    import eval.protocols as P                                    # the older import path still works
    assert P.make_suite is S.make_suite and P.SplitData is S.SplitData


def test_settings_are_flags_with_their_suites():
    by_name = {s.name: s for s in S.suite_settings()}
    assert by_name["long_seconds"].suites == ["long"] and by_name["long_seconds"].kind is float
    assert by_name["transition_window"].suites == ["compose", "loop"]
    assert by_name["samples_per_rep"].suites == list(S.SUITES) and by_name["samples_per_rep"].defaults["single"] == 1024
    assert by_name["scene_group"].choices == ("short", "medium", "long", "all")
    assert "r_precision_batch" not in by_name and "real_crops" not in by_name      # protocol constants, no flag
    long = S.make_suite("long", {"long_seconds": 12.0, "loop_seconds": 3.0, "num_scenes": None})
    assert long == S.get_suite("long")(long_seconds=12.0)        # other suites' settings and None are ignored


@pytest.mark.parametrize("suite, settings, message", [
    ("single", {"samples_per_rep": 1}, "samples_per_rep must be a whole number from 2 to 100000 (FID needs"),
    ("single", {"samples_per_rep": MAX_ROWS + 1}, "samples_per_rep must be a whole number from 2 to 100000"),
    ("single", {"batch_size": 2.5}, "batch_size must be a whole number from 1 to 4096, got 2.5"),
    ("single", {"seed": True}, "seed must be a whole number >= 0, got True"),
    ("long", {"long_seconds": float("nan")}, "long_seconds must be a number of seconds > 0 and <= 3600"),
    ("loop", {"loop_seconds": 0}, "loop_seconds must be a number of seconds > 0 and <= 3600, got 0"),
    ("compose", {"scene_group": "huge"}, "unknown scene group 'huge'"),
    ("compose", {"real_jerk": float("inf")}, "real_jerk must be a finite number > 0"),
    ("loop", {"transition_window": 7}, "transition_window must be a whole number >= 8 frames, got 7"),
])
def test_bad_settings_are_value_errors(suite, settings, message):
    with pytest.raises(ValueError) as err:
        S.make_suite(suite, settings)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_loop_methods_come_from_the_method_registry(monkeypatch):
    loop = S.make_suite("loop")
    assert loop.method_names() == loop_methods() + ["concat"]
    monkeypatch.setitem(METHODS, "spiral", dataclasses.replace(METHODS["average"], name="spiral"))
    assert "spiral" in loop.method_names()                       # a new looping method is taken at once
    call = loop.method_call("spiral", {"overlap": "8f"})
    assert (call.method, call.loop, call.frame_settings(20.0)["options"]) == ("spiral", True, {"overlap": 8})
    monkeypatch.setitem(METHODS, "spiral", dataclasses.replace(METHODS["average"], name="spiral", loops=False))
    with pytest.raises(ValueError, match="'spiral' cannot make a loop"):
        loop.method_call("spiral")
    concat = loop.method_call("concat")
    assert (concat.name, concat.method, concat.loop) == ("concat", "collage", False)


def test_a_redefined_setting_must_keep_its_type(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Clash(S.Suite):
        long_seconds: int = S.setting(3, "clashes with the long suite's float")
        name = "clash"
    monkeypatch.setitem(S.SUITES, "clash", Clash)
    with pytest.raises(TypeError, match="redefines setting 'long_seconds' as int, not float"):
        S.suite_settings()
    with pytest.raises(ValueError, match="registered twice"):
        S.register_suite(S.get_suite("single"))


# --------------------------------------------------------------------------------------------
# A new suite is one new file
# --------------------------------------------------------------------------------------------

DUMMY_SUITE = '''"""``still``: clips of ``still_seconds``, scored by their mean joint speed (a test suite)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Suite, check_seconds, register_suite, setting
from .scoring import Scored, caption_rows, motion_joints


@register_suite
@dataclass(frozen=True)
class StillSuite(Suite):
    still_seconds: float = setting(2.0, "length of each clip in seconds")

    name = "still"
    summary = "short clips, scored by their mean joint speed"
    table_metrics = ("speed",)
    bar_metrics = ("speed",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seconds("still_seconds", self.still_seconds)

    def rows(self, data, rep):
        frames = int(round(self.still_seconds * data.fps))
        return caption_rows(data, self.samples_per_rep, self.seed, rep, lambda clip, _: (frames, None))

    @staticmethod
    def speed(motions, spec) -> float:
        return float(np.mean([np.abs(np.diff(motion_joints(m, spec), axis=0)).mean() for m in motions]))

    def score(self, rows, motions, ref, rep):
        return Scored({"speed": self.speed(motions, ref.data.spec)})

    def score_real(self, rows, ref, rep):
        clips = ref.data.by_name()
        return Scored({"speed": self.speed([clips[r.clips[0]].features for r in rows], ref.data.spec)})

    def describe(self, notes):
        return f"{self.samples_per_rep} clips of {self.still_seconds:g} s per replication."
'''


def test_a_new_suite_is_one_new_file(tmp_path):
    """A copy of the eval package plus one module in eval/suites/: the benchmark finds the new
    suite, takes its new setting as a flag and writes its tables."""
    shutil.copytree(REPO / "eval", tmp_path / "eval", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "eval" / "suites" / "still.py").write_text(DUMMY_SUITE)
    data = build_dataset(tmp_path / "data", test_clips=8)
    evaluator = build_evaluator(tmp_path / "evaluator", data)
    model = build_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "eval.benchmark", "--suite", "still", "--still_seconds", "1.5",
           "--model_path", str(model), "--evaluator", str(evaluator), "--data", str(data), "--replications", "1",
           "--samples_per_rep", "4", "--batch_size", "4", "--steps", "1", "--threads", "1", "--device", "cpu",
           "--no_progress", "--output_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((out / "results.json").read_text())
    assert payload["suite"] == "still" and payload["protocol"]["still_seconds"] == 1.5
    assert list(payload["results"]) == ["real", "collage"] and payload["results"]["collage"]["speed"]["n"] == 1
    md = (out / "results.md").read_text()
    assert "# Benchmark: still suite" in md and "4 clips of 1.5 s per replication." in md and "| speed |" in md
    assert (out / "metrics.png").is_file() and not (out / "jerk.png").exists()


def test_a_new_suites_setting_is_checked_like_the_others(tmp_path, monkeypatch, capsys):
    from eval import benchmark as B
    namespace: dict = {}
    exec(compile(DUMMY_SUITE.replace("from .", "from eval.suites."), "still.py", "exec"), namespace)
    monkeypatch.setitem(S.SUITES, "still", S.SUITES.pop("still"))            # registered by the exec
    out = tmp_path / "out"
    assert B.main(["--suite", "still", "--still_seconds", "0", "--output_dir", str(out)]) == 2
    assert capsys.readouterr().err == "error: still_seconds must be a number of seconds > 0 and <= 3600, got 0.0\n"
    assert B.main(["--suite", "single", "--still_seconds", "2", "--output_dir", str(out)]) == 2
    assert "--still_seconds is a setting of the still suite, not of single" in capsys.readouterr().err
    assert not out.exists()
