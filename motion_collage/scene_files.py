"""Scene files for ``sample --input_text``: the timeline of one motion, recognised by content.

Three formats, told apart by what the file holds (not by its name):

* **prompt lines** (ours): one segment per line, ``prompt`` or ``prompt # seconds``; blank lines
  are skipped.
* **PriorMDM's CSV** (DoubleTake's ``--input_text``): a header ``text,length`` (either order), then
  one ``prompt,frames`` row per segment; a prompt holding commas is quoted as CSV does.
* **FlowMDM's JSON**: ``{"text": [prompt, ...], "lengths": [frames, ...]}``.

Lengths in the CSV and JSON are frames at the model's frame rate (20 fps for HumanML3D), kept as
:class:`~motion_collage.methods.Frames` until the model is known. A file that looks like a table or
JSON but does not match its format is a one-line :class:`UsageError` (a ValueError) naming the
file, the line and the fix, never read as prompts.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from motion_core.cli import UsageError

from .methods import Duration, Frames

FORMATS = ("prompt lines", "PriorMDM CSV", "FlowMDM JSON")
_HEADER = re.compile(r"\s*[A-Za-z_]+\s*(,\s*[A-Za-z_]+\s*)+")  # a CSV header: names and commas only
_CSV_ROW = re.compile(r".*,\s*[0-9]+\s*")  # 'some text,120': a CSV row whose header is missing


@dataclass(frozen=True)
class SceneFile:
    """A scene file's segments: prompts and durations (seconds, Frames, or None: the default)."""

    texts: list[str]
    durations: list[Optional[Duration]]
    format: str  # one of FORMATS


def clean_prompt(text: str, where: str) -> str:
    """One line of text: runs of whitespace (line breaks included) become one space."""
    cleaned = " ".join(str(text).split())
    if not cleaned:
        raise UsageError(f"{where} is empty")
    return cleaned


def parse_seconds(text: str, where: str = "seconds") -> float:
    """A positive, finite number of seconds from ``text``."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{where} must be numbers, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{where} must be positive, got {text}")
    return value


def read_scene_file(path: Union[str, Path]) -> SceneFile:
    """The segments of a prompt-lines, PriorMDM CSV or FlowMDM JSON file (see the module doc)."""
    text = _read_text(Path(path))
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        scene = parse_flowmdm_json(text, str(path))
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise UsageError(f"prompt file {path} is empty")
        if _HEADER.fullmatch(lines[0]):
            scene = parse_priormdm_csv(text, str(path))
        elif all(_CSV_ROW.fullmatch(ln) and "#" not in ln for ln in lines):
            raise UsageError(f"{path} looks like a CSV of 'prompt,frames' rows without a header; add PriorMDM's "
                             "header line 'text,length' (lengths in frames) or write 'prompt # seconds' lines")
        else:
            scene = parse_prompt_lines(text, str(path))
    if not scene.texts:
        raise UsageError(f"prompt file {path} is empty")
    return scene


def _read_text(file: Path) -> str:
    if not file.is_file():
        raise UsageError(f"prompt file {file} does not exist (or is not a file)")
    try:
        return file.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not text
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"prompt file {file} cannot be read as UTF-8 text ({exc.__class__.__name__})") from None


def parse_prompt_lines(text: str, path: str) -> SceneFile:
    """Our format: ``prompt`` or ``prompt # seconds`` per line."""
    texts, durations = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        words, _, dur = line.partition("#")
        texts.append(clean_prompt(words, f"{path}:{n}: the prompt"))
        durations.append(parse_seconds(dur.strip(), f"{path}:{n}: seconds after '#'") if dur.strip() else None)
    return SceneFile(texts, durations, FORMATS[0])


def parse_priormdm_csv(text: str, path: str) -> SceneFile:
    """PriorMDM's CSV: header ``text,length``, then ``prompt,frames`` rows (CSV quoting)."""
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1)
            if any(cell.strip() for cell in row)]
    header = [cell.strip().lower() for cell in rows[0][1]]
    if sorted(header) != ["length", "text"]:
        raise UsageError(f"{path} is a CSV table with columns {','.join(header)}; expected PriorMDM's header "
                         "'text,length' (lengths in frames)")
    text_col, length_col = header.index("text"), header.index("length")
    texts, durations = [], []
    for n, row in rows[1:]:
        if len(row) != 2:
            raise UsageError(f"{path}:{n}: a row of {len(row)} fields; expected 'prompt,frames' (quote a prompt "
                             "that holds commas: \"a person walks, then runs\",120)")
        texts.append(clean_prompt(row[text_col], f"{path}:{n}: the prompt"))
        cell = row[length_col].strip()
        durations.append(_frames(int(cell) if re.fullmatch(r"[0-9]+", cell) else cell, f"{path}:{n}: the length"))
    return SceneFile(texts, durations, FORMATS[1])


def parse_flowmdm_json(text: str, path: str) -> SceneFile:
    """FlowMDM's JSON: ``{"text": [...], "lengths": [...]}`` (lengths in frames)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); expected "
                         "FlowMDM's {\"text\": [...], \"lengths\": [...]}") from None
    if not isinstance(data, dict) or set(data) != {"text", "lengths"}:
        found = sorted(data) if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise UsageError(f"{path} holds {found}; expected FlowMDM's {{\"text\": [...], \"lengths\": [...]}} "
                         "(lengths in frames) and nothing else")
    texts, lengths = data["text"], data["lengths"]
    if not (isinstance(texts, list) and isinstance(lengths, list)) or len(texts) != len(lengths):
        raise UsageError(f"{path}: 'text' and 'lengths' must be lists of the same length, got "
                         f"{_describe(texts)} and {_describe(lengths)}")
    prompts = []
    for i, prompt in enumerate(texts):
        if not isinstance(prompt, str):
            raise UsageError(f"{path}: text[{i}] is {_describe(prompt)}, expected a prompt string")
        prompts.append(clean_prompt(prompt, f"{path}: text[{i}]"))
    return SceneFile(prompts, [_frames(v, f"{path}: lengths[{i}]") for i, v in enumerate(lengths)], FORMATS[2])


def _frames(value: Any, where: str) -> Frames:
    """A positive whole number of frames (a JSON number or a CSV cell read as a number)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where} is {value!r}; expected a whole number of frames >= 1 (at the model's fps)")
    return Frames(value)


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:60]
