// tdxsim serve: the pages, drawn from the JSON API. No framework, no
// build step.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const MiB2 = 2 * 1024 * 1024;
let legend = [];
const colour = {};
const names = {};

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function svgEl(tag, attrs = {}) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
  return r.json();
}

const hex = (n) => "0x" + n.toString(16);
const tip = document.getElementById("tip");
function showTip(ev, text) {
  tip.textContent = text;
  tip.hidden = false;
  tip.style.left = ev.clientX + 12 + "px";
  tip.style.top = ev.clientY + 12 + "px";
}
function hideTip() { tip.hidden = true; }

function legendBox(run) {
  const d = el("div", { class: "legend" });
  for (const l of legend) {
    const i = el("i");
    i.style.background = l.Colour;
    d.append(el("span", {}, i, l.Name));
  }
  if ((run?.report?.tds ?? []).some((t) => t.firmware_sections?.length)) {
    d.append(el("span", {}, el("i", { class: "fw" }), "holds a firmware section"));
  }
  return d;
}

// sectionsOf is what the build did with the firmware sections of TD td
// (the report's firmware_sections; none for a TD without firmware).
function sectionsOf(run, td) {
  return (run.report?.tds ?? []).find((t) => t.name === td)?.firmware_sections ?? [];
}

const sectionText = (s) =>
  `firmware ${s.type} [${hex(s.gpa)}, ${hex(s.gpa + s.size)}): ${s.pages_added} pages added, ${s.pages_measured} measured`;

// sectionsTable lists the firmware sections the build loaded.
function sectionsTable(td, secs) {
  const t = el("table", { class: "fw-sections", "data-td": td },
    el("tr", {}, ...["#", "type", "GPA", "size", "attributes", "pages added", "pages measured"].map((h) => el("th", {}, h))));
  for (const s of secs) {
    t.append(el("tr", {}, ...[s.index, s.type, hex(s.gpa), hex(s.size), s.attributes, s.pages_added, s.pages_measured]
      .map((v, i) => el("td", i === 1 ? { class: "name" } : {}, String(v)))));
  }
  return el("div", {}, el("h2", {}, `${td}: firmware sections loaded at build`), t);
}

// drawMap draws one TD's map as a grid of 2 MiB cells, outlining those
// holding firmware sections (secs); clicking a cell calls onCell(gpa).
function drawMap(m, onCell, perRow = 64, px = 10, secs = []) {
  const n = m.cells.length;
  const rows = Math.ceil(n / perRow);
  const svg = svgEl("svg", { width: perRow * px, height: rows * px, class: "map", "data-td": m.td });
  for (let i = 0; i < n; i++) {
    const c = m.cells[i];
    const inCell = secs.filter((s) => s.gpa < (i + 1) * MiB2 && s.gpa + s.size > i * MiB2);
    const r = svgEl("rect", {
      x: (i % perRow) * px, y: Math.floor(i / perRow) * px, width: px - 1, height: px - 1,
      fill: colour[c] || "#000", class: inCell.length ? "cell fw" : "cell", "data-state": c, "data-gpa": hex(i * MiB2),
    });
    const fw = inCell.map((s) => "\n" + sectionText(s)).join("");
    r.addEventListener("mousemove", (ev) =>
      showTip(ev, `${m.td} GPA ${hex(i * MiB2)} - ${hex((i + 1) * MiB2 - 1)}\n${names[c] || c}${fw}`));
    r.addEventListener("mouseleave", hideTip);
    if (onCell) r.addEventListener("click", () => onCell(i * MiB2));
    svg.append(r);
  }
  return svg;
}

// drawCell shows the 512 pages of one 2 MiB cell.
async function drawCell(box, run, step, td, gpa) {
  box.replaceChildren(el("p", { class: "muted" }, `loading ${td} ${hex(gpa)} at step ${step}...`));
  const pages = await getJSON(`/api/cell?run=${run}&step=${step}&td=${encodeURIComponent(td)}&gpa=${gpa.toString(16)}`);
  const perRow = 32, px = 16;
  const svg = svgEl("svg", { width: perRow * px, height: (512 / perRow) * px, id: "zoom" });
  pages.forEach((p, i) => {
    const r = svgEl("rect", {
      x: (i % perRow) * px, y: Math.floor(i / perRow) * px, width: px - 2, height: px - 2,
      fill: colour[p.state] || "#000", class: "page", "data-state": p.state,
    });
    r.addEventListener("mousemove", (ev) => showTip(ev,
      `GPA ${hex(p.gpa)}: ${names[p.state]}` + (p.level ? `\nlevel ${p.level}` : "") +
      (p.hpa ? `\nHPA ${hex(p.hpa)}` : "") + (p.sept ? `\nS-EPT ${p.sept}` : "")));
    r.addEventListener("mouseleave", hideTip);
    svg.append(r);
  });
  const link = el("a", { href: `/sept?run=${run}&step=${step}&td=${encodeURIComponent(td)}&gpa=${gpa.toString(16)}` }, "S-EPT walk of this GPA");
  box.replaceChildren(el("h2", {}, `${td}: the 512 pages of ${hex(gpa)} (step ${step})`), svg, el("p", {}, link));
}

function lastStepWithMaps(run) {
  for (let i = run.steps.length - 1; i >= 0; i--) if (run.steps[i].maps.length) return i;
  return 0;
}

async function pageMap(main, run) {
  const step = lastStepWithMaps(run);
  const zoom = el("div", { id: "zoom-box" });
  main.append(el("h2", {}, `GPA space at ${run.steps[step]?.at ?? "-"} (click a cell to zoom in)`), legendBox(run));
  for (const m of run.steps[step]?.maps ?? []) {
    const secs = sectionsOf(run, m.td);
    main.append(el("h2", {}, `${m.td}: ${(m.bytes / 2 ** 30).toFixed(2)} GiB of GPA`),
      drawMap(m, (gpa) => drawCell(zoom, "a", step, m.td, gpa), 64, 10, secs));
    if (secs.length) main.append(sectionsTable(m.td, secs));
  }
  main.append(zoom);
}

async function pageTimeline(main, run) {
  const label = el("span", { id: "step-label" });
  const scrub = el("input", { type: "range", id: "scrub", min: 0, max: run.steps.length - 1, value: 0 });
  const prev = el("button", { id: "prev" }, "prev");
  const next = el("button", { id: "next" }, "next");
  const body = el("div", { class: "row" });
  const mapBox = el("div", { id: "timeline-map" });
  const side = el("div");
  body.append(mapBox, side);
  main.append(el("h2", {}, "Timeline"), el("div", {}, prev, scrub, next, " ", label), legendBox(run), body);
  const show = (k) => {
    const st = run.steps[k];
    scrub.value = k;
    label.textContent = `step ${k}: ${st.at}`;
    mapBox.replaceChildren();
    for (const m of st.maps) mapBox.append(el("h2", {}, m.td), drawMap(m, null, 64, 8, sectionsOf(run, m.td)));
    if (!st.maps.length) mapBox.append(el("p", { class: "muted" }, "no TD at this step"));
    const calls = el("table", { id: "calls" }, el("tr", {}, el("th", {}, "leaf"), el("th", {}, "calls so far")));
    for (const [leaf, n] of Object.entries(st.calls).sort()) {
      calls.append(el("tr", {}, el("td", { class: "name" }, leaf), el("td", {}, String(n))));
    }
    const last = el("table", { id: "last" }, el("tr", {}, el("th", {}, "thread"), el("th", {}, "last SEAMCALLs"), el("th", {}, "rcx"), el("th", {}, "status")));
    for (const c of st.last_seamcalls) {
      last.append(el("tr", {}, el("td", {}, String(c.thread)), el("td", { class: "name" }, c.leaf), el("td", {}, c.rcx), el("td", {}, c.status)));
    }
    side.replaceChildren(el("p", {}, `violations so far: ${st.violations}`), calls, el("h2", {}, "Last SEAMCALLs"), last);
    if (st.at === "build") {
      // The build step is where the firmware went in: what each section added and measured.
      for (const m of st.maps) {
        const secs = sectionsOf(run, m.td);
        if (secs.length) side.append(sectionsTable(m.td, secs));
      }
    }
  };
  scrub.addEventListener("input", () => show(Number(scrub.value)));
  prev.addEventListener("click", () => show(Math.max(0, Number(scrub.value) - 1)));
  next.addEventListener("click", () => show(Math.min(run.steps.length - 1, Number(scrub.value) + 1)));
  show(0);
}

async function pageSept(main, run) {
  const q = new URLSearchParams(location.search);
  const step = el("select", { id: "sept-step" });
  run.steps.forEach((s, i) => step.append(el("option", { value: i }, `${i}: ${s.at}`)));
  step.value = q.get("step") ?? lastStepWithMaps(run);
  const td = el("select", { id: "sept-td" });
  for (const m of run.steps[lastStepWithMaps(run)]?.maps ?? []) td.append(el("option", { value: m.td }, m.td));
  if (q.get("td")) td.value = q.get("td");
  const gpa = el("input", { id: "sept-gpa", value: q.get("gpa") ?? "0", size: 14 });
  const go = el("button", { id: "sept-go" }, "walk");
  const out = el("div", { id: "sept-result" });
  main.append(el("h2", {}, "Secure EPT walk of a GPA"),
    el("div", {}, "step ", step, " TD ", td, " GPA 0x", gpa, " ", go), out);
  const walk = async () => {
    out.replaceChildren(el("p", { class: "muted" }, "walking..."));
    const r = q.get("run") ?? "a";
    const levels = await getJSON(`/api/sept?run=${r}&step=${step.value}&td=${encodeURIComponent(td.value)}&gpa=${gpa.value.replace(/^0x/, "")}`);
    out.replaceChildren();
    if (!levels || !levels.length) { out.append(el("p", {}, "no Secure EPT")); return; }
    levels.forEach((l, i) => {
      const d = el("div", { class: "sept-level" + (l.leaf ? " leaf" : "") },
        `entry ${l.index} of the ${l.level}-level S-EPT page at ${hex(l.page)}: ${l.state}` +
        (l.state !== "FREE" ? ` -> ${hex(l.hpa)}` : "") + (l.leaf ? ` (leaf, maps ${l.level})` : ""));
      d.style.setProperty("--depth", i);
      out.append(d);
    });
  };
  go.addEventListener("click", walk);
  walk();
}

async function pageReport(main, run) {
  const txt = await (await fetch("/api/report.txt?run=a")).text();
  main.append(el("h2", {}, `Report: ${run.name}` + (run.error ? ` (stopped: ${run.error})` : "")),
    el("img", { id: "report-img", src: "/api/report.svg?run=a", alt: "memory map and charts" }),
    el("pre", { id: "report-text" }, txt));
}

async function pageCompare(main, run) {
  const r = await fetch("/api/compare");
  if (!r.ok) { main.append(el("p", {}, await r.text())); return; }
  const c = await r.json();
  const b = await getJSON("/api/run?run=b");
  const t = el("table", { id: "compare-table" },
    el("tr", {}, el("th", {}, "metric"), el("th", {}, c.a), el("th", {}, c.b), el("th", {}, "change")));
  for (const d of c.diffs) {
    const pct = d.a ? (100 * d.change).toFixed(1) + "%" : "";
    t.append(el("tr", { class: d.differ ? "diff" : "" }, el("td", { class: "name" }, d.metric),
      el("td", {}, String(d.a)), el("td", {}, String(d.b)), el("td", {}, d.differ ? pct : "")));
  }
  const side = el("div", { class: "row", id: "compare-maps" });
  for (const [name, rr] of [[c.a, run], [c.b, b]]) {
    const col = el("div", {}, el("h2", {}, name));
    for (const m of rr.steps[lastStepWithMaps(rr)]?.maps ?? []) col.append(el("div", {}, m.td), drawMap(m, null, 48, 8));
    side.append(col);
  }
  main.append(el("h2", {}, `Compare (seed ${c.seed}); differing rows are marked`), legendBox(run), side, t);
}

async function main() {
  legend = await getJSON("/api/legend");
  for (const l of legend) { colour[l.Code] = l.Colour; names[l.Code] = l.Name; }
  const run = await getJSON("/api/run?run=a");
  document.getElementById("scenario").textContent = run.name;
  const page = location.pathname.replace(/^\//, "") || "map";
  document.getElementById("nav-" + page)?.classList.add("active");
  const mainEl = document.getElementById("page");
  const pages = { map: pageMap, timeline: pageTimeline, sept: pageSept, report: pageReport, compare: pageCompare };
  await (pages[page] || pageMap)(mainEl, run);
  document.body.dataset.ready = "1";
}

main().catch((e) => {
  document.getElementById("page").append(el("p", {}, "error: " + e.message));
  console.error(e);
});
