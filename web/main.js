// The benchmark page: reads the sweep from the URL (or the form), opens WebGPU through the wasm
// engine, fills the correctness table, then measures one row at a time so the table and the
// charts grow as results come in. `document.body.dataset.state` goes loading → checking →
// benchmarking → done (or error); `window.benchReport` holds the finished report, which is what
// the Download button saves.
import init, { start } from "./pkg/wgpu_attention_web.js";

const DEFAULTS = {
  lengths: "128,256,512,1024",
  b: "1",
  heads: "8",
  d: "64",
  kernels: "fused,staged,decode",
  designs: "all",
  dtype: "f32",
  causal: "0",
  warmup: "2",
  iters: "5",
};

const $ = (id) => document.getElementById(id);
const form = $("settings");
let page = null;
let adapter = null;

function settings() {
  const url = new URLSearchParams(location.search);
  const s = {};
  for (const [key, value] of Object.entries(DEFAULTS)) s[key] = url.get(key) ?? value;
  return s;
}

function fillForm(s) {
  for (const [key, value] of Object.entries(s)) {
    const field = form.elements[key];
    if (field.type === "checkbox") field.checked = value === "1" || value === "true";
    else field.value = value;
  }
}

function readForm() {
  const s = {};
  for (const key of Object.keys(DEFAULTS)) {
    const field = form.elements[key];
    s[key] = field.type === "checkbox" ? (field.checked ? "1" : "0") : field.value.trim();
  }
  return s;
}

function setState(state, text, error = false) {
  document.body.dataset.state = state;
  const status = $("status");
  status.textContent = text;
  if (error) status.dataset.error = "";
  else delete status.dataset.error;
}

const positive = (name, text) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${text}"`);
  return n;
};

// One spec per row: fused (each design asked for), staged, and decode (one query against L keys,
// a quarter as many K/V heads), for every length.
function specs(s) {
  const lengths = s.lengths.split(",").map((l) => positive("length", l.trim()));
  const [b, h, d] = [positive("B", s.b), positive("heads", s.heads), positive("head dim", s.d)];
  const warmup = Math.max(0, Number(s.warmup) | 0);
  const iters = positive("samples", s.iters);
  const kernels = s.kernels.split(",").map((k) => k.trim()).filter(Boolean);
  const designs = s.designs === "all" ? adapter.designs : s.designs.split(",").map((x) => x.trim());
  const causal = s.causal === "1" || s.causal === "true";
  const common = { b, d, dtype: s.dtype, warmup, iters };
  const out = [];
  for (const l of lengths) {
    for (const kernel of kernels) {
      if (kernel === "fused") {
        for (const design of designs) {
          out.push({ ...common, kernel, design: design === "auto" ? null : design, hq: h, hkv: h, lq: l, lk: l, causal });
        }
      } else if (kernel === "staged") {
        out.push({ ...common, kernel, hq: h, hkv: h, lq: l, lk: l, causal });
      } else if (kernel === "decode") {
        out.push({ ...common, kernel, hq: h, hkv: Math.max(1, Math.floor(h / 4)), lq: 1, lk: l, causal: false });
      } else {
        throw new Error(`unknown kernel "${kernel}" (fused, staged or decode)`);
      }
    }
  }
  return out;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "–";
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

const fmt = (x, digits = 3) => (x == null ? null : Number(x).toPrecision(digits));
const shapeText = (p) =>
  p.hq === p.hkv && p.lq === p.lk ? `B=${p.b} H=${p.hq} L=${p.lq} D=${p.dk}` : `B=${p.b} Hq=${p.hq} Hkv=${p.hkv} Lq=${p.lq} Lk=${p.lk} D=${p.dk}`;
const label = (row) => (row.design ? `${row.kernel}/${row.design}` : row.kernel);

function showAdapter(info) {
  const dl = $("adapter");
  dl.textContent = "";
  const a = info.adapter;
  const items = [
    ["adapter", a.name],
    ["backend", `${a.backend} (${a.device_type})`],
    ["driver", `${a.driver} ${a.driver_info}`.trim() || "–"],
    ["timer", info.timer === "gpu-timestamps" ? "GPU timestamp queries (timestamp-query)" : "submission to completion (no timestamp-query)"],
    ["fused designs", info.designs.join(", ")],
    ["features", info.features.join(", ") || "none"],
    ["limits", `buffers ≤ ${(info.max_buffer_size / 2 ** 20).toFixed(0)} MiB, workgroup memory ${info.max_workgroup_storage_size} B`],
  ];
  for (const [k, v] of items) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.dataset.key = k;
    dl.append(dt, dd);
  }
}

function addCheckRow(r) {
  const tr = document.createElement("tr");
  cell(tr, r.case);
  cell(tr, r.shape);
  cell(tr, r.kernel);
  cell(tr, r.design);
  cell(tr, fmt(r.max_abs_err, 2), "num");
  cell(tr, fmt(r.max_rel_err, 2), "num");
  cell(tr, r.ok ? "✔ yes" : "✘ no", r.ok ? "ok" : "bad").dataset.correct = r.ok;
  cell(tr, r.note, "note");
  $("check").tBodies[0].appendChild(tr);
}

function addBenchRow(r) {
  const tr = document.createElement("tr");
  cell(tr, label(r));
  cell(tr, shapeText(r.shape));
  cell(tr, r.causal);
  cell(tr, r.timer);
  cell(tr, fmt(r.median_ms), "num").dataset.value = r.median_ms ?? "";
  cell(tr, fmt(r.gflops), "num").dataset.value = r.gflops ?? "";
  cell(tr, fmt(r.gbps), "num").dataset.value = r.gbps ?? "";
  cell(tr, fmt(r.max_abs_err, 2), "num");
  const ok = r.within_tolerance;
  cell(tr, ok == null ? "–" : ok ? "✔ yes" : "✘ no", ok ? "ok" : "bad").dataset.correct = ok ?? "";
  cell(tr, r.checked);
  cell(tr, r.note, "note");
  $("bench").tBodies[0].appendChild(tr);
}

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

// A line per kernel/design: x = key length (log scale), y = `metric`.
function drawChart(svg, rows, metric, unit) {
  svg.textContent = "";
  const [w, h, left, right, top, bottom] = [520, 300, 52, 130, 14, 38];
  const points = rows.filter((r) => r[metric] != null && r.kernel !== "reference");
  const xs = [...new Set(points.map((r) => r.shape.lk))].sort((a, b) => a - b);
  if (!xs.length) {
    svg.appendChild(el("text", { x: w / 2, y: h / 2, "text-anchor": "middle" }, "no measurements yet"));
    return;
  }
  const ymax = Math.max(...points.map((r) => r[metric])) * 1.1 || 1;
  const lx = (x) => Math.log2(x);
  const [x0, x1] = [lx(xs[0]), lx(xs[xs.length - 1])];
  const px = (x) => left + (x1 === x0 ? 0.5 : (lx(x) - x0) / (x1 - x0)) * (w - left - right);
  const py = (y) => top + (1 - y / ymax) * (h - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const y = (ymax * i) / 4;
    svg.appendChild(el("line", { x1: left, x2: w - right, y1: py(y), y2: py(y), class: "grid" }));
    svg.appendChild(el("text", { x: left - 4, y: py(y) + 4, "text-anchor": "end" }, y.toPrecision(2)));
  }
  for (const x of xs) {
    svg.appendChild(el("text", { x: px(x), y: h - bottom + 14, "text-anchor": "middle" }, x));
  }
  svg.appendChild(el("text", { x: (left + w - right) / 2, y: h - 6, "text-anchor": "middle" }, "key length Lk"));
  svg.appendChild(el("text", { x: 12, y: top + (h - top - bottom) / 2, transform: `rotate(-90 12 ${top + (h - top - bottom) / 2})`, "text-anchor": "middle" }, unit));
  svg.appendChild(el("line", { x1: left, x2: left, y1: top, y2: h - bottom, class: "axis" }));
  svg.appendChild(el("line", { x1: left, x2: w - right, y1: h - bottom, y2: h - bottom, class: "axis" }));
  const series = new Map();
  for (const r of points) {
    const key = label(r);
    if (!series.has(key)) series.set(key, []);
    series.get(key).push(r);
  }
  [...series.entries()].forEach(([key, rs], i) => {
    const color = COLORS[i % COLORS.length];
    rs.sort((a, b) => a.shape.lk - b.shape.lk);
    const d = rs.map((r, j) => `${j ? "L" : "M"}${px(r.shape.lk).toFixed(1)},${py(r[metric]).toFixed(1)}`).join(" ");
    svg.appendChild(el("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    for (const r of rs) svg.appendChild(el("circle", { cx: px(r.shape.lk), cy: py(r[metric]), r: 3, fill: color }));
    const ly = top + 6 + i * 16;
    svg.appendChild(el("line", { x1: w - right + 8, x2: w - right + 24, y1: ly, y2: ly, stroke: color, "stroke-width": 2 }));
    svg.appendChild(el("text", { x: w - right + 28, y: ly + 4 }, key));
  });
}

function redraw(rows) {
  drawChart($("chart-gflops"), rows, "gflops", "GFLOP/s");
  drawChart($("chart-gbps"), rows, "gbps", "GB/s");
}

async function run(s) {
  $("run").disabled = true;
  $("download").disabled = true;
  window.benchReport = null;
  $("check").tBodies[0].textContent = "";
  $("bench").tBodies[0].textContent = "";
  try {
    const list = specs(s);
    setState("checking", "checking every path against the CPU reference…");
    const checks = JSON.parse(await page.check());
    checks.forEach(addCheckRow);
    window.checkRows = checks;
    page.clear();
    const rows = [];
    redraw(rows);
    for (const [i, spec] of list.entries()) {
      setState("benchmarking", `row ${i + 1} of ${list.length}: ${spec.kernel}${spec.design ? "/" + spec.design : ""}, L = ${spec.lk}…`);
      const row = JSON.parse(await page.row(JSON.stringify(spec)));
      rows.push(row);
      addBenchRow(row);
      redraw(rows);
    }
    window.benchReport = JSON.parse(page.report());
    const failed = checks.filter((c) => !c.ok).length + rows.filter((r) => r.within_tolerance === false).length;
    setState("done", `done: ${checks.length} correctness cases, ${rows.length} benchmark rows, ${failed ? failed + " incorrect" : "all correct"}`);
    $("download").disabled = false;
  } catch (e) {
    console.error(e);
    setState("error", `error: ${e.message ?? e}`, true);
  } finally {
    $("run").disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const s = readForm();
  history.replaceState(null, "", "?" + new URLSearchParams(s));
  run(s);
});

$("download").addEventListener("click", () => {
  const blob = new Blob([JSON.stringify(window.benchReport, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "bench.json";
  a.click();
  URL.revokeObjectURL(a.href);
});

// wgpu's WebGPU backend reports no adapter name; the browser's GPUAdapterInfo has one (as far
// as the browser reveals it).
async function describeAdapter(page) {
  try {
    const a = await navigator.gpu.requestAdapter();
    const info = a?.info ?? (await a?.requestAdapterInfo?.());
    if (!info) return;
    const name = info.description || info.device || [info.vendor, info.architecture].filter(Boolean).join(" ");
    const details = ["vendor", "architecture", "device", "description"]
      .filter((k) => info[k])
      .map((k) => `${k}=${info[k]}`)
      .join(" ");
    page.describe_adapter(name || "unknown", `${details}${a.isFallbackAdapter ? " (fallback adapter)" : ""}`);
  } catch (e) {
    console.warn("no GPUAdapterInfo", e);
  }
}

async function main() {
  const s = settings();
  fillForm(s);
  if (!navigator.gpu) {
    setState("error", "this browser has no WebGPU (navigator.gpu is missing; Chromium needs a secure context, Firefox and Safari need a recent version)", true);
    return;
  }
  try {
    await init();
    page = await start();
    await describeAdapter(page);
    adapter = JSON.parse(page.adapter());
    window.adapterInfo = adapter;
    showAdapter(adapter);
  } catch (e) {
    setState("error", `no WebGPU adapter: ${e.message ?? e}`, true);
    return;
  }
  if (new URLSearchParams(location.search).get("autorun") !== "0") await run(s);
  else setState("idle", "ready: press Run");
}

main();
