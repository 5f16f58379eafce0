"""Scene files recognised by content: our prompt lines, PriorMDM's CSV, FlowMDM's JSON; every
other or malformed file is a one-line error, never prompts read from the wrong columns."""
import json

import pytest

from motion_collage.methods import Frames
from motion_collage.scene_files import read_scene_file


def write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / name
    path.write_text(content, encoding=encoding)
    return path


def test_priormdm_csv_is_read_as_frames(tmp_path):
    # PriorMDM's assets/dt_csv_example.csv layout, a quoted prompt with a comma, a spreadsheet's BOM
    path = write(tmp_path, "scene.txt", 'text,length\nA person walks,100\n"A person sits, then stands",120\n\n'
                                        "A person is running in a circle,123", encoding="utf-8-sig")
    scene = read_scene_file(path)
    assert scene.format == "PriorMDM CSV"
    assert scene.texts == ["A person walks", "A person sits, then stands", "A person is running in a circle"]
    assert scene.durations == [100, 120, 123] and all(type(d) is Frames for d in scene.durations)
    swapped = read_scene_file(write(tmp_path, "swapped.csv", "length,text\n40,a person jumps\n"))
    assert swapped.texts == ["a person jumps"] and swapped.durations == [Frames(40)]


def test_flowmdm_json_is_read_as_frames(tmp_path):
    data = {"lengths": [64, 42.0], "text": ["turn left", "walk\nforward"]}  # FlowMDM's runners/jsons layout
    scene = read_scene_file(write(tmp_path, "scene.json", json.dumps(data, indent="\t")))
    assert scene.format == "FlowMDM JSON"
    assert scene.texts == ["turn left", "walk forward"]
    assert scene.durations == [64, 42] and all(type(d) is Frames for d in scene.durations)


def test_prompt_lines_keep_working(tmp_path):
    scene = read_scene_file(write(tmp_path, "p.txt", "a person walks, then turns # 1.5\n\na person runs\n"))
    assert scene.format == "prompt lines"
    assert scene.texts == ["a person walks, then turns", "a person runs"] and scene.durations == [1.5, None]
    assert type(scene.durations[0]) is float


@pytest.mark.parametrize("content, message", [
    ("text,length\nwalk,100,3\n", "p.txt:2: a row of 3 fields"),
    ("text,length\nwalk,ten\n", "p.txt:2: the length is 'ten'; expected a whole number of frames"),
    ("text,length\nwalk,0\n", "the length is 0"),
    ("text,length\nwalk,1.5\n", "the length is '1.5'"),
    ("text,length\n,100\n", "p.txt:2: the prompt is empty"),
    ("text,length\n", "is empty"),
    ("text,seconds\nwalk,4\n", "columns text,seconds; expected PriorMDM's header 'text,length'"),
    ("prompt,length,extra\nwalk,4,1\n", "columns prompt,length,extra"),
    ("A person walks,100\nA person runs,80\n", "without a header"),
    ('{"text": ["walk"], "lengths": [40]', "is not valid JSON"),
    ('{"text": ["walk"]}', "holds ['text']; expected FlowMDM's"),
    ('{"text": ["walk"], "lengths": [40], "fps": 30}', "holds ['fps', 'lengths', 'text']"),
    ('["walk", "run"]', "holds a JSON list"),
    ('{"text": ["walk", "run"], "lengths": [40]}', "lists of the same length, got a list of 2 and a list of 1"),
    ('{"text": "walk", "lengths": 40}', "must be lists"),
    ('{"text": [3], "lengths": [40]}', "text[0] is int 3, expected a prompt string"),
    ('{"text": ["walk"], "lengths": [true]}', "lengths[0] is True"),
    ('{"text": ["walk"], "lengths": [-5]}', "lengths[0] is -5"),
    ('{"text": ["walk"], "lengths": [NaN]}', "lengths[0] is nan"),
    ('{"text": [" "], "lengths": [40]}', "text[0] is empty"),
    ('{"text": [], "lengths": []}', "is empty"),
    ("a person walks # soon\n", "p.txt:1: seconds after '#' must be numbers, got 'soon'"),
    ("a person walks # -2\n", "must be positive"),
    ("   \n\n", "is empty"),
])
def test_malformed_files_are_one_line_errors(tmp_path, content, message):
    path = write(tmp_path, "p.txt", content)
    with pytest.raises(ValueError) as info:
        read_scene_file(path)
    text = str(info.value)
    assert message in text and "\n" not in text and str(path) in text, text


def test_unreadable_files(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"text,length\n\xff\xfe,100\n")
    for path, message in ((tmp_path / "bin.csv", "UTF-8"), (tmp_path, "not a file"),
                          (tmp_path / "missing.json", "does not exist")):
        with pytest.raises(ValueError, match=message):
            read_scene_file(path)
