"""The HTML, CSS and JavaScript of the pages :mod:`minitune.tools.compare` writes (no network, no libraries)."""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style>
</head>
<body>
<header><h1>__TITLE__</h1><p id="note"></p></header>
<nav id="controls"></nav>
<main id="main"></main>
<pre id="votes-json" hidden></pre>
<script id="data" type="application/json">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1em 2em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: .6em 0 .2em; }
#note { color: #555; margin: 0 0 .5em; }
nav { display: flex; flex-wrap: wrap; gap: .4em 1.2em; align-items: center; padding: .5em 0; border-bottom: 1px solid #ddd;
      position: sticky; top: 0; background: #fafafa; z-index: 1; }
nav label { white-space: nowrap; }
nav:empty { display: none; }
.prompt { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: .8em 0; padding: .5em .8em; }
.prompt h2 { font-size: 1.05em; margin: .1em 0 .4em; }
.prompt h2 .cat { color: #777; font-weight: normal; font-size: .9em; margin-left: .6em; }
table.cells { border-collapse: collapse; }
table.cells th { font-weight: 600; font-size: .85em; padding: 0 .4em; text-align: left; vertical-align: bottom; }
table.cells td { vertical-align: top; padding: .2em .4em .5em; width: 136px; }
table.cells th.seed { color: #777; font-weight: normal; font-size: .75em; width: 7em; vertical-align: top; text-align: left;
                      word-break: break-all; }
img.px { width: 128px; height: 128px; image-rendering: pixelated; display: block;
         border: 1px solid #ccc; background: #000; }
.v { font-size: .8em; margin-top: .2em; }
.v .item { white-space: nowrap; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #c62828; font-weight: 600; }
.fail { color: #c62828; font-size: .78em; }
.missing { color: #999; font-size: .8em; }
@media (max-width: 900px) {
  img.px { width: 96px; height: 96px; }
  table.cells td { width: 100px; padding: .2em .2em .4em; }
  table.cells th.seed { width: 4.5em; }
}
.study { max-width: 44em; margin: 1em auto; text-align: center; }
.study .text { font-size: 1.3em; margin: .6em 0; }
.study .pair { display: flex; justify-content: center; gap: 2em; margin: 1em 0; }
.study img.px { width: 256px; height: 256px; }
.study button { font-size: 1em; padding: .5em 1em; margin: .2em; cursor: pointer; }
.study button.chosen { outline: 3px solid #1565c0; }
.study .side { font-size: .9em; color: #555; }
.progress { color: #555; }
"""

JS = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) (k === "text" ? (e.textContent = v) : e.setAttribute(k, v));
  for (const k of kids) e.append(k);
  return e;
};
const fmt = (k, v) => {
  if (k === "strict" || k === "well_formed") return null;
  return k === "soft" ? `soft ${Math.round(100 * v)}\u00a0%` : `${k} ${+v.toFixed(3)}`;
};

// ------------------------------------------------------------------ the side-by-side viewer
const state = { category: "all", arms: new Set(DATA.arms || []), disagree: false };

function disagrees(p) {
  // some seed on which the shown arms' strict verdicts (or, without one, their first verdict) differ
  const arms = DATA.arms.filter((a) => state.arms.has(a));
  return p.seeds.some((_, i) => {
    const vals = arms.map((a) => p.cells[a][i]).filter((c) => c).map((c) => {
      const v = c.verdicts; return "strict" in v ? v.strict : Object.values(v)[0];
    });
    return new Set(vals).size > 1;
  });
}

function visiblePrompts() {
  return DATA.prompts.filter((p) => (state.category === "all" || p.category === state.category)
    && (!state.disagree || disagrees(p)));
}

function cellView(c) {
  if (!c) return el("div", { class: "missing", text: "not evaluated" });
  const box = el("div");
  box.append(c.img ? el("img", { class: "px", src: c.img, alt: "generated image" })
    : el("div", { class: "missing", text: "image not kept" }));
  const v = c.verdicts, line = el("div", { class: "v" });
  if ("strict" in v) {
    line.append(el("span", { class: v.strict ? "ok" : "bad", text: v.strict ? "✓ aligned" : "✗ not aligned" }), " ");
  }
  const rest = Object.entries(v).map(([k, x]) => fmt(k, x)).filter((s) => s);
  if (c.mi !== null && c.mi !== undefined) rest.push(`MI ${c.mi.toFixed(1)}`);
  rest.forEach((s, i) => line.append(i ? " · " : "", el("span", { class: "item", text: s })));
  box.append(line);
  if ("well_formed" in v && !v.well_formed) box.append(el("div", { class: "fail", text: "malformed" }));
  if (c.failures.length) box.append(el("div", { class: "fail", text: c.failures.join(", ") }));
  return box;
}

function promptView(p) {
  const arms = DATA.arms.filter((a) => state.arms.has(a));
  const card = el("section", { class: "prompt", "data-prompt": p.prompt, "data-category": p.category });
  card.append(el("h2", {}, p.prompt, el("span", { class: "cat", text: p.category })));
  const head = el("tr", {}, el("th", { class: "seed" }), ...arms.map((a) => el("th", { text: a })));
  const table = el("table", { class: "cells" }, head);
  p.seeds.forEach((s, i) => table.append(el("tr", {}, el("th", { class: "seed", title: `seed ${s}`, text: `seed ${i + 1}` }),
    ...arms.map((a) => { const td = el("td", { "data-arm": a }); td.append(cellView(p.cells[a][i])); return td; }))));
  card.append(table);
  return card;
}

function renderViewer() {
  const main = document.getElementById("main");
  const shown = visiblePrompts();
  main.replaceChildren(...shown.map(promptView));
  document.getElementById("count").textContent = `${shown.length} of ${DATA.prompts.length} prompts`;
}

function viewerControls() {
  const nav = document.getElementById("controls");
  const cat = el("select", { id: "category" }, el("option", { value: "all", text: "all categories" }),
    ...DATA.categories.map((c) => el("option", { value: c, text: c })));
  cat.onchange = () => { state.category = cat.value; renderViewer(); };
  nav.append(el("label", {}, "category ", cat));
  for (const a of DATA.arms) {
    const box = el("input", { type: "checkbox", class: "arm", value: a });
    box.checked = true;
    box.onchange = () => { box.checked ? state.arms.add(a) : state.arms.delete(a); renderViewer(); };
    nav.append(el("label", {}, box, " " + a));
  }
  const dis = el("input", { type: "checkbox", id: "disagree" });
  dis.onchange = () => { state.disagree = dis.checked; renderViewer(); };
  nav.append(el("label", { title: "prompts where the shown arms' verdicts differ on some seed" }, dis, " arms disagree"),
    el("span", { id: "count", class: "progress" }));
  document.getElementById("note").textContent = "Each row is one seed: every arm started from the same noise. " +
    "✓ / ✗: the judge's strict verdict; MI: the trajectory MI in nats." +
    (DATA.previews_only ? " Only the first seed of each prompt was kept as an image here." : "") +
    (DATA.max_seeds ? ` The page shows the first ${DATA.max_seeds === 1 ? "seed" : DATA.max_seeds + " seeds"} of each prompt.`
      : "") +
    " Hover over a seed for its value."
}

// ------------------------------------------------------------------ the blind study
const S = DATA.study || {};
const storeKey = (rater) => `minitune-study:${S.id}:${rater}`;
const study = { rater: null, votes: {}, at: 0 };

function loadRater(name) {
  study.rater = name;
  try { study.votes = JSON.parse(localStorage.getItem(storeKey(name)) || "{}").votes || {}; } catch (e) { study.votes = {}; }
  localStorage.setItem(`minitune-study:${S.id}:last`, name);
  const next = DATA.trials.findIndex((t) => !(t.trial in study.votes));
  study.at = next < 0 ? 0 : next;
}

function votesJSON() {
  const votes = DATA.trials.filter((t) => t.trial in study.votes).map((t) => ({ trial: t.trial, prompt: t.prompt, seed: t.seed,
    left: t.left, right: t.right, choice: study.votes[t.trial].choice, time: study.votes[t.trial].time }));
  const about = { id: S.id, seed: S.seed, arms: S.arms, source: S.source, trials: DATA.trials.length };
  return { format: S.format, version: 1, study: about, rater: study.rater, exported: new Date().toISOString(), votes: votes };
}

function save() {
  localStorage.setItem(storeKey(study.rater), JSON.stringify({ votes: study.votes }));
  document.getElementById("votes-json").textContent = JSON.stringify(votesJSON());
}

function vote(choice) {
  const t = DATA.trials[study.at];
  study.votes[t.trial] = { choice: choice, time: new Date().toISOString() };
  save();
  const next = DATA.trials.findIndex((u, i) => i > study.at && !(u.trial in study.votes));
  const any = DATA.trials.findIndex((u) => !(u.trial in study.votes));
  study.at = next >= 0 ? next : (any >= 0 ? any : study.at);
  renderStudy();
}

function exportVotes() {
  const blob = new Blob([JSON.stringify(votesJSON(), null, 1)], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `votes-${study.rater.replace(/[^\w-]+/g, "_")}-${S.id}.json` });
  document.body.append(a); a.click(); a.remove();
}

function renderStudy() {
  const main = document.getElementById("main");
  if (!study.rater) return main.replaceChildren(startView());
  const t = DATA.trials[study.at], mine = study.votes[t.trial];
  const done = Object.keys(study.votes).length;
  const button = (choice, text) => {
    const chosen = mine && mine.choice === choice ? " chosen" : "";
    const b = el("button", { class: "vote" + chosen, "data-choice": choice, text: text });
    b.onclick = () => vote(choice); return b;
  };
  const nav = (text, d) => {
    const b = el("button", { class: "nav", text: text });
    b.onclick = () => { study.at = (study.at + d + DATA.trials.length) % DATA.trials.length; renderStudy(); };
    return b;
  };
  const image = (side, key) => el("div", {}, el("img", { class: "px", id: side, src: t[side + "_img"], alt: side + " image" }),
    el("div", { class: "side", text: `${side} (key ${key})` }));
  const progress = `rater ${study.rater} · image pair ${study.at + 1} of ${DATA.trials.length} · ${done} voted`;
  const finished = "All pairs voted: download your votes and send the file to whoever runs the study.";
  const exp = el("button", { id: "export", text: "Download my votes (JSON)" }); exp.onclick = exportVotes;
  main.replaceChildren(el("div", { class: "study", "data-trial": t.trial },
    el("div", { class: "progress", id: "progress", text: progress }),
    el("div", { class: "text", id: "prompt", text: `“${t.prompt}”` }),
    el("div", {}, "Which image matches the prompt better?"),
    el("div", { class: "pair" }, image("left", 1), image("right", 3)),
    el("div", {}, button("left", "Left"), button("tie", "Tie (key 2)"), button("right", "Right")),
    el("div", {}, nav("← previous", -1), nav("next →", 1), exp),
    done === DATA.trials.length ? el("p", { id: "finished", text: finished }) : ""));
}

function startView() {
  const last = localStorage.getItem(`minitune-study:${S.id}:last`) || "";
  const name = el("input", { id: "rater", placeholder: "your name or initials", value: last });
  const go = el("button", { id: "start", text: "Start" });
  go.onclick = () => { if (name.value.trim()) { loadRater(name.value.trim()); save(); renderStudy(); } };
  const text = `${DATA.trials.length} pairs of images. For each, choose the image that matches its prompt better, `
    + "or tie. Your votes stay in this browser (per name) until you download them.";
  return el("div", { class: "study" }, el("p", { text: text }), name, " ", go);
}

document.addEventListener("keydown", (e) => {
  if (DATA.mode !== "study" || !study.rater || e.target.tagName === "INPUT") return;
  const choice = { "1": "left", "2": "tie", "3": "right" }[e.key];
  if (choice) vote(choice);
});

window.minitune = { data: DATA, state: state, visiblePrompts: visiblePrompts, votes: votesJSON, exportVotes: exportVotes,
  start: (name) => { loadRater(name); save(); renderStudy(); }, vote: vote };
if (DATA.mode === "study") {
  document.getElementById("note").textContent =
    `Study ${S.id}. The images were drawn by different models; which is which is hidden.`;
  renderStudy();
} else { viewerControls(); renderViewer(); }
"""
