// `ois app`'s page: requests to the JSON API (server.py), run one at a time from a queue, and the canvas layers.
"use strict";
const $ = (id) => document.getElementById(id);
const ois = window.ois = { state: null, busy: false, negative: false, renders: 0, queue: [], pendingClicks: [] };

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, body, type = "application/json") {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": type },
                                           body: type === "application/json" ? JSON.stringify(body) : body };
  const response = await fetch(path, init);
  if (!response.ok) throw new Error((await response.text()).trim());
  return response.json();
}

function loadImage(src) {
  const img = new Image();
  img.src = src;
  return img.decode().then(() => img);
}

function drawClicks(clicks) {
  const canvas = $("clicks"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const r = Math.max(4, Math.round(Math.min(canvas.width, canvas.height) / 80));
  const all = [...clicks.map((c) => ({ ...c, queued: false })), ...ois.pendingClicks.map((c) => ({ ...c, queued: true }))];
  for (const c of all) {
    ctx.beginPath();
    ctx.arc(c.x + 0.5, c.y + 0.5, r, 0, 2 * Math.PI);
    ctx.fillStyle = c.positive ? "#2e7d32" : "#c62828";
    ctx.strokeStyle = "#fff";
    if (c.queued) {  // a click waiting for its turn: a ring, filled once the model has answered
      [ctx.strokeStyle, ctx.lineWidth] = [ctx.fillStyle, 3];
    } else {
      ctx.fill();
      ctx.lineWidth = 2;
    }
    ctx.stroke();
  }
}

async function drawLayer(id, src) {
  const ctx = $(id).getContext("2d");
  const img = src ? await loadImage(src) : null;
  ctx.clearRect(0, 0, $(id).width, $(id).height);
  if (img) ctx.drawImage(img, 0, 0);
}

async function render(state, timing = "") {
  await drawLayer("mask", state.overlay);
  await drawLayer("objects", state.objects_overlay);
  drawClicks(state.clicks);
  renderMaps(state);
  renderInfo(state.model);
  $("threshold").value = state.threshold;
  $("thresholdValue").textContent = state.threshold.toFixed(2);
  const n = state.clicks.length, done = state.objects ? ` (${state.objects} finished object${state.objects > 1 ? "s" : ""})` : "";
  const loaded = !n && state.overlay ? ": loaded mask, click to refine it" : ": click on the object";
  setStatus(n ? `${state.name}: ${n} click${n > 1 ? "s" : ""}, ${state.mask_pixels} mask px` + timing + done
              : (state.name ? state.name + loaded + done : "no image"));
  ois.state = state;
  ois.renders += 1;
}

function showPending() {
  const n = ois.queue.length;
  $("pending").textContent = n ? `working… ${n} request${n > 1 ? "s" : ""} queued` : "";
}

/** Queue `action` (a function returning the new state); requests run one at a time in order, so a click made
 *  while the model runs waits for its turn instead of being dropped. `key`: a queued action with the same key
 *  is replaced (the threshold slider sends only its latest value). */
function run(action, { timing = false, key = null, click = null } = {}) {
  const queued = key && ois.queue.find((q, i) => q.key === key && i > 0);  // queue[0] is running
  if (queued) queued.action = action;
  else ois.queue.push({ action, timing, key, click });
  if (click) ois.pendingClicks.push(click);
  ois.busy = true;
  showPending();
  if (ois.queue.length === 1 && !ois.running) drain();
  else drawClicks(ois.state ? ois.state.clicks : []);
}

async function drain() {
  ois.running = true;
  while (ois.queue.length) {
    const item = ois.queue[0], start = performance.now();
    try {
      const state = await item.action();
      const total = performance.now() - start;
      if (item.click) ois.pendingClicks.shift();
      await render(state, item.timing && state.latency_ms !== null
        ? `, model ${state.latency_ms.toFixed(0)} ms, round trip ${total.toFixed(0)} ms` : "");
    } catch (err) {
      if (item.click) ois.pendingClicks.shift();
      setStatus(err.message, true);
    }
    ois.queue.shift();
    showPending();
  }
  ois.running = false;
  ois.busy = false;
}

async function showImage(state) {
  const img = await loadImage("/api/image?v=" + Date.now());
  for (const id of ["image", "objects", "mask", "clicks"]) {
    $(id).width = img.naturalWidth;
    $(id).height = img.naturalHeight;
  }
  $("image").getContext("2d").drawImage(img, 0, 0);
  resetView();
  return state;
}

function clickAt(event, positive) {
  if (!ois.state || !ois.state.size) return;
  const canvas = $("clicks"), rect = canvas.getBoundingClientRect();  // zoom and pan included
  const x = Math.floor((event.clientX - rect.left) * canvas.width / rect.width);
  const y = Math.floor((event.clientY - rect.top) * canvas.height / rect.height);
  const name = ois.state.name, click = { y, x, positive };
  run(() => {
    if (ois.state.name !== name) throw new Error(`click at (${y}, ${x}) not sent: ${name} is no longer open`);
    return api("/api/click", click);
  }, { timing: true, click });
}

/** Queue sending the file chosen in `input` to `path`, then `then` on the state. */
function sendFile(path, input, then = (state) => state) {
  const file = input.files[0];
  input.value = "";  // choosing the same file again fires change again
  if (file) run(() => api(path, file, file.type || "image/*").then(then));
}

$("clicks").addEventListener("contextmenu", (e) => e.preventDefault());
$("clicks").addEventListener("mousedown", (e) => {
  if (startPan(e)) return;
  if (e.button === 0) clickAt(e, !ois.negative);
  else if (e.button === 2) clickAt(e, false);
});
$("mode").addEventListener("click", () => {
  ois.negative = !ois.negative;
  $("mode").textContent = "left click: " + (ois.negative ? "negative" : "positive");
  $("mode").className = ois.negative ? "negative" : "";
});
$("undo").addEventListener("click", () => run(() => api("/api/undo", {})));
$("reset").addEventListener("click", () => run(() => api("/api/reset", {})));
$("finish").addEventListener("click", () => run(() => api("/api/finish", {})));
$("threshold").addEventListener("input", (e) => {
  $("thresholdValue").textContent = Number(e.target.value).toFixed(2);
  run(() => api("/api/threshold", { value: Number(e.target.value) }), { key: "threshold" });
});
$("opacity").addEventListener("input", (e) => setOpacity(e.target.value));
$("zoomIn").addEventListener("click", () => zoomCentre(1.5));
$("zoomOut").addEventListener("click", () => zoomCentre(1 / 1.5));
$("zoomFit").addEventListener("click", resetView);
$("images").addEventListener("change", (e) => {
  if (e.target.value) run(() => api("/api/open", { name: e.target.value }).then(showImage));
});
$("upload").addEventListener("change", (e) => sendFile("/api/upload", e.target, showImage));
$("maskfile").addEventListener("change", (e) => sendFile("/api/mask", e.target));
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || (e.key === " " && e.target.tagName === "BUTTON")) {
    return;  // typing in a field, or Space pressing the focused button
  }
  const button = { z: "undo", r: "reset", n: "mode", " ": "finish", "+": "zoomIn", "=": "zoomIn", "-": "zoomOut",
                   0: "zoomFit" }[e.key.toLowerCase()];
  if (button) {
    e.preventDefault();
    $(button).click();
  }
});

run(async () => {
  const { images } = await api("/api/images");
  for (const name of images) $("images").add(new Option(name, name));
  $("images").hidden = images.length === 0;
  const state = await api("/api/state");
  return state.size ? showImage(state) : state;
});
