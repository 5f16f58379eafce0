"""motion_core.openmp: the OpenMP wait settings chosen from the load, and set before torch loads."""
import os
import subprocess
import sys

import pytest

from motion_core.openmp import QUIET_SPINCOUNT, configure_openmp_waiting, wait_settings


@pytest.mark.parametrize("load, cores, expected", [
    (0.2, 2, {"GOMP_SPINCOUNT": QUIET_SPINCOUNT}),   # an idle core: short spin
    (0.99, 2, {"GOMP_SPINCOUNT": QUIET_SPINCOUNT}),
    (1.01, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),        # less than one idle core: sleep
    (6.5, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    (6.5, 16, {"GOMP_SPINCOUNT": QUIET_SPINCOUNT}),
])
def test_wait_settings_follow_the_load(load, cores, expected):
    assert wait_settings(load, cores, {}) == expected


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}])
def test_a_user_setting_is_kept(user):
    assert wait_settings(0.0, 2, user) == {}
    assert wait_settings(9.0, 2, user) == {}
    environ = dict(user)
    assert configure_openmp_waiting(environ) == {}
    assert environ == user


def test_configure_writes_what_it_returns():
    environ = {"PATH": "/bin"}
    settings = configure_openmp_waiting(environ)
    if not hasattr(os, "getloadavg"):
        assert settings == {}
    else:
        assert len(settings) == 1
        assert environ == {"PATH": "/bin", **settings}


def test_sample_sets_it_before_torch_is_imported():
    code = ("import sys, os\n"
            "import motion_core.openmp as m\n"
            "calls = []\n"
            "real = m.configure_openmp_waiting\n"
            "m.configure_openmp_waiting = lambda *a: calls.append('torch' in sys.modules) or real(*a)\n"
            "import motion_collage.sample\n"
            "print(calls, 'OMP_WAIT_POLICY' in os.environ or 'GOMP_SPINCOUNT' in os.environ)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["[False]", "True"]
