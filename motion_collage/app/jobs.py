"""The app's work: a browser request -> the ``sample`` command's checks -> one generation run.

A request is checked exactly as ``python -m motion_collage.sample`` checks its command line (its
own parser, :func:`motion_collage.sample.parse`), so a bad value gives the CLI's one line. Each
run writes into its own private folder (``<output_root>/<random id>``), staged by
:func:`motion_core.atomic.staged_dir`: it appears complete or not at all. Runs share one model,
loaded once, and take turns (one generates while the others wait); a run can be cancelled
between two denoiser calls or two videos.
"""
from __future__ import annotations

import argparse
import math
import re
import secrets
import shutil
import tempfile
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from motion_core.atomic import remove_stale_temporaries, staged_dir
from motion_core.cli import USER_ERRORS, UsageError, one_line

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RUN_TEMPORARY = re.compile(r"^\.([0-9a-f]{32})\..+\.(tmp|new)$")  # motion_core.atomic's name for a run's folder
DOWNLOADS = (".mp4", ".npy", ".npz", ".json", ".txt", ".bvh")
MAX_SAMPLES_IN_PAGE = 8      # videos rendered side by side for one request
MAX_PROMPT_FILE_BYTES = 1 << 20
FORM_FIELDS = {"prompts": list, "seconds": list, "loop": bool, "overlap": str, "method": str,
               "sampler": str, "steps": (int, str), "guidance_param": (int, float, str),
               "seed": (int, str), "num_samples": (int, str), "transition": str}


class Cancelled(Exception):
    """The user cancelled the run."""


class ParseError(UsageError):
    """A command-line parse error: its message is the CLI's whole stderr line."""


def cli_line(exc: BaseException) -> str:
    """The line the CLI prints on stderr for this user error."""
    return str(exc) if isinstance(exc, ParseError) else f"error: {one_line(exc)}"


def _sample():
    from motion_collage import sample
    return sample


def _parser() -> argparse.ArgumentParser:
    """The ``sample`` command's parser, raising :class:`ParseError` instead of exiting."""
    parser = _sample().build_parser()

    def exit_with(status: int = 0, message: Optional[str] = None):
        raise ParseError((message or f"error: exit {status}").strip())

    parser.exit = exit_with  # type: ignore[method-assign]
    return parser


def _text(value: Any) -> str:
    """A form value as the command line would carry it (numbers without a trailing '.0' change)."""
    if isinstance(value, bool):
        raise UsageError(f"expected a number or text, got {value!r}")
    return str(value)


def _check_form(form: Any) -> dict:
    if not isinstance(form, dict):
        raise UsageError("the request must be a JSON object of the form's fields")
    unknown = sorted(set(form) - set(FORM_FIELDS))
    if unknown:
        raise UsageError(f"unknown field(s) {unknown}; the form has {sorted(FORM_FIELDS)}")
    for name, kind in FORM_FIELDS.items():
        if name in form and form[name] is not None and not isinstance(form[name], kind):
            raise UsageError(f"field {name!r} has the wrong type ({type(form[name]).__name__})")
    for name in ("prompts", "seconds"):
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in form.get(name) or []):
            raise UsageError(f"field {name!r} must be a list of texts or numbers")
    return form


def form_argv(form: dict) -> list[str]:
    """The ``sample`` options a form stands for (prompts and seconds are set after parsing)."""
    argv = ["--prompts", "_"] if form.get("prompts") else ["--prompts"]
    for name in ("method", "sampler", "steps", "guidance_param", "seed", "num_samples", "transition", "overlap"):
        value = form.get(name)
        if value is not None and not (name == "overlap" and str(value).strip() == ""):
            argv.append(f"--{name}={_text(value)}")
    if form.get("loop"):
        argv.append("--loop")
    return argv


@dataclass(frozen=True)
class ServerSettings:
    """What the server fixes for every request (the model and where outputs go)."""

    output_root: Path
    model_path: Optional[str] = None
    device: str = "auto"
    dtype: str = "fp32"
    clip_path: Optional[str] = None
    stats_dir: Optional[str] = None

    def argv(self) -> list[str]:
        out = [f"--device={self.device}", f"--dtype={self.dtype}", "--render=skeleton"]
        for name in ("model_path", "clip_path", "stats_dir"):
            if getattr(self, name):
                out.append(f"--{name}={getattr(self, name)}")
        return out


def check_request(form: Any, settings: ServerSettings, out_dir: Path):
    """The ``sample`` job for a form, checked like the command line; raises the CLI's errors."""
    form = _check_form(form)
    args = _parser().parse_args(form_argv(form) + settings.argv() + [f"--output_dir={out_dir}"])
    if form.get("prompts"):
        args.prompts = [_text(p) for p in form["prompts"]]
    args.seconds = [_text(s) for s in form["seconds"]] if form.get("seconds") else None
    job = _sample().parse(args)
    if args.num_samples > MAX_SAMPLES_IN_PAGE:
        raise UsageError(f"--num_samples must be at most {MAX_SAMPLES_IN_PAGE} in the app (videos side by side), "
                         f"got {args.num_samples}; use the sample command for more")
    return job


def _read_scene(path: str) -> tuple[list[str], list]:
    """Prompts and durations of a file ``sample --input_text`` reads (wherever its reader lives now)."""
    try:
        from motion_collage.scene_files import read_scene_file
    except ImportError:  # the readers before they moved out of sample
        return _sample().read_prompt_file(path)
    scene = read_scene_file(path)
    return scene.texts, scene.durations


def _seconds(duration, fps: float) -> Optional[float]:
    """A file's duration in seconds (frames at the model's fps); None keeps the default."""
    from motion_collage.methods import Frames

    return round(int(duration) / fps, 4) if isinstance(duration, Frames) else duration


def read_prompt_text(name: Any, text: Any, fps: float) -> list[dict]:
    """Rows ``[{prompt, seconds}]`` of an uploaded prompt or scene file, read by the CLI's reader.

    The file is written under its base name into a private temporary folder (a name with folders
    in it never leaves that folder); messages name the file as the user called it.
    """
    if not isinstance(name, str) or not isinstance(text, str):
        raise UsageError("a prompt file upload needs its name and its text")
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_PROMPT_FILE_BYTES:
        raise UsageError(f"prompt file {name} is larger than {MAX_PROMPT_FILE_BYTES} bytes")
    base = Path(name.replace("\\", "/")).name
    base = base if base not in ("", ".", "..") else "prompts.txt"
    folder = Path(tempfile.mkdtemp(prefix="motion_collage_app_"))
    try:
        path = folder / base
        path.write_bytes(data)
        try:
            prompts, durations = _read_scene(str(path))
        except USER_ERRORS as exc:
            raise UsageError(str(exc).replace(str(path), base)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [{"prompt": p, "seconds": _seconds(d, fps)} for p, d in zip(prompts, durations)]


# ----------------------------------------------------------------------------------- runs

@dataclass
class Run:
    """One request's generation: its state as the page polls it."""

    id: str
    job: Any
    state: str = "queued"            # queued -> running -> done | failed | cancelled
    step: int = 0
    steps: int = 0
    sampler_run: int = 1
    message: str = "waiting for the model"
    error: Optional[str] = None
    files: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict:
        """What the page shows (no paths)."""
        return {"id": self.id, "state": self.state, "step": self.step, "steps": self.steps,
                "sampler_run": self.sampler_run, "message": self.message, "error": self.error,
                "files": self.files, "videos": self.videos, "segments": self.segments, "seconds": self.seconds}


class WatchedDenoiser:
    """The model's piece denoiser, noting the sampling step and stopping a cancelled run."""

    def __init__(self, inner, run: Run, grid: list[float]) -> None:
        self._inner, self._run, self._log_grid = inner, run, [math.log(max(s, 1e-30)) for s in grid[:-1]]
        self._last = -1

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def __call__(self, x, sigma, *args, **kwargs):
        if self._run.cancel.is_set():
            raise Cancelled()
        log_s = math.log(max(float(sigma.max()), 1e-30))
        index = min(range(len(self._log_grid)), key=lambda i: abs(self._log_grid[i] - log_s))
        if index < self._last:
            self._run.sampler_run += 1  # a method that samples several times (windows, takes)
        self._last = index
        self._run.step = index + 1
        self._run.message = f"sampling step {index + 1}/{self._run.steps}" + (
            f" (pass {self._run.sampler_run})" if self._run.sampler_run > 1 else "")
        return self._inner(x, sigma, *args, **kwargs)


class WatchedModel:
    """A loaded model whose denoiser is watched for one run (everything else is the model's)."""

    def __init__(self, model, denoiser: WatchedDenoiser) -> None:
        self._model, self.denoiser = model, denoiser

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def new_run_id() -> str:
    return secrets.token_hex(16)


class Runner:
    """The server's runs: one model, loaded once; one generation at a time; private folders."""

    def __init__(self, settings: ServerSettings, load_model: Optional[Callable[[Any], Any]] = None) -> None:
        self.settings = settings
        self.runs: dict[str, Run] = {}
        self._model = None
        self._load_model = load_model or (lambda job: _sample().build(job))
        self._turn = threading.Lock()
        self._runs_lock = threading.Lock()

    def folder(self, run_id: str) -> Path:
        return self.settings.output_root / run_id

    def submit(self, form: Any) -> Run:
        """Check the form (raising the CLI's error) and start its run in the background."""
        run_id = new_run_id()
        job = check_request(form, self.settings, self.folder(run_id))
        if self._model is not None:
            from motion_collage.sample import check_timeline
            check_timeline(job, self._model)
        run = Run(run_id, job, steps=job.args.steps)
        with self._runs_lock:
            self.runs[run_id] = run
        threading.Thread(target=self._work, args=(run,), daemon=True, name=f"run-{run_id[:8]}").start()
        return run

    def get(self, run_id: str) -> Optional[Run]:
        return self.runs.get(run_id) if RUN_ID.match(run_id or "") else None

    @property
    def fps(self) -> float:
        """The served model's frame rate (a scene file's frames become seconds at it)."""
        if self._model is not None:
            return float(self._model.spec.fps)
        from motion_core.spec import HUMANML3D
        return float(HUMANML3D.fps)

    def remove_leftovers(self) -> list[Path]:
        """Temporaries of runs killed with an earlier server (a live server's runs are locked, kept)."""
        root = self.settings.output_root
        names = {m.group(1) for p in (root.iterdir() if root.is_dir() else []) if (m := RUN_TEMPORARY.match(p.name))}
        return [p for name in sorted(names) for p in remove_stale_temporaries(root / name)]

    def preload(self) -> None:
        """Load the model now (a bad --model_path fails before the server listens); clear leftovers."""
        self.remove_leftovers()
        probe = self.settings.output_root / f".preload_{new_run_id()}"
        self.model(check_request({"prompts": ["a person walks"]}, self.settings, probe))

    def model(self, job):
        if self._model is None:
            self._model = self._load_model(job)
        return self._model

    def _work(self, run: Run) -> None:
        with self._turn:
            try:
                if run.cancel.is_set():
                    raise Cancelled()
                run.state, run.message = "running", "loading the model"
                self._generate(run)
                run.state, run.message = "done", f"sampled in {run.seconds:g} s; videos rendered"
            except Cancelled:
                run.state, run.message = "cancelled", "cancelled; nothing was written"
            except USER_ERRORS as exc:
                run.state, run.error, run.message = "failed", cli_line(exc), "failed"
            except Exception as exc:  # a bug: the page says so, the console keeps the traceback
                traceback.print_exc()
                run.state, run.error, run.message = "failed", f"internal error: {one_line(exc)}", "failed"

    def _generate(self, run: Run) -> None:
        from motion_collage.samplers import get_sampler

        model = self.model(run.job)
        args = run.job.args
        sigmas, _ = get_sampler(args.sampler).grid(model.schedule, args.steps)
        grid = [float(s) for s in sigmas]
        run.steps = len(grid) - 1
        watched = WatchedModel(model, WatchedDenoiser(model.denoiser, run, grid))
        out = _sample().generate(run.job, watched)
        run.seconds = round(float(out.settings.get("sampling_seconds", 0.0)), 1)
        save_run(run, model, out)

    def cancel(self, run_id: str) -> Optional[Run]:
        run = self.get(run_id)
        if run is not None and run.state in ("queued", "running"):
            run.cancel.set()
        return run


def save_run(run: Run, model, out) -> None:
    """Results and one skeleton video per sample into the run's folder (staged: all or nothing)."""
    from motion_collage.render import render_skeleton, results_row

    sample, args = _sample(), run.job.args
    with staged_dir(run.job.out_dir) as tmp:
        sample.save_outputs(tmp, out.results, out.features, out.settings)
        for i in range(args.num_samples):
            if run.cancel.is_set():
                raise Cancelled()
            run.message = f"rendering video {i + 1}/{args.num_samples}"
            joints, segments, caption, loop = results_row(out.results, i, 0)
            render_skeleton(joints, tmp / f"sample{i:02d}_rep00.mp4", segments=segments, fps=model.spec.fps,
                            loop=loop, title=caption)
    names = sorted(p.name for p in run.job.out_dir.iterdir() if p.suffix in DOWNLOADS)
    run.files = names
    run.videos = [n for n in names if n.endswith(".mp4")]
    fps = model.spec.fps
    run.segments = [{"text": s["text"], "start_s": s["start"] / fps, "end_s": s["end"] / fps}
                    for s in out.results["segments"][0]]
