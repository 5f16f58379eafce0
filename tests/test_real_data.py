"""eval.real_data: the figures of real test motions, written atomically; bad input is one line."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench_fixtures import build_dataset, build_evaluator  # noqa: E402

from eval import real_data as R  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_data")
    data = build_dataset(root / "data", test_clips=12)
    return {"data": data, "evaluator": build_evaluator(root / "evaluator", data)}


def test_figures_are_written_and_repeatable(env, tmp_path, capsys):
    out = tmp_path / "figures.json"
    args = ["--evaluator", str(env["evaluator"]), "--replications", "2", "--out", str(out)]   # data from its config
    assert R.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert saved["clips"] == 12 and len(saved["values"]["top1"]) == 2 and set(printed) == set(saved["summary"])
    assert not list(tmp_path.glob(".*"))                                     # no temporary left
    assert R.main(args) == 0 and json.loads(out.read_text()) == saved


@pytest.mark.parametrize("extra, message", [
    (["--replications", "0"], "--replications must be >= 1, got 0"),
    (["--seed", "-2"], "--seed must be >= 0, got -2"),
    (["--replications", "many"], "argument --replications: invalid int value: 'many'"),
    (["--data", "{tmp}/missing"], "is not a folder"),
    (["--out", "{tmp}"], "is an existing folder"),
    (["--out", "{tmp}/figures.txt"], "must end in .json"),
])
def test_bad_input_is_one_line(env, tmp_path, capsys, extra, message):
    args = ["--evaluator", str(env["evaluator"]), *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    assert R.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and message.replace("{tmp}", str(tmp_path)) in err
    assert not list(tmp_path.iterdir())
