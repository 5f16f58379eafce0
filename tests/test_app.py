"""The web app: the CLI's messages in the page, private outputs, cancel, the HTTP surface, a real browser."""
import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from motion_collage import sample  # noqa: E402
from motion_collage.app import jobs, server  # noqa: E402

# Debian's packages (apt-get install chromium chromium-driver); the variables point elsewhere.
CHROMIUM = Path(os.environ.get("MOTION_COLLAGE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MOTION_COLLAGE_CHROMEDRIVER", "/usr/bin/chromedriver"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


class SlowDenoiser:
    """The model's piece denoiser, 20 ms slower per call (so a run can be cancelled mid-way)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        time.sleep(0.02)
        return self.inner(*args, **kwargs)


def serve(settings, load_model=None):
    runner = jobs.Runner(settings, load_model)
    runner.preload()
    httpd = server.make_server(runner, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def app(tiny, tmp_path):
    httpd, url = serve(jobs.ServerSettings(tmp_path / "runs", model_path=str(tiny), device="cpu"))
    yield url, tmp_path / "runs"
    httpd.shutdown()
    httpd.server_close()


def call(url, path, body=None, headers=None):
    """(status, parsed JSON or bytes) of a GET (body None) or a JSON POST."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, status, kind = resp.read(), resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        raw, status, kind = err.read(), err.code, err.headers.get("Content-Type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw


def wait(url, run_id, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        _, run = call(url, f"/api/runs/{run_id}")
        if run["state"] not in ("queued", "running"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {run}")


# Each bad form and the sample command line that says the same thing.
BAD = [
    ({"prompts": ["walk"], "steps": "0"}, ["--prompts", "walk", "--steps", "0"]),
    ({"prompts": ["walk"], "steps": "abc"}, ["--prompts", "walk", "--steps", "abc"]),
    ({"prompts": ["walk"], "guidance_param": "nan"}, ["--prompts", "walk", "--guidance_param", "nan"]),
    ({"prompts": ["walk"], "num_samples": "0"}, ["--prompts", "walk", "--num_samples", "0"]),
    ({"prompts": []}, ["--prompts"]),
    ({"prompts": ["walk", "  "]}, ["--prompts", "walk", "  "]),
    ({"prompts": ["walk", "jump"], "seconds": ["1", "2", "3"]}, ["--prompts", "walk", "jump", "--seconds", "1", "2", "3"]),
    ({"prompts": ["walk"], "seconds": ["-1"]}, ["--prompts", "walk", "--seconds", "-1"]),
    ({"prompts": ["walk"], "seconds": [""]}, ["--prompts", "walk", "--seconds", ""]),
    ({"prompts": ["walk"], "overlap": "x"}, ["--prompts", "walk", "--overlap", "x"]),
    ({"prompts": ["walk"], "method": "naive", "loop": True}, ["--prompts", "walk", "--method", "naive", "--loop"]),
    ({"prompts": ["walk"], "method": "bogus"}, ["--prompts", "walk", "--method", "bogus"]),
    ({"prompts": ["walk"], "sampler": "bogus"}, ["--prompts", "walk", "--sampler", "bogus"]),
    ({"prompts": ["walk"], "seconds": ["1"], "loop": True}, ["--prompts", "walk", "--seconds", "1", "--loop"]),
]


def test_every_bad_form_is_the_cli_line_and_writes_nothing(app, tiny, tmp_path, capsys):
    url, runs = app
    for form, argv in BAD:
        status, reply = call(url, "/api/generate", form)
        assert status == 400, (form, reply)
        rc = sample.main(argv + ["--model_path", str(tiny), "--output_dir", str(tmp_path / "cli"), "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0
        assert reply["error"] == err, (form, reply["error"], err)
    assert not runs.exists() or list(runs.iterdir()) == []
    assert not (tmp_path / "cli").exists()


def test_runs_at_once_keep_private_folders_and_files_download(app):
    url, runs = app
    forms = [{"prompts": ["person walks", "person jumps"], "seconds": ["1", "1"], "steps": "3", "seed": "1"},
             {"prompts": ["person waves"], "seconds": ["2"], "steps": "3", "num_samples": "2", "loop": True}]
    replies = [call(url, "/api/generate", f)[1] for f in forms]
    done = [wait(url, r["id"]) for r in replies]
    assert [d["state"] for d in done] == ["done", "done"], done
    for form, run in zip(forms, done):
        folder = runs / run["id"]
        results = np.load(folder / "results.npy", allow_pickle=True).item()
        assert results["text"][0] == " | ".join(form["prompts"])
        assert len(run["videos"]) == int(form.get("num_samples", 1))
        assert [s["text"] for s in run["segments"]] == form["prompts"]
        status, body = call(url, f"/files/{run['id']}/results.npy")
        assert status == 200 and body == (folder / "results.npy").read_bytes()
        status, part = call(url, f"/files/{run['id']}/{run['videos'][0]}", headers={"Range": "bytes=0-9"})
        assert status == 206 and part == (folder / run["videos"][0]).read_bytes()[:10]
    assert done[0]["segments"][1]["end_s"] == pytest.approx(2.0)
    assert sorted(p.name for p in runs.iterdir()) == sorted(r["id"] for r in done)  # no temporaries left


def test_cancel_stops_a_running_and_a_queued_run_and_leaves_nothing(tiny, tmp_path):
    settings = jobs.ServerSettings(tmp_path / "runs", model_path=str(tiny), device="cpu")

    def slow(job):
        model = sample.build(job)
        model.denoiser = SlowDenoiser(model.denoiser)
        return model

    httpd, url = serve(settings, slow)
    try:
        form = {"prompts": ["person walks", "person runs"], "seconds": ["3", "3"], "steps": "100"}
        first, second = (call(url, "/api/generate", form)[1] for _ in range(2))
        end = time.time() + 30
        while call(url, f"/api/runs/{first['id']}")[1]["step"] < 2 and time.time() < end:
            time.sleep(0.02)
        assert call(url, f"/api/runs/{second['id']}")[1]["state"] == "queued"
        for run in (second, first):
            assert call(url, f"/api/runs/{run['id']}/cancel", {})[0] == 200
        for run in (first, second):
            final = wait(url, run["id"])
            assert final["state"] == "cancelled" and final["step"] < 100
        runs = tmp_path / "runs"
        assert not runs.exists() or list(runs.iterdir()) == []
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_killed_servers_half_written_run_is_removed_at_start(tiny, tmp_path):
    runs = tmp_path / "runs"
    leftover = runs / f".{'a' * 32}.x1y2z3.tmp"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "results.npy").write_bytes(b"half")
    finished = runs / ("b" * 32)
    finished.mkdir()
    httpd, _ = serve(jobs.ServerSettings(runs, model_path=str(tiny), device="cpu"))
    httpd.server_close()
    assert sorted(p.name for p in runs.iterdir()) == [finished.name]


def test_prompt_and_scene_files_load_into_rows_with_the_cli_messages(app, tmp_path, capsys, monkeypatch):
    url, _ = app
    status, reply = call(url, "/api/prompt_file", {"name": "walk.txt", "text": "person walks # 2\nperson jumps\n"})
    assert status == 200 and reply["rows"] == [{"prompt": "person walks", "seconds": 2.0},
                                               {"prompt": "person jumps", "seconds": None}]
    status, reply = call(url, "/api/prompt_file", {"name": "s.csv", "text": "text,length\nperson walks,30\n"})
    if status == 200:  # scene formats, where the CLI reads them
        assert reply["rows"] == [{"prompt": "person walks", "seconds": 1.5}]
    bad = tmp_path / "bad.txt"
    bad.write_text("person walks # x\n")
    status, reply = call(url, "/api/prompt_file", {"name": "bad.txt", "text": bad.read_text()})
    monkeypatch.chdir(tmp_path)
    assert sample.main(["--input_text", "bad.txt", "--output_dir", str(tmp_path / "o")]) == 2
    assert status == 400 and reply["error"] == capsys.readouterr().err.strip()


def test_hostile_requests_create_nothing(app, tmp_path):
    url, runs = app
    marker = tmp_path / "marker_upload"
    name = "../" * 12 + str(marker).lstrip("/")
    status, _ = call(url, "/api/prompt_file", {"name": name, "text": "person walks\n"})
    assert status == 200 and not marker.exists()
    elsewhere = tmp_path / "marker_output"
    status, reply = call(url, "/api/generate", {"prompts": ["walk"], "steps": "2", "output_dir": str(elsewhere)})
    assert status == 400 and "unknown field" in reply["error"]
    status, reply = call(url, "/api/generate", {"prompts": ["walk", "--output_dir=" + str(elsewhere)], "steps": "1",
                                                "seconds": ["1", "1"]})
    assert status == 200
    assert wait(url, reply["id"])["state"] == "done" and not elsewhere.exists()
    assert (runs / reply["id"] / "results.npy").is_file()
    assert call(url, "/files/" + reply["id"] + "/..%2f..%2fmarker")[0] == 404
    assert call(url, "/files/" + "0" * 32 + "/results.npy")[0] == 404
    assert call(url, "/", headers={"Host": "attacker.example:80"})[0] == 403
    status, body = call(url, "/")
    assert status == 200 and b"http://" not in body and b"https://" not in body  # nothing fetched from elsewhere


def test_server_cli_bad_settings_are_one_line(capsys, tmp_path):
    assert server.main(["--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port must be between 0 and 65535, got 70000"
    assert server.main(["--model_path", str(tmp_path / "none.pt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --model_path {tmp_path / 'none.pt'} does not exist"
    assert server.main(["--port", "x"]) == 2
    assert "invalid int value: 'x'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ a real browser

def _browser():
    """Headless Debian Chromium through Selenium, or a skip."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no Chromium / chromedriver installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"mc_app_chromium_{os.getpid()}_{time.time_ns()}"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
                 "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts), profile


def _screenshot(driver, path: Path) -> None:
    """A screenshot as a small PNG (a 64-colour palette where Pillow is there)."""
    driver.save_screenshot(str(path))
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def test_browser_timeline_generate_watch_and_a_bad_input(tmp_path):
    """Load the page, fill 3 prompts, generate 5 steps on the default model, check the video's length."""
    driver, profile = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("MOTION_COLLAGE_APP_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    httpd, url = serve(jobs.ServerSettings(tmp_path / "runs", device="cpu"))
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        for _ in range(2):
            driver.find_element(By.ID, "add-row").click()
        rows = driver.find_elements(By.CSS_SELECTOR, "#rows .segment")
        for row, (text, secs) in zip(rows, [("a person walks forward", "2"), ("a person runs forward", "1.5"),
                                            ("a person waves with the right hand", "2.5")]):
            row.find_element(By.CLASS_NAME, "prompt").clear()
            row.find_element(By.CLASS_NAME, "prompt").send_keys(text)
            row.find_element(By.CLASS_NAME, "seconds").clear()
            row.find_element(By.CLASS_NAME, "seconds").send_keys(secs)
        driver.find_element(By.ID, "steps").clear()
        driver.find_element(By.ID, "steps").send_keys("5")
        driver.find_element(By.ID, "num-samples").clear()
        driver.find_element(By.ID, "num-samples").send_keys("2")
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, "video.result-video"))
        durations = WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "const v = [...document.querySelectorAll('video.result-video')];"
            "return v.every((x) => x.readyState >= 1 && isFinite(x.duration)) ? v.map((x) => x.duration) : null;"))
        assert durations == [pytest.approx(6.0, abs=0.1)] * 2  # 2 + 1.5 + 2.5 s, two samples side by side
        assert len(driver.find_elements(By.CSS_SELECTOR, "#segments li")) == 3
        time.sleep(1.5)
        _screenshot(driver, shots / "app_result.png")
        driver.find_element(By.ID, "steps").clear()
        driver.find_element(By.ID, "steps").send_keys("0")
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "message").text)
        message = driver.find_element(By.ID, "message").text
        assert message == "error: --steps must be between 1 and 1000 (the trained timesteps), got 0"
        _screenshot(driver, shots / "app_bad_input.png")
        scene = tmp_path / "scene.txt"
        scene.write_text("a person walks forward # 3\na person sits down\n")
        driver.find_element(By.ID, "prompt-file").send_keys(str(scene))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "message").text.startswith("loaded"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#rows .segment")
        assert [(r.find_element(By.CLASS_NAME, "prompt").get_attribute("value"),
                 r.find_element(By.CLASS_NAME, "seconds").get_attribute("value")) for r in rows] == [
            ("a person walks forward", "3"), ("a person sits down", "4")]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        httpd.shutdown()
        httpd.server_close()
