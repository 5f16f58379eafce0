"""``python -m motion_collage.app``: a local web page to compose a timeline, watch it, download it.

The standard library's HTTP server, one page, no external resources (a Content-Security-Policy
of 'self' keeps the browser from fetching anything elsewhere, and nothing here calls out).
Binds 127.0.0.1 by default and answers only requests addressed to the host it serves.

Routes: ``GET /`` the page (``/app.js``, ``/app.css``); ``GET /api/config`` the choices and
defaults; ``POST /api/prompt_file`` rows of an uploaded prompt file; ``POST /api/generate`` a run
(400 with the CLI's one-line error); ``GET /api/runs/<id>`` its state; ``POST /api/runs/<id>/cancel``;
``GET /files/<id>/<name>`` a finished run's file (byte ranges for the video element).
"""
from __future__ import annotations

import argparse
import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Sequence

from motion_core import defaults
from motion_core.atomic import terminate_as_exit
from motion_core.cli import USER_ERRORS, OneLineParser, run_cli

from . import page
from .jobs import DOWNLOADS, MAX_SAMPLES_IN_PAGE, Runner, ServerSettings, cli_line, read_prompt_text

MAX_BODY = 2 << 20
CSP = "default-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; frame-ancestors 'none'"
FILE_ROUTE = re.compile(r"^/files/([0-9a-f]{32})/([A-Za-z0-9_.-]+)$")
RUN_ROUTE = re.compile(r"^/api/runs/([0-9a-f]{32})(/cancel)?$")
CONTENT_TYPES = {".mp4": "video/mp4", ".json": "application/json", ".txt": "text/plain; charset=utf-8",
                 ".npy": "application/octet-stream", ".npz": "application/octet-stream",
                 ".bvh": "text/plain; charset=utf-8"}


def app_config() -> dict:
    """Choices and defaults for the form, from the registries and motion_core.defaults."""
    from motion_collage.methods import METHODS
    from motion_collage.samplers import SAMPLERS

    return {"methods": {name: {"loops": bool(spec.loops)} for name, spec in METHODS.items()},
            "samplers": list(SAMPLERS),
            "defaults": {"method": defaults.METHOD, "sampler": defaults.SAMPLER, "steps": defaults.STEPS,
                         "guidance_param": defaults.GUIDANCE, "overlap": f"{defaults.OVERLAP_SECONDS:g}",
                         "seconds": defaults.SEGMENT_SECONDS, "seed": 10, "num_samples": 1},
            "max_samples": MAX_SAMPLES_IN_PAGE}


class Handler(BaseHTTPRequestHandler):
    """One request; the server object carries the runner and the allowed Host names."""

    server_version = "motion-collage"
    protocol_version = "HTTP/1.1"

    # ------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: Optional[dict] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, line: str) -> None:
        self._json(status, {"error": line})

    def _host_ok(self) -> bool:
        """Only requests addressed to this server (a page elsewhere cannot rebind its name to us)."""
        allowed = self.server.allowed_hosts  # type: ignore[attr-defined]
        return allowed is None or (self.headers.get("Host") or "").strip().lower() in allowed

    def _body(self) -> Optional[object]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"error: the request must be at most {MAX_BODY} bytes")
            return None
        if "application/json" not in (self.headers.get("Content-Type") or ""):
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "error: send the form as application/json")
            return None
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError):
            self._error(HTTPStatus.BAD_REQUEST, "error: the request is not valid JSON")
            return None

    # ------------------------------------------------------------- routes
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "error: unknown Host")
        path = self.path.split("?", 1)[0]
        static = {"/": (page.HTML, "text/html; charset=utf-8"), "/app.js": (page.JS, "text/javascript"),
                  "/app.css": (page.CSS, "text/css")}
        if path in static:
            text, kind = static[path]
            return self._send(HTTPStatus.OK, text.encode(), kind)
        if path == "/api/config":
            return self._json(HTTPStatus.OK, app_config())
        match = RUN_ROUTE.match(path)
        if match and not match.group(2):
            run = self.server.runner.get(match.group(1))  # type: ignore[attr-defined]
            return self._json(HTTPStatus.OK, run.status()) if run else self._error(HTTPStatus.NOT_FOUND, "error: no such run")
        match = FILE_ROUTE.match(path)
        if match:
            return self._file(match.group(1), match.group(2))
        self._error(HTTPStatus.NOT_FOUND, "error: not found")

    def do_POST(self) -> None:
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "error: unknown Host")
        runner: Runner = self.server.runner  # type: ignore[attr-defined]
        match = RUN_ROUTE.match(self.path)
        if match and match.group(2):
            run = runner.cancel(match.group(1))
            return self._json(HTTPStatus.OK, run.status()) if run else self._error(HTTPStatus.NOT_FOUND, "error: no such run")
        if self.path not in ("/api/generate", "/api/prompt_file"):
            return self._error(HTTPStatus.NOT_FOUND, "error: not found")
        form = self._body()
        if form is None:
            return None
        try:
            if self.path == "/api/prompt_file":
                form = form if isinstance(form, dict) else {}
                return self._json(HTTPStatus.OK, {"rows": read_prompt_text(form.get("name"), form.get("text"), runner.fps)})
            return self._json(HTTPStatus.OK, runner.submit(form).status())
        except USER_ERRORS as exc:
            return self._error(HTTPStatus.BAD_REQUEST, cli_line(exc))

    def _file(self, run_id: str, name: str) -> None:
        runner: Runner = self.server.runner  # type: ignore[attr-defined]
        run = runner.get(run_id)
        if run is None or run.state != "done" or name not in run.files or Path(name).suffix not in DOWNLOADS:
            return self._error(HTTPStatus.NOT_FOUND, "error: no such file")
        data = (runner.folder(run_id) / name).read_bytes()
        kind = CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
        extra = {"Accept-Ranges": "bytes"}
        if Path(name).suffix != ".mp4":
            extra["Content-Disposition"] = f'attachment; filename="{name}"'
        span = _byte_range(self.headers.get("Range"), len(data))
        if span is None:
            return self._send(HTTPStatus.OK, data, kind, extra)
        start, end = span
        extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(HTTPStatus.PARTIAL_CONTENT, data[start:end + 1], kind, extra)


def _byte_range(header: Optional[str], size: int) -> Optional[tuple[int, int]]:
    """The one ``bytes=a-b`` range of a Range header (None: the whole file)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or size == 0 or not (match.group(1) or match.group(2)):
        return None
    if match.group(1):
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    else:
        start, end = max(0, size - int(match.group(2))), size - 1
    return (start, end) if start <= end < size else None


class AppServer(ThreadingHTTPServer):
    """A thread per request; the page's polls and downloads never wait for a generation."""

    daemon_threads = True
    request_queue_size = 32


def make_server(runner: Runner, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """The HTTP server (not started); ``port`` 0 picks a free one."""
    server = AppServer((host, port), Handler)
    real_port = server.server_address[1]
    loopback = host == "localhost" or host.startswith("127.")
    # On this machine only, a request must name it (DNS rebinding); a chosen --host serves any name.
    server.allowed_hosts = ({f"{n}:{real_port}" for n in {host, "localhost", "127.0.0.1"}}  # type: ignore[attr-defined]
                            if loopback else None)
    server.runner = runner  # type: ignore[attr-defined]
    return server


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m motion_collage.app",
                      description="A local web page: compose a timeline of prompts, generate it, watch and download it.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--model_path", default=None, help="model to serve (default: the embedded model in save/default)")
    p.add_argument("--clip_path", default=None, help="CLIP ViT-B/32 weights for official checkpoints")
    p.add_argument("--stats_dir", default=None, help="folder with the model's Mean.npy/Std.npy if not beside it")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or a GPU index")
    p.add_argument("--dtype", default=defaults.DTYPE, choices=("fp32", "bf16", "fp16"), help="compute dtype")
    p.add_argument("--output_root", default=None,
                   help="folder of the runs' private output folders (default save/app)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def check_server_args(args: argparse.Namespace) -> ServerSettings:
    """The server's settings, checked before it binds (the model is checked by one dry parse)."""
    from motion_core.devices import resolve_device

    from motion_collage.sample import REPO_ROOT

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    resolve_device(args.device)
    if args.model_path and not Path(args.model_path).exists():
        raise FileNotFoundError(f"--model_path {args.model_path} does not exist")
    root = Path(args.output_root) if args.output_root else REPO_ROOT / "save" / "app"
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--output_root {root} is not a folder")
    return ServerSettings(root, args.model_path, args.device, args.dtype, args.clip_path, args.stats_dir)


def run(args: argparse.Namespace) -> Optional[str]:
    """Check the settings, bind, load the model once, serve until Ctrl-C."""
    settings = check_server_args(args)
    settings.output_root.mkdir(parents=True, exist_ok=True)
    runner = Runner(settings)
    try:
        server = make_server(runner, args.host, args.port)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); choose another --port") from None
    print("loading the model ...", flush=True)
    try:
        runner.preload()
    except BaseException:
        server.server_close()
        raise
    server.verbose = args.verbose  # type: ignore[attr-defined]
    host, port = server.server_address[:2]
    print(f"serving on http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/  (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return "stopped"


def main(argv: Optional[Sequence[str]] = None) -> int:
    with terminate_as_exit():  # SIGTERM stops like Ctrl-C; a run cut short is removed at the next start
        return run_cli(build_parser(), argv, run)
