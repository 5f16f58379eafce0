"""motion_core.cli and motion_core.devices: the one-line promise and device names."""
import pytest
import torch

from motion_core.cli import OneLineParser, UsageError, run_cli
from motion_core.devices import get_dtype, resolve_device


def _parser():
    p = OneLineParser(prog="x")
    p.add_argument("--n", type=int, required=True)
    return p


@pytest.mark.parametrize("argv, exc, code, line", [
    (["--n", "zz"], None, 2, "invalid int value"),
    ([], None, 2, "required"),
    (["--n", "1"], UsageError("bad\nvalue"), 2, "error: bad value"),
    (["--n", "1"], FileNotFoundError("missing file"), 2, "error: missing file"),
    (["--n", "1"], KeyboardInterrupt(), 130, "interrupted"),
])
def test_user_mistakes_are_one_line(capsys, argv, exc, code, line):
    def run(args):
        raise exc
    assert run_cli(_parser(), argv, run) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err, err


def test_success_prints_the_message_and_bugs_keep_their_traceback(capsys):
    assert run_cli(_parser(), ["--n", "3"], lambda a: f"done {a.n}") == 0
    assert capsys.readouterr().out == "done 3\n"
    with pytest.raises(ZeroDivisionError):
        run_cli(_parser(), ["--n", "0"], lambda a: 1 / a.n)


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "0", "cuda:1"):
            with pytest.raises(ValueError, match="no CUDA device"):
                resolve_device(name)
    assert get_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="expected one of"):
        get_dtype("fp8")


def test_exit_without_teardown_keeps_output_exit_handlers_and_status(tmp_path):
    import subprocess
    import sys
    marker = tmp_path / "handler_ran"
    code = ("import atexit, sys\n"
            "from motion_core.cli import exit_without_teardown\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
            "print('done: half a line', end='')\n"
            "sys.stderr.write('warning kept')\n"
            "exit_without_teardown(3)\n"
            "print('never')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3
    assert out.stdout == "done: half a line" and out.stderr == "warning kept"
    assert marker.read_text() == "yes"
