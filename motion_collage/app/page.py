"""The app's one page: HTML, CSS and script, served from this module (no external resources)."""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>motion-collage</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header><h1>motion-collage</h1><span>compose a timeline of prompts; generate one long (or looped) motion</span></header>
<main>
<section id="timeline-panel">
  <h2>Timeline</h2>
  <div class="row head"><span>prompt</span><span>seconds</span><span></span></div>
  <div id="rows"></div>
  <div class="buttons">
    <button type="button" id="add-row">+ add segment</button>
    <label class="file">load a prompt file <input type="file" id="prompt-file" accept=".txt,text/plain"></label>
  </div>
  <h2>Settings</h2>
  <div class="settings">
    <label><input type="checkbox" id="loop"> loop (seamless cycle)</label>
    <label>overlap <input id="overlap" size="6" title="seconds ('1.0', '1s') or frames ('20f')"></label>
    <label>method <select id="method"></select></label>
    <label>sampler <select id="sampler"></select></label>
    <label>steps <input id="steps" size="5" inputmode="numeric"></label>
    <label>guidance <input id="guidance" size="5" inputmode="decimal"></label>
    <label>seed <input id="seed" size="6" inputmode="numeric"></label>
    <label>samples <input id="num-samples" size="3" inputmode="numeric"></label>
  </div>
  <div class="buttons">
    <button type="button" id="generate" class="primary">Generate</button>
    <button type="button" id="cancel" disabled>Cancel</button>
  </div>
  <progress id="progress" max="1" value="0"></progress>
  <div id="status"></div>
  <div id="message" role="alert"></div>
</section>
<section id="results-panel">
  <h2>Result</h2>
  <div id="videos"></div>
  <ol id="segments"></ol>
  <div id="downloads"></div>
</section>
</main>
</body>
</html>
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
header { background: #2d3e50; color: #fff; padding: 8px 16px; display: flex; gap: 16px; align-items: baseline; }
header h1 { font-size: 20px; margin: 0; }
main { display: grid; grid-template-columns: minmax(460px, 600px) minmax(320px, 1fr); gap: 16px; padding: 12px 16px;
       align-items: start; }
@media (max-width: 900px) { main { grid-template-columns: 1fr; } }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; }
h2 { font-size: 15px; margin: 8px 0; }
.row { display: grid; grid-template-columns: 1fr 70px 96px; gap: 6px; margin: 3px 0; }
.row.head { font-size: 12px; color: #666; }
.row input { width: 100%; box-sizing: border-box; }
.row .tools button { padding: 1px 6px; }
.buttons { margin: 8px 0; display: flex; gap: 8px; align-items: center; }
.settings { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 14px; }
button.primary { background: #2d6cdf; color: #fff; border: 0; padding: 6px 16px; border-radius: 4px; }
button.primary:disabled { background: #9db5e3; }
label.file input { font-size: 12px; }
progress { width: 100%; height: 14px; }
#status { font-size: 13px; color: #555; min-height: 1.2em; }
#message { font-size: 14px; min-height: 1.2em; font-family: monospace; white-space: pre-wrap; }
#message.error { color: #b00020; }
#videos { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; }
figure video { width: 280px; background: #000; display: block; }
figcaption { font-size: 12px; color: #555; }
#segments { font-size: 13px; padding-left: 20px; }
#segments li.now { font-weight: bold; color: #2d6cdf; }
#downloads { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 13px; }
"""

JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let config = null, current = null, timer = null;

function addRow(prompt, seconds) {
  const row = document.createElement("div");
  row.className = "row segment";
  row.innerHTML = '<input class="prompt" placeholder="a person walks forward">' +
    '<input class="seconds" inputmode="decimal">' +
    '<span class="tools"><button type="button" class="up" title="move up">&#8593;</button>' +
    '<button type="button" class="down" title="move down">&#8595;</button>' +
    '<button type="button" class="remove" title="remove">&#10005;</button></span>';
  row.querySelector(".prompt").value = prompt || "";
  row.querySelector(".seconds").value = seconds === undefined || seconds === null ? config.defaults.seconds : seconds;
  row.querySelector(".up").onclick = () => { if (row.previousElementSibling) row.parentNode.insertBefore(row, row.previousElementSibling); };
  row.querySelector(".down").onclick = () => { if (row.nextElementSibling) row.parentNode.insertBefore(row.nextElementSibling, row); };
  row.querySelector(".remove").onclick = () => row.remove();
  $("rows").appendChild(row);
  return row;
}

function setMessage(text, isError) {
  $("message").textContent = text || "";
  $("message").className = isError ? "error" : "";
}

function fillSelect(select, names, chosen) {
  select.innerHTML = "";
  for (const name of names) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = name;
    select.appendChild(opt);
  }
  select.value = chosen;
}

function form() {
  const rows = [...document.querySelectorAll("#rows .segment")];
  return {
    prompts: rows.map((r) => r.querySelector(".prompt").value),
    seconds: rows.map((r) => r.querySelector(".seconds").value),
    loop: $("loop").checked, overlap: $("overlap").value, method: $("method").value,
    sampler: $("sampler").value, steps: $("steps").value, guidance_param: $("guidance").value,
    seed: $("seed").value, num_samples: $("num-samples").value,
  };
}

async function post(url, body) {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify(body) });
  return [response.ok, await response.json()];
}

function busy(on) {
  $("generate").disabled = on;
  $("cancel").disabled = !on;
}

async function generate() {
  setMessage("");
  const [ok, reply] = await post("/api/generate", form());
  if (!ok) { $("status").textContent = ""; $("progress").value = 0; setMessage(reply.error, true); return; }
  current = reply.id;
  $("videos").innerHTML = $("segments").innerHTML = $("downloads").innerHTML = "";
  busy(true);
  show(reply);
  timer = setInterval(poll, 400);
}

async function poll() {
  if (!current) return;
  const response = await fetch("/api/runs/" + current);
  const run = await response.json();
  show(run);
  if (!["queued", "running"].includes(run.state)) {
    clearInterval(timer);
    busy(false);
    if (run.state === "done") showResult(run);
    else if (run.state === "failed") setMessage(run.error, true);
    else setMessage(run.message, false);
    current = null;
  }
}

function show(run) {
  $("progress").max = Math.max(1, run.steps);
  $("progress").value = run.state === "done" ? run.steps : run.step;
  $("status").textContent = run.state + ": " + run.message;
}

function showResult(run) {
  const base = "/files/" + run.id + "/";
  run.videos.forEach((name, i) => {
    const fig = document.createElement("figure");
    const video = document.createElement("video");
    video.src = base + name; video.controls = true; video.loop = true; video.muted = true; video.autoplay = true;
    video.className = "result-video";
    video.ontimeupdate = () => highlight(video.currentTime, run.segments);
    const cap = document.createElement("figcaption");
    cap.textContent = "sample " + (i + 1);
    fig.append(video, cap);
    $("videos").appendChild(fig);
  });
  for (const seg of run.segments) {
    const li = document.createElement("li");
    li.textContent = seg.text + "  (" + seg.start_s.toFixed(1) + "-" + seg.end_s.toFixed(1) + " s)";
    $("segments").appendChild(li);
  }
  for (const name of run.files) {
    const a = document.createElement("a");
    a.href = base + name; a.textContent = name; a.download = name;
    $("downloads").appendChild(a);
  }
}

function highlight(t, segments) {
  [...$("segments").children].forEach((li, i) => {
    li.className = t >= segments[i].start_s && t < segments[i].end_s ? "now" : "";
  });
}

async function loadFile() {
  const file = $("prompt-file").files[0];
  if (!file) return;
  const [ok, reply] = await post("/api/prompt_file", { name: file.name, text: await file.text() });
  $("prompt-file").value = "";
  if (!ok) { setMessage(reply.error, true); return; }
  $("rows").innerHTML = "";
  for (const row of reply.rows) addRow(row.prompt, row.seconds);
  setMessage("loaded " + reply.rows.length + " segments from " + file.name);
}

async function start() {
  config = await (await fetch("/api/config")).json();
  const d = config.defaults;
  fillSelect($("method"), Object.keys(config.methods), d.method);
  fillSelect($("sampler"), config.samplers, d.sampler);
  $("steps").value = d.steps; $("guidance").value = d.guidance_param; $("seed").value = d.seed;
  $("num-samples").value = d.num_samples; $("overlap").value = d.overlap;
  addRow("a person walks forward", d.seconds);
  $("add-row").onclick = () => addRow("", d.seconds).querySelector(".prompt").focus();
  $("generate").onclick = generate;
  $("cancel").onclick = () => current && post("/api/runs/" + current + "/cancel", {});
  $("prompt-file").onchange = loadFile;
  document.body.dataset.ready = "1";
}

start();
"""
