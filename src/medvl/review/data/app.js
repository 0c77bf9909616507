// medvl review page: server-side filtering and paging; one sample shown at a time with its image(s), the
// record's regions (dashed), the boxes of the text (solid) and the mask overlay; hand grades by keyboard.
"use strict";
const PAGE = 50;
const FACETS = ["dataset", "modality", "kind", "lang", "split"];
const CRITERIA = ["medical_accuracy", "language_clarity", "completeness", "imaging_relevance"];
const state = { offset: 0, total: 0, items: [], cur: -1, detail: null, roffset: 0, rtotal: 0 };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs = {}) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}
function fillSelect(sel, counts) {
  sel.replaceChildren(el("option", { value: "*" }, "all"));
  for (const [v, n] of Object.entries(counts || {})) sel.append(el("option", { value: v }, `${v || "(none)"} (${n})`));
}
function query() {
  const p = new URLSearchParams();
  const f = $("#filters");
  for (const name of FACETS) { const v = f.elements[name].value; if (v !== "*") p.set(name, v); }
  if (f.elements.judged.checked) p.set("judged", "1");
  return p;
}

async function loadFacets() {
  const f = await getJSON("/api/facets");
  for (const name of FACETS) fillSelect($("#filters").elements[name], f[name]);
  fillSelect($("#reject-stage"), f.reject_stage);
  fillSelect($("#reject-source"), f.reject_source);
  $("#filters").elements.judged.disabled = !f.judge;
}

let pageSeq = 0, sampleSeq = 0;  // a reply that arrives after a newer request was made is dropped

async function loadPage(offset, select = 0) {
  const p = query(); p.set("offset", offset); p.set("limit", PAGE);
  const seq = ++pageSeq;
  const r = await getJSON(`/api/samples?${p}`);
  if (seq !== pageSeq) return;
  Object.assign(state, { offset: r.offset, total: r.total, items: r.items, cur: -1 });
  const list = $("#sample-list");
  list.replaceChildren();
  r.items.forEach((s, i) => {
    const li = el("li", { "data-n": s.n, "data-id": s.id });
    li.append(el("div", {}, s.text || "(no user turn)"));
    const tags = el("div", { class: "tags" }, `${s.dataset} · ${s.modality} · ${s.kind} · ${s.lang} · ${s.split}`);
    if (s.grade) tags.append(el("span", { class: "badge hand", title: "hand grade" }, s.grade));
    if (s.judge != null) tags.append(el("span", { class: "badge judge", title: "judge overall" }, s.judge.toFixed(1)));
    li.append(tags);
    li.addEventListener("click", () => select_(i));
    list.append(li);
  });
  $("#page-info").textContent = r.total ? `${r.offset + 1}–${r.offset + r.items.length} of ${r.total}` : "0 samples";
  if (r.items.length) await select_(select < 0 ? r.items.length + select : Math.min(select, r.items.length - 1));
  else { $("#detail").hidden = true; $("#empty").hidden = false; state.detail = null; }
}

async function select_(i) {
  state.cur = i;
  document.querySelectorAll("#sample-list li").forEach((li, k) => li.classList.toggle("current", k === i));
  const li = document.querySelectorAll("#sample-list li")[i];
  if (li) li.scrollIntoView({ block: "nearest" });
  const seq = ++sampleSeq;
  const d = await getJSON(`/api/sample?n=${state.items[i].n}`);
  if (seq !== sampleSeq) return;
  state.detail = d;
  render(d);
}

function figure(src, rec, boxes, withRegions) {
  const fig = el("div", { class: "figure" });
  const img = el("img", { class: "base", src: `/file/${src}`, alt: src });
  fig.append(img);
  if (!withRegions) return fig;
  const W = rec?.width, H = rec?.height;
  if (rec?.mask) {
    const m = el("img", { class: "mask", src: `/api/overlay?mask=${encodeURIComponent(rec.mask)}`, alt: "mask" });
    m.hidden = !$("#show-mask").checked;
    fig.append(m);
  }
  const draw = (w, h) => {
    const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", class: "boxes" });
    for (const r of rec?.regions || []) {
      const [x1, y1, x2, y2] = r.box;
      svg.append(svgEl("rect", { class: "region", x: x1, y: y1, width: x2 - x1, height: y2 - y1, "data-label": r.label }));
      const t = svgEl("text", { x: x1 + 2, y: y1 + 12 }); t.textContent = r.label; svg.append(t);
    }
    for (const b of boxes) {
      const [x1, y1, x2, y2] = b.box;
      svg.append(svgEl("rect", { class: "textbox", x: x1 * w, y: y1 * h, width: (x2 - x1) * w, height: (y2 - y1) * h,
                                 "data-turn": b.turn }));
    }
    svg.style.display = $("#show-boxes").checked ? "" : "none";
    fig.append(svg);
  };
  if (W && H) draw(W, H); else img.addEventListener("load", () => draw(img.naturalWidth, img.naturalHeight));
  return fig;
}

function render(d) {
  $("#empty").hidden = true; $("#detail").hidden = false;
  const s = d.sample, rec = d.record;
  $("#sample-id").textContent = s.id;
  const figs = $("#figures"); figs.replaceChildren();
  (s.images || []).forEach((src, i) => figs.append(figure(src, rec, d.boxes, i === 0)));
  const turns = $("#turns"); turns.replaceChildren();
  for (const t of s.turns) {
    const div = el("div", { class: `turn ${t.role}` });
    div.append(el("span", { class: "role" }, t.role), document.createTextNode(t.text));
    turns.append(div);
  }
  const info = [];
  if (rec) {
    info.push(`labels: ${(rec.labels || []).join(", ") || "(none)"}`, `regions: ${(rec.regions || []).length}`,
              `${rec.width}×${rec.height}`);
    if (rec.mask) info.push("mask: " + Object.entries(rec.mask_values || {}).map(([k, v]) => `${k}=${v}`).join(", "));
    if (rec.slice) info.push(`slice ${JSON.stringify(rec.slice)}`);
  }
  info.push(`generator ${s.generator}`, `template ${s.template_id || "-"}`);
  $("#record-info").textContent = info.join(" · ");
  showGrade(d.grade);
  $("#comment").value = d.grade?.comment || "";
  const js = $("#judge-scores"); js.replaceChildren();
  if (d.judge && d.judge.scores) {
    const tb = el("table", { id: "judge-table" });
    tb.append(el("caption", {}, `judge: overall ${d.judge.overall.toFixed(2)} (1 best)`));
    for (const c of CRITERIA) {
      const tr = el("tr");
      tr.append(el("th", {}, c.replace("_", " ")), el("td", {}, d.judge.scores[c]), el("td", {}, d.judge.comments?.[c] || ""));
      tb.append(tr);
    }
    if (d.judge.overall_comment) { const tr = el("tr"); tr.append(el("th", {}, "overall"), el("td", {}, ""), el("td", {}, d.judge.overall_comment)); tb.append(tr); }
    js.append(tb);
  } else if (d.judge && d.judge.error) {
    js.append(el("div", { class: "muted" }, `judge error: ${d.judge.error}`));
  } else {
    js.append(el("div", { class: "muted" }, "not judged"));
  }
}

function showGrade(g) {
  $("#hand-grade").textContent = g ? ` saved: ${g.grade}` : "";
  document.querySelectorAll(".grade-buttons button").forEach((b) =>
    b.classList.toggle("selected", g && Number(b.dataset.grade) === g.grade));
}

async function saveGrade(grade) {
  // only the sample on screen is graded: while the next one is still loading, a grade key does nothing
  if (!state.detail || state.detail.sample.n !== state.items[state.cur]?.n) return;
  const s = state.detail.sample;
  $("#save-status").textContent = " saving…";
  const r = await fetch("/api/grade", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sample_id: s.id, grade, comment: $("#comment").value }) });
  const body = await r.json();
  if (!r.ok) { $("#save-status").textContent = ` not saved: ${body.error}`; return; }
  state.detail.grade = body;
  showGrade(body);
  $("#save-status").textContent = " saved";
  const li = document.querySelectorAll("#sample-list li")[state.cur];
  if (li) {
    let b = li.querySelector(".badge.hand");
    if (!b) { b = el("span", { class: "badge hand", title: "hand grade" }); li.querySelector(".tags").append(b); }
    b.textContent = grade;
  }
}

async function step(delta) {
  const i = state.cur + delta;
  if (i >= 0 && i < state.items.length) return select_(i);
  if (delta > 0 && state.offset + state.items.length < state.total) return loadPage(state.offset + PAGE, 0);
  if (delta < 0 && state.offset > 0) return loadPage(Math.max(0, state.offset - PAGE), -1);
}

let rejectSeq = 0;
async function loadRejects(offset) {
  const p = new URLSearchParams();
  const st = $("#reject-stage").value, so = $("#reject-source").value;
  if (st !== "*") p.set("stage", st);
  if (so !== "*") p.set("source", so);
  p.set("offset", offset); p.set("limit", PAGE);
  const seq = ++rejectSeq;
  const r = await getJSON(`/api/rejects?${p}`);
  if (seq !== rejectSeq) return;
  state.roffset = r.offset; state.rtotal = r.total;
  const tb = $("#reject-table tbody"); tb.replaceChildren();
  for (const x of r.items) {
    const tr = el("tr", { class: "reject" });
    tr.append(el("td", {}, x.source), el("td", {}, x.stage), el("td", {}, x.item), el("td", {}, x.reason));
    tb.append(tr);
  }
  $("#reject-info").textContent = r.total ? `${r.offset + 1}–${r.offset + r.items.length} of ${r.total}` : "0 rejects";
}

function showTab(name) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  $("#samples-view").hidden = name !== "samples";
  $("#rejects-view").hidden = name !== "rejects";
  if (name === "rejects") loadRejects(0);
}

document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  const typing = t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && !["checkbox", "radio", "button"].includes(t.type));
  if (ev.target.id === "comment") {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      const g = state.detail?.grade?.grade;
      if (g) saveGrade(g); else $("#save-status").textContent = " press 1–5 to grade first";
      ev.target.blur();
    } else if (ev.key === "Escape") ev.target.blur();
    return;
  }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey || $("#samples-view").hidden) return;
  if (/^[1-5]$/.test(ev.key)) { ev.preventDefault(); saveGrade(Number(ev.key)); }
  else if (ev.key === "j" || ev.key === "ArrowDown" || ev.key === "ArrowRight") { ev.preventDefault(); step(1); }
  else if (ev.key === "k" || ev.key === "ArrowUp" || ev.key === "ArrowLeft") { ev.preventDefault(); step(-1); }
  else if (ev.key === "c") { ev.preventDefault(); $("#comment").focus(); }
});

document.querySelectorAll(".grade-buttons button").forEach((b) =>
  b.addEventListener("click", () => saveGrade(Number(b.dataset.grade))));
// after a filter changes, the keys go back to the page (arrows would otherwise change the select)
$("#filters").addEventListener("change", (e) => { e.target.blur(); loadPage(0); });
$("#prev-page").addEventListener("click", () => state.offset > 0 && loadPage(Math.max(0, state.offset - PAGE)));
$("#next-page").addEventListener("click", () => state.offset + PAGE < state.total && loadPage(state.offset + PAGE));
$("#show-boxes").addEventListener("change", (e) =>
  document.querySelectorAll("svg.boxes").forEach((s) => (s.style.display = e.target.checked ? "" : "none")));
$("#show-mask").addEventListener("change", (e) =>
  document.querySelectorAll("img.mask").forEach((m) => (m.hidden = !e.target.checked)));
document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
$("#reject-stage").addEventListener("change", (e) => { e.target.blur(); loadRejects(0); });
$("#reject-source").addEventListener("change", (e) => { e.target.blur(); loadRejects(0); });
$("#rprev").addEventListener("click", () => state.roffset > 0 && loadRejects(Math.max(0, state.roffset - PAGE)));
$("#rnext").addEventListener("click", () => state.roffset + PAGE < state.rtotal && loadRejects(state.roffset + PAGE));

loadFacets().then(() => loadPage(0)).then(() => document.body.setAttribute("data-ready", "1"))
  .catch((e) => { document.body.setAttribute("data-error", String(e)); $("#empty").textContent = String(e); });
