"""motion_core.openmp: the OpenMP wait settings chosen from what else runs, set before torch loads."""
import os
import subprocess
import sys

import pytest

from motion_core.openmp import QUIET_SPINCOUNT, configure_openmp_waiting, other_runnable_threads, wait_settings


@pytest.mark.parametrize("others, expected", [
    (0, {"GOMP_SPINCOUNT": QUIET_SPINCOUNT}),   # nothing else wants a core: short spin
    (1, {"OMP_WAIT_POLICY": "PASSIVE"}),        # a shared core: sleep
    (7, {"OMP_WAIT_POLICY": "PASSIVE"}),
])
def test_wait_settings_follow_other_threads(others, expected):
    assert wait_settings(others, {}) == expected


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}])
def test_a_user_setting_is_kept(user):
    assert wait_settings(0, user) == {} and wait_settings(5, user) == {}
    environ = dict(user)
    assert configure_openmp_waiting(environ, other_runnable=3) == {}
    assert environ == user


def test_configure_writes_what_it_returns():
    environ = {"PATH": "/bin"}
    assert configure_openmp_waiting(environ, other_runnable=2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert environ == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}


def test_other_runnable_threads_reads_the_fewest(tmp_path):
    path = tmp_path / "loadavg"
    path.write_text("0.52 1.10 1.28 3/88 5676\n")
    assert other_runnable_threads(str(path)) == 2          # this reader is one of the 3
    path.write_text("0.52 1.10 1.28 1/88 5676\n")
    assert other_runnable_threads(str(path), reads=2) == 0
    assert other_runnable_threads(str(tmp_path / "missing")) is None
    path.write_text("garbage\n")
    assert other_runnable_threads(str(path)) is None
    environ = {}
    if not os.path.exists("/proc/loadavg"):
        assert configure_openmp_waiting(environ) == {} and environ == {}


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
    expected = "True" if os.path.exists("/proc/loadavg") else "False"
    assert out.stdout.split() == ["[False]", expected]
