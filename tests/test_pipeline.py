"""generate_motions: the documented defaults run, settings are checked, a non-finite x0 is caught."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

import mdm_adapter  # noqa: E402
from motion_collage.pipeline import FiniteCheck, generate_motions  # noqa: E402

ROWS = [[("a person walks forward", 30), ("a person runs forward", 30)]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return mdm_adapter.load(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def test_the_readme_call_runs_with_documented_defaults(model):
    out = generate_motions(model, ROWS, method="collage", steps=3)
    assert out.features.shape == (1, 60, 263) and out.joints[0].shape == (60, 22, 3)
    assert out.generation.graphs[0].variables[0].length == 20  # the 1 s default overlap at 20 fps
    looped = generate_motions(model, ROWS, steps=3, loop=True)
    assert looped.generation.graphs[0].loop


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps"), ({"eta": float("nan")}, "eta"), ({"guidance": float("inf")}, "guidance"),
    ({"method": "flowmdm"}, "unknown method"), ({"sampler": "plms"}, "unknown sampler"),
    ({"method": "naive", "loop": True}, "cannot make a loop"),
    ({"method_options": {"overlap": "3s"}}, "overlap"),
])
def test_bad_settings_are_value_errors(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_motions(model, ROWS, **{"steps": 2, **kwargs})


def test_finite_check_names_the_first_bad_step_and_run():
    calls = {"n": 0}

    def den(x, sigma):
        calls["n"] += 1
        return x * (float("nan") if calls["n"] == 3 else 0.5)

    check = FiniteCheck()
    first_run = check.wrap(den)
    for _ in range(5):
        first_run(torch.ones(2, 4, 3), torch.ones(2))
    check.wrap(den)(torch.ones(2, 4, 3), torch.ones(2))  # a second sampler run
    with pytest.raises(ValueError, match="sampling step 3 of sampler run 1"):
        check.raise_if_bad()
    clean = FiniteCheck().wrap(lambda x, s: x)
    clean(torch.ones(1, 2, 3), torch.ones(1))
    clean.raise_if_bad()
    assert clean.first_bad.item() == 0
