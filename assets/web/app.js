// leuko web app: uploads photos to /api/classify (one request per photo, a few
// at a time, so results appear as they come), draws the boxes on a canvas,
// lists each cell with its crop, probabilities and review flags, and keeps the
// differential count of everything on the page.
"use strict";

// The differential's rows: the standard types in clinical order, then the model's own classes
// (the server's differential order, filled from /api/health).
let CLINICAL_ORDER = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"];
// Filled from /api/health: the report's colours (one palette for page and report).
const COLORS = {};
const REASONS = {
  low_confidence: "low confidence",
  cut_by_border: "cut off by the photo border",
  unusual_size: "unusual size",
  unfamiliar_photo: "photo unlike the training photos",
  no_leukocyte_found: "no leukocyte found",
};
const PARALLEL_UPLOADS = 3;

const state = {
  classes: [],          // model classes (lower case), probability order
  maxBody: 20 * 1024 * 1024,
  photos: [],           // successful results: {file, cells}
  counts: {},           // the server's differential, summed over the answers: class -> cells
  cells: 0,
  flagged: 0,
  counted: 0,           // photos in the summed differential
  unfamiliar: 0,        // of those, unlike the model's training photos
  warnShare: 0.2,       // from /api/health
  advice: "",
  failed: 0,
  queued: 0,
  done: 0,
};

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const cap = (s) => { const t = s.replace(/_/g, " "); return t.charAt(0).toUpperCase() + t.slice(1); };
const pct = (p) => (100 * p).toFixed(1) + "%";

async function loadHealth() {
  try {
    const r = await fetch("/api/health");
    const h = await r.json();
    state.classes = (h.classes || []).map((k) => k.toLowerCase());
    for (const [k, c] of Object.entries(h.colours || {})) COLORS[k.toLowerCase()] = c;
    const own = state.classes.filter((k) => !CLINICAL_ORDER.includes(k)).sort();
    CLINICAL_ORDER = CLINICAL_ORDER.concat(own);
    if (h.max_body_bytes) state.maxBody = h.max_body_bytes;
    if (typeof h.unfamiliar_warning_share === "number") state.warnShare = h.unfamiliar_warning_share;
    state.advice = h.unfamiliar_advice || "";
    const info = $("model-info");
    info.textContent = "";
    info.append("Model: ", el("b", null, h.model), document.createElement("br"),
      `${state.classes.map(cap).join(", ")} · review below ${pct(h.review_threshold)} confidence`);
  } catch (e) {
    $("model-info").textContent = "server not reachable";
  }
  renderDifferential();
}

function setStatus() {
  const busy = state.done < state.queued;
  document.body.dataset.state = busy ? "busy" : (state.queued ? "done" : "idle");
  let s;
  if (busy) s = `Classifying… ${state.done} of ${state.queued} photos done`;
  else if (state.queued) {
    s = `${state.photos.length} photo${state.photos.length === 1 ? "" : "s"} classified`;
    if (state.failed) s += `, ${state.failed} could not be read`;
  } else s = "No photos yet.";
  $("status").textContent = s;
  $("clear").disabled = busy || !state.queued;
}

function renderDifferential() {
  // Counts come from the server's differential of each answer (one function computes it for
  // the API, `leuko report` and this page); the page only adds them up.
  const total = state.cells;
  const body = $("differential").tBodies[0];
  body.textContent = "";
  for (const k of CLINICAL_ORDER) {
    const known = state.classes.length === 0 || state.classes.includes(k);
    const n = state.counts[k] || 0;
    const share = total ? n / total : 0;
    const tr = el("tr", known ? "" : "absent");
    tr.dataset.class = k;
    const name = el("td");
    const sw = el("span", "swatch");
    sw.style.background = known ? COLORS[k] : "#c9ced8";
    name.append(sw, cap(k));
    if (!known) name.title = "this model does not classify " + k + "s";
    const bar = el("div", "hbar");
    const fill = el("span");
    fill.style.width = (100 * share).toFixed(1) + "%";
    fill.style.background = COLORS[k];
    bar.append(fill);
    const barTd = el("td");
    barTd.append(bar);
    tr.append(name, el("td", "num", known ? String(n) : "—"),
      el("td", "num", known ? (total ? (100 * share).toFixed(1) : "0.0") : "—"), barTd);
    body.append(tr);
  }
  const photos = state.photos.length;
  $("diff-total").textContent = `${total} cell${total === 1 ? "" : "s"} in ${photos} photo${photos === 1 ? "" : "s"}`;
  const flagged = state.flagged;
  const absent = CLINICAL_ORDER.filter((k) => state.classes.length && !state.classes.includes(k));
  let note = total ? `${flagged} of ${total} cells flagged for review.` : "";
  if (absent.length) note += (note ? " " : "") + `${absent.map(cap).join(", ")}: not classified by this model.`;
  $("diff-flagged").textContent = note;
  // The batch warning of `leuko predict` and the report, for the photos on the page.
  const warn = $("unfamiliar-warning");
  const u = state.unfamiliar, m = state.counted;
  warn.hidden = !(m > 0 && u > state.warnShare * m);
  warn.textContent = warn.hidden ? "" :
    `${u} of ${m} photos (${(100 * u / m).toFixed(0)}%) look unlike the photos this model was trained on ` +
    `(another microscope, camera or stain): ${state.advice}`;
}

function addDifferential(d) {
  state.cells += d.cells;
  state.flagged += d.flagged_for_review;
  state.counted += d.photos;
  state.unfamiliar += d.photos_unfamiliar || 0;
  for (const row of d.counts) {
    const k = String(row["class"]).toLowerCase();
    state.counts[k] = (state.counts[k] || 0) + row.count;
  }
}

// Closed polygons of pixel corners ([[x, y], ...] each).
function strokePolygons(ctx, polygons) {
  ctx.beginPath();
  for (const poly of polygons) {
    poly.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
  }
  ctx.stroke();
}

function drawPhoto(canvas, file, result, highlight) {
  const w = result.width, h = result.height;
  canvas.width = w;
  canvas.height = h;
  // Shown at most at twice its own size: a 120-px crop is not blown up to the page width.
  canvas.style.maxWidth = 2 * w + "px";
  const showLabels = Math.min(w, h) >= 240;
  const ctx = canvas.getContext("2d");
  const paint = (img) => {
    ctx.clearRect(0, 0, w, h);
    if (img) ctx.drawImage(img, 0, 0, w, h);
    else {
      ctx.fillStyle = "#e9ecf2";
      ctx.fillRect(0, 0, w, h);
      ctx.fillStyle = "#667085";
      ctx.font = `${Math.max(12, w / 40)}px sans-serif`;
      ctx.fillText("(this browser cannot show the photo)", 12, 28);
    }
    const lw = Math.max(2, Math.round(Math.min(w, h) / 160));
    const fs = Math.max(12, Math.round(Math.min(w, h) / 26));
    for (const c of result.cells) {
      const color = COLORS[c["class"]] || "#333";
      const hl = highlight === c.cell;
      ctx.lineWidth = hl ? lw * 2 : lw;
      ctx.strokeStyle = color;
      if (c.review) ctx.setLineDash([lw * 4, lw * 2.5]); else ctx.setLineDash([]);
      const b = c.box;
      const o = c.outline || { cell: [], nucleus: [] };
      if (o.cell.length) {
        // The cell's outline in its class colour, the nucleus's thinner in the same colour.
        strokePolygons(ctx, o.cell);
        ctx.setLineDash([]);
        ctx.lineWidth = Math.max(1, (hl ? lw * 2 : lw) / 2);
        strokePolygons(ctx, o.nucleus);
      } else {
        ctx.strokeRect(b.x_min + 0.5, b.y_min + 0.5, b.x_max - b.x_min, b.y_max - b.y_min);
      }
      ctx.setLineDash([]);
      // On a small photo (a single-cell crop) a label would cover the cell: the list below names it.
      if (!showLabels) continue;
      const label = `${c.cell} ${cap(c["class"])} ${Math.round(100 * c.confidence)}%`;
      ctx.font = `600 ${fs}px sans-serif`;
      const tw = ctx.measureText(label).width + 10;
      const ly = b.y_min - fs - 6 >= 0 ? b.y_min - fs - 6 : b.y_max;
      const lx = Math.min(Math.max(0, b.x_min), Math.max(0, w - tw));
      ctx.fillStyle = color;
      ctx.fillRect(lx, ly, tw, fs + 6);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, lx + 5, ly + fs);
    }
  };
  if (canvas._img !== undefined) { paint(canvas._img); return; }
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => { canvas._img = img; paint(img); };
  img.onerror = () => { canvas._img = null; paint(null); URL.revokeObjectURL(url); };
  img.src = url;
  paint(null);
}

function cellCard(c, onHover) {
  const card = el("div", "cell" + (c.review ? " review" : ""));
  card.dataset.cell = c.cell;
  const img = el("img");
  img.alt = `cell ${c.cell} crop`;
  if (c.crop_png_base64) img.src = "data:image/png;base64," + c.crop_png_base64;
  const info = el("div");
  const top = el("div", "cell-top");
  const name = el("div");
  const cls = el("span", "cell-class", cap(c["class"]));
  cls.style.color = COLORS[c["class"]] || "inherit";
  name.append(el("span", "cell-no", "#" + c.cell), cls);
  top.append(name, el("span", "conf", pct(c.confidence)));
  const probs = el("div", "probs");
  const keys = CLINICAL_ORDER.filter((k) => k in c.probabilities);
  for (const k of keys) {
    const p = c.probabilities[k];
    const bar = el("div", "hbar");
    const fill = el("span");
    fill.style.width = (100 * p).toFixed(1) + "%";
    fill.style.background = COLORS[k];
    bar.append(fill);
    probs.append(el("span", "lbl", cap(k)), bar, el("span", "val", pct(p)));
  }
  const badges = el("div", "badges");
  if (c.review) {
    for (const r of c.review_reasons) badges.append(el("span", "badge", "Review: " + (REASONS[r] || r)));
  } else {
    badges.append(el("span", "badge ok", "No review flag"));
  }
  const m = c.morphometrics;
  if (m) {
    const um = c.morphometrics_um;
    const area = um ? `${um.cell_area_um2.toFixed(0)} µm² (⌀ ${um.cell_diameter_um.toFixed(1)} µm)`
      : `${m.cell_area_px} px`;
    const lobes = m.nucleus_lobes === 1 ? "1 nucleus lobe" : `${m.nucleus_lobes} nucleus lobes`;
    info.append(top, probs, el("div", "muted small morpho",
      `Area ${area} · N:C ${m.nc_ratio.toFixed(2)} · ${lobes} · circularity ${m.circularity.toFixed(2)}`), badges);
  } else {
    info.append(top, probs, badges);
  }
  card.append(img, info);
  card.addEventListener("mouseenter", () => onHover(c.cell));
  card.addEventListener("mouseleave", () => onHover(null));
  return card;
}

function renderResult(slot, file, result) {
  slot.textContent = "";
  if (!result.ok) {
    slot.className = "card error-card photo-card";
    const head = el("div", "photo-head");
    head.append(el("h3", null, result.file || file.name), el("span", "muted small", "not classified"));
    slot.append(head, el("p", "error-msg", result.error || "unknown error"));
    return;
  }
  slot.className = "card photo photo-card";
  const head = el("div", "photo-head");
  const n = result.cells.length;
  const flagged = result.cells.filter((c) => c.review).length;
  head.append(el("h3", null, result.file),
    el("span", "muted small", `${result.width}×${result.height} px · ${n} leukocyte${n === 1 ? "" : "s"}` +
      (flagged ? ` · ${flagged} flagged` : "")));
  for (const r of result.review_reasons || []) head.append(el("span", "badge", "Review: " + (REASONS[r] || r)));
  const fig = el("div", "figure");
  const canvas = el("canvas");
  fig.append(canvas);
  const list = el("div", "cells");
  const hover = (cell) => {
    drawPhoto(canvas, file, result, cell);
    for (const e of list.children) e.classList.toggle("hl", String(cell) === e.dataset.cell);
  };
  if (n === 0) list.append(el("p", "none", "No leukocyte found in this photo."));
  for (const c of result.cells) list.append(cellCard(c, hover));
  slot.append(head, fig, list);
  drawPhoto(canvas, file, result, null);
}

async function classifyFile(file, slot) {
  let result;
  if (file.size > state.maxBody) {
    result = { file: file.name, ok: false, error: `file larger than the server's limit of ${(state.maxBody / 1048576).toFixed(0)} MB` };
  } else {
    const form = new FormData();
    form.append("files", file, file.name);
    try {
      const r = await fetch("/api/classify", { method: "POST", body: form });
      let body = null;
      try { body = await r.json(); } catch (_) { /* not JSON */ }
      if (body && Array.isArray(body.files) && body.files.length) {
        result = body.files[0];
        if (result.ok && body.differential) addDifferential(body.differential);
      }
      else result = { file: file.name, ok: false, error: (body && body.error) || `server answered ${r.status}` };
    } catch (e) {
      result = { file: file.name, ok: false, error: "could not reach the server: " + e.message };
    }
  }
  if (result.ok) {
    // The API spells classes as the data set does (NEUTROPHIL); the page uses lower case.
    for (const c of result.cells) {
      c["class"] = String(c["class"]).toLowerCase();
      c.probabilities = Object.fromEntries(
        Object.entries(c.probabilities).map(([k, p]) => [k.toLowerCase(), p]));
    }
    state.photos.push(result);
  } else state.failed += 1;
  renderResult(slot, file, result);
  state.done += 1;
  renderDifferential();
  setStatus();
}

function addFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  const results = $("results");
  const jobs = files.map((file) => {
    const slot = el("div", "card photo-card");
    const head = el("div", "photo-head");
    head.append(el("h3", null, file.name), el("span", "pending", "waiting…"));
    slot.append(head);
    results.append(slot);
    return () => classifyFile(file, slot);
  });
  state.queued += files.length;
  setStatus();
  let next = 0;
  const worker = async () => { while (next < jobs.length) await jobs[next++](); };
  for (let i = 0; i < Math.min(PARALLEL_UPLOADS, jobs.length); i++) worker();
}

function setup() {
  const dz = $("dropzone"), input = $("file-input");
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  dz.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  ["dragenter", "dragover"].forEach((t) => dz.addEventListener(t, (e) => { e.preventDefault(); dz.classList.add("over"); }));
  ["dragleave", "dragend"].forEach((t) => dz.addEventListener(t, () => dz.classList.remove("over")));
  dz.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation();
    dz.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files) addFiles(e.dataTransfer.files);
  });
  // A photo dropped beside the zone should not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer) addFiles(e.dataTransfer.files); });
  $("clear").addEventListener("click", () => {
    state.photos = []; state.failed = 0; state.queued = 0; state.done = 0;
    state.counts = {}; state.cells = 0; state.flagged = 0; state.counted = 0; state.unfamiliar = 0;
    $("results").textContent = "";
    renderDifferential();
    setStatus();
  });
  loadHealth();
  setStatus();
}

setup();
