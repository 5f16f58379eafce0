"""Allow-list unpickling: hostile results.npy and SMPL files are refused before their code runs."""
import builtins
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import numpy.testing._private.utils as np_testing_utils
import pytest

from motion_collage.safe_pickle import BUILTIN_GLOBALS, NUMPY_GLOBALS, RefusedGlobal, load_npy_object, load_pickle

ALLOWED = {**NUMPY_GLOBALS, **BUILTIN_GLOBALS}


class Payload:
    """Unpickling this calls ``func(*args)``: each variant creates the marker file if it runs."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker):
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, f"touch '{marker}'"),
        "builtins.eval": Payload(builtins.eval, touch),
        "builtins.exec": Payload(builtins.exec, touch),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
        "numpy.testing runstring": Payload(np_testing_utils.runstring, touch, {}),
    }


NAMES = ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "numpy.testing runstring"]


def marker_created(marker) -> bool:
    time.sleep(0.05)  # a Popen payload would run asynchronously
    return marker.exists()


@pytest.mark.parametrize("name", NAMES)
def test_payloads_are_real(tmp_path, name):
    """Control: plain pickle runs each payload (so the refusals below are meaningful)."""
    marker = tmp_path / "marker"
    result = pickle.loads(pickle.dumps(payloads(marker)[name]))
    if hasattr(result, "wait"):
        result.wait()
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_payload_is_refused_before_it_runs(tmp_path, name, protocol):
    marker = tmp_path / "marker"
    data = pickle.dumps({"motion": np.zeros(3), "text": [payloads(marker)[name]]}, protocol=protocol)
    with pytest.raises(RefusedGlobal) as info:
        load_pickle(data, ALLOWED)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("refused the global ")
    refused = msg.split()[3].rstrip(":")
    assert refused.split(".")[-1] in ("system", "eval", "exec", "Popen", "runstring"), msg
    assert not marker_created(marker)


def test_results_npy_payload_refused_and_cli_one_line(tmp_path, capsys):
    from motion_collage.render import load_results, main

    marker = tmp_path / "marker"
    path = tmp_path / "results.npy"
    np.save(path, {"motion": np.zeros((1, 22, 3, 4), np.float32), "text": [Payload(os.system, f"touch '{marker}'")],
                   "lengths": np.array([4])}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"refused the global (posix|os)\.system"):
        load_results(path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: refused the global ")
    assert not marker_created(marker)
    assert not (tmp_path / "sample00_rep00.mp4").exists()


def test_numpy_arrays_scalars_and_containers_round_trip(tmp_path):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(7), "s": np.str_("x"),
           "t": (1, 2.5, "y", None, True), "set": {1, 2}, "fs": frozenset({3}), "c": 1 + 2j,
           "nested": [[{"text": "walk", "start": 0, "end": 5}]], "f": np.float32(0.5), "b": b"\x00\xff"}
    for protocol in (2, 3, 4, 5):
        back = load_pickle(pickle.dumps(obj, protocol=protocol), ALLOWED)
        np.testing.assert_array_equal(back.pop("a"), obj["a"])
        assert back == {k: v for k, v in obj.items() if k != "a"}
    np.save(tmp_path / "x.npy", obj, allow_pickle=True)
    back = load_npy_object(tmp_path / "x.npy")
    assert back["n"] == 7 and back["nested"] == obj["nested"]


@pytest.mark.parametrize("content,message", [
    (b"\x93NUMPY\x01\x00garbage", "is not a .npy file"),
    (os.urandom(256), "is not a .npy file"),
    (b"", "is not a .npy file"),
])
def test_broken_npy_files_are_one_line_value_errors(tmp_path, content, message):
    path = tmp_path / "r.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_npy_object(path)
    assert "\n" not in str(info.value)


def test_npy_of_numbers_or_truncated_pickle(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"holds a float64 array of shape \(2, 3\), not a pickled dict"):
        load_npy_object(tmp_path / "plain.npy")
    np.save(tmp_path / "full.npy", {"motion": np.zeros(100)}, allow_pickle=True)
    raw = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) - 300])
    with pytest.raises(ValueError, match="not a readable pickle") as info:
        load_npy_object(tmp_path / "cut.npy")
    assert "\n" not in str(info.value)


def test_smpl_pickle_payloads_refused(tmp_path):
    """A model file whose arrays (or a chumpy object's state) carry a payload is refused."""
    from motion_collage.smpl import load_smpl
    from test_smpl_fit import fake_chumpy

    marker = tmp_path / "marker"
    for i, name in enumerate(NAMES):
        path = tmp_path / f"m{i}.pkl"
        with open(path, "wb") as fh:
            pickle.dump({"v_template": payloads(marker)[name]}, fh, protocol=2)
        with pytest.raises(ValueError, match="refused the global") as info:
            load_smpl(path)
        assert "\n" not in str(info.value) and not marker_created(marker)
    with fake_chumpy() as Ch, open(tmp_path / "ch.pkl", "wb") as fh:
        pickle.dump({"shapedirs": Ch(Payload(os.system, f"touch '{marker}'"))}, fh, protocol=2)
    with pytest.raises(ValueError, match=r"refused the global (posix|os)\.system"):
        load_smpl(tmp_path / "ch.pkl")
    assert not marker_created(marker)


def test_refused_in_a_subprocess_too(tmp_path):
    """End to end: the render CLI in its own process, exit status 2, marker absent."""
    marker = tmp_path / "marker"
    path = tmp_path / "results.npy"
    np.save(path, {"motion": Payload(np_testing_utils.runstring, f"open({str(marker)!r}, 'w').close()", {})},
            allow_pickle=True)
    proc = subprocess.run([sys.executable, "-m", "motion_collage.render", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "refused the global numpy.testing._private.utils.runstring" in proc.stderr
    assert not marker.exists()
