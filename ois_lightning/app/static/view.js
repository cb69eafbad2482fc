// The image's view for `ois app`: zoom and pan of the canvas layers, mask opacity, and the map panels with
// their colour legends. Loaded before app.js; everything hangs off window.oisView.
"use strict";
const oisView = window.oisView = { scale: 1, tx: 0, ty: 0, maxScale: 16, panned: false };

function applyView() {
  const v = oisView, stage = document.getElementById("stage");
  const w = stage.clientWidth, h = stage.clientHeight;
  v.scale = Math.min(Math.max(v.scale, 1), v.maxScale);
  v.tx = Math.min(0, Math.max(w * (1 - v.scale), v.tx));  // the image always covers the stage
  v.ty = Math.min(0, Math.max(h * (1 - v.scale), v.ty));
  document.getElementById("layers").style.transform = `translate(${v.tx}px, ${v.ty}px) scale(${v.scale})`;
}

/** Zoom by `factor` keeping the stage point (cx, cy) (CSS px from the stage's corner) under the cursor. */
function zoomAt(factor, cx, cy) {
  const v = oisView, old = v.scale;
  v.scale = Math.min(Math.max(old * factor, 1), v.maxScale);
  v.tx = cx - (cx - v.tx) * v.scale / old;
  v.ty = cy - (cy - v.ty) * v.scale / old;
  applyView();
}

function zoomCentre(factor) {
  const stage = document.getElementById("stage");
  zoomAt(factor, stage.clientWidth / 2, stage.clientHeight / 2);
}

function resetView() {
  Object.assign(oisView, { scale: 1, tx: 0, ty: 0 });
  applyView();
}

function setOpacity(value) {
  for (const id of ["mask", "objects"]) document.getElementById(id).style.opacity = value;
}

/** Pan with Shift + left drag or a middle drag; returns true when the press started a pan (not a click). */
function startPan(event) {
  if (!(event.button === 1 || (event.button === 0 && event.shiftKey))) return false;
  event.preventDefault();
  const stage = document.getElementById("stage"), v = oisView;
  const x0 = event.clientX, y0 = event.clientY, tx0 = v.tx, ty0 = v.ty;
  stage.classList.add("panning");
  const move = (e) => {
    v.tx = tx0 + e.clientX - x0;
    v.ty = ty0 + e.clientY - y0;
    applyView();
  };
  const up = () => {
    stage.classList.remove("panning");
    window.removeEventListener("mousemove", move);
    window.removeEventListener("mouseup", up);
  };
  window.addEventListener("mousemove", move);
  window.addEventListener("mouseup", up);
  return true;
}

document.getElementById("stage").addEventListener("wheel", (e) => {
  e.preventDefault();
  const rect = document.getElementById("stage").getBoundingClientRect();
  zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - rect.left, e.clientY - rect.top);
}, { passive: false });

/** A colour bar for one map: the colormap's stops from the server, the map's own min and max at its ends. */
function legend(map, stops) {
  const box = document.createElement("div"), bar = document.createElement("span");
  const lo = document.createElement("span"), hi = document.createElement("span");
  box.className = "legend";
  bar.className = "bar";
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  lo.textContent = map.lo.toFixed(2);
  hi.textContent = map.hi.toFixed(2);
  box.title = `${map.cmap}: colours span this map's own range`;
  box.append(lo, bar, hi);
  return box;
}

/** One map of the side panels: the image, its caption and its legend. */
function mapFigure(map, legends) {
  const fig = document.createElement("figure"), img = document.createElement("img");
  const cap = document.createElement("figcaption");
  img.src = map.png;
  img.alt = map.label;
  cap.textContent = map.label;
  fig.append(img, legend(map, legends[map.cmap]), cap);
  return fig;
}

function renderMaps(state) {
  const depth = document.getElementById("depth"), order = document.getElementById("order");
  depth.replaceChildren(...(state.depth ? [mapFigure(state.depth, state.legends)] : []));
  order.replaceChildren(...state.order.map((m) => mapFigure(m, state.legends)));
}

/** The checkpoint line: file, input size, protocol, the checkpoint's threshold. */
function renderInfo(model) {
  const p = model.protocol, parts = [`checkpoint ${model.checkpoint || "(in memory)"}`,
    `input ${model.input_size}×${model.input_size}`];
  if (p.resize) {
    parts.push(`protocol: resize ${p.resize}, zoom-in ${p.zoom_in ? `on (${p.zoom_in_size} px)` : "off"}, ` +
               `flip ${p.flip ? "on" : "off"}, ${p.precision}`);
  }
  parts.push(`threshold ${model.threshold.toFixed(2)} (checkpoint)`);
  document.getElementById("info").textContent = parts.join(" · ");
}
