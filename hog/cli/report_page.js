// The report page's script, inlined by page.py: it draws the figures that pagedata.py gathered,
// on canvases, and writes every summary number with its raw value in a data-value attribute (the
// tests read them back from the page as a browser built it).
"use strict";
window.addEventListener("error", function (event) {
  var box = document.getElementById("errors");
  box.hidden = false;
  box.textContent += "script error: " + event.message + "\n";
});
var D = JSON.parse(document.getElementById("data").textContent);
var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
               "#ff9da7", "#86bcb6", "#8cd17d", "#499894", "#d4a6c8", "#a0cbe8", "#ffbe7d"];
var OUTCOME_COLOURS = ["#59a14f", "#e15759", "#9b1c1c", "#bab0ac", "#79706e", "#4e79a7"];
var IDLE = [["startup", "start-up", "#c9b3e6"], ["lock", "waiting for the lock", "#e15759"],
            ["empty", "nothing to run", "#d9d9d9"], ["drain", "draining and leaving", "#f1ce63"],
            ["other", "other (handing tasks over; lost hogs after their last beat)", "#8c8c8c"]];

function el(tag, attributes, text) {
  var node = document.createElement(tag);
  for (var key in attributes || {}) node.setAttribute(key, attributes[key]);
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}
function hours(seconds) {
  // Core time in the unit that shows it: core-seconds, core-minutes, core-hours.
  if (seconds < 120) return seconds.toFixed(1) + " core-s";
  if (seconds < 7200) return (seconds / 60).toFixed(1) + " core-min";
  return (seconds / 3600).toFixed(2) + " core-h";
}
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 10) return seconds.toFixed(2) + " s";
  if (seconds < 120) return seconds.toFixed(1) + " s";
  if (seconds < 7200) return (seconds / 60).toFixed(1) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}
function size(bytes) {
  if (bytes === null || bytes === undefined) return "-";
  var units = ["B", "KiB", "MiB", "GiB", "TiB"], index = 0;
  while (bytes >= 1024 && index < units.length - 1) { bytes /= 1024; index++; }
  return bytes.toFixed(index ? 1 : 0) + " " + units[index];
}
function percent(value) { return value === null || value === undefined ? "-" : (100 * value).toFixed(1) + " %"; }
function clock(epoch) { return new Date(epoch * 1000).toLocaleString(); }
function slurmTime(seconds) {
  if (seconds === null) return "-";
  var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600), m = Math.floor(seconds % 3600 / 60);
  var s = Math.floor(seconds % 60), two = function (n) { return (n < 10 ? "0" : "") + n; };
  if (d) return d + "-" + two(h) + ":" + two(m) + ":" + two(s);
  if (h) return h + ":" + two(m) + ":" + two(s);
  return m + ":" + two(s);
}
function slurmMem(bytes) {
  if (bytes === null) return "-";
  var gib = 1 << 30;
  return bytes % gib === 0 ? (bytes / gib) + "G" : Math.ceil(bytes / (1 << 20)) + "M";
}
function nameOf(name) { return name === "" ? "(no name)" : name; }

function card(parent, title, key, value, shown) {
  var box = el("div", {"class": "card"});
  box.appendChild(el("h4", {}, title));
  box.appendChild(el("div", {"class": "big", "data-key": key, "data-value": String(value)}, shown));
  parent.appendChild(box);
  return box;
}
function table(parent, headers, rows, keys) {
  var t = el("table"), head = el("tr");
  headers.forEach(function (h) { head.appendChild(el("th", {}, h)); });
  t.appendChild(head);
  rows.forEach(function (row, r) {
    var line = el("tr");
    row.forEach(function (cell, c) {
      var attributes = {};
      if (keys && keys[r] && keys[r][c]) { attributes["data-key"] = keys[r][c][0]; attributes["data-value"] = String(keys[r][c][1]); }
      line.appendChild(el("td", attributes, cell));
    });
    t.appendChild(line);
  });
  parent.appendChild(t);
  return t;
}

function summary() {
  var S = D.summary, box = document.getElementById("summary");
  document.getElementById("subtitle").textContent =
    D.selection + "; from " + clock(D.first) + " to " + clock(D.last) + "; made " + clock(D.generated_at);
  D.notes.forEach(function (note) { document.getElementById("notes").appendChild(el("li", {}, note)); });
  var total = 0, states = Object.keys(S.tasks);
  states.forEach(function (state) { total += S.tasks[state]; });
  var tasks = card(box, "tasks", "tasks", total, total.toLocaleString());
  table(tasks, ["state", "tasks"], states.filter(function (s) { return S.tasks[s]; }).map(function (s) {
    return [s, S.tasks[s].toLocaleString()];
  }), states.filter(function (s) { return S.tasks[s]; }).map(function (s) { return [null, ["tasks." + s, S.tasks[s]]]; }));
  var attempts = 0;
  Object.keys(S.attempts).forEach(function (k) { attempts += S.attempts[k]; });
  var tries = card(box, "attempts", "attempts", attempts, attempts.toLocaleString());
  var outcomes = Object.keys(S.attempts).sort();
  table(tries, ["ended", "attempts", "core time"], outcomes.map(function (k) {
    return [k, S.attempts[k].toLocaleString(), hours(S.attempt_core_s[k])];
  }), outcomes.map(function (k) { return [null, ["attempts." + k, S.attempts[k]], null]; }));
  card(box, "CPU time used (user + system)", "cpu_hours", S.cpu_s / 3600, hours(S.cpu_s).replace("core-", "CPU-"));
  card(box, "wall time", "wall_s", S.wall_s, duration(S.wall_s));
  var hogs = card(box, "hogs used", "hogs", S.hogs, String(S.hogs));
  var hogStates = Object.keys(S.hog_states).sort();
  table(hogs, ["state", "hogs"], hogStates.map(function (k) { return [k, String(S.hog_states[k])]; }),
        hogStates.map(function (k) { return [null, ["hogs." + k, S.hog_states[k]]]; }));
  card(box, "core time the hogs held", "held_core_hours", S.held_core_s / 3600, hours(S.held_core_s));
  card(box, "core time tasks ran", "busy_core_hours", S.busy_core_s / 3600, hours(S.busy_core_s));
  card(box, "efficiency: ran / held", "efficiency", S.efficiency === null ? "" : S.efficiency, percent(S.efficiency));
  var split = document.getElementById("split"), bar = el("div", {"class": "splitbar"});
  var parts = [["busy", "tasks ran", "#4e79a7", S.busy_core_s]].concat(IDLE.map(function (p) {
    return [p[0], p[1], p[2], S.idle_core_s[p[0]]];
  }));
  var rows = [], keys = [];
  parts.forEach(function (p) {
    var share = S.held_core_s > 0 ? p[3] / S.held_core_s : 0;
    var piece = el("div", {title: p[1] + ": " + percent(share)});
    piece.style.width = (100 * Math.min(1, share)) + "%";
    piece.style.background = p[2];
    bar.appendChild(piece);
    rows.push([p[1], hours(p[3]), percent(share)]);
    keys.push([null, ["split." + p[0], p[3] / 3600], null]);
  });
  split.appendChild(bar);
  table(split, ["the hogs' cores", "core time", "of held"], rows, keys);
}

function fitCanvas(canvas, height) {
  var ratio = window.devicePixelRatio || 1, width = canvas.clientWidth || 1000;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = height + "px";
  var context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return [context, width];
}
function timeAxis(context, left, width, top, span) {
  context.fillStyle = "#444";
  context.font = "11px sans-serif";
  for (var i = 0; i <= 6; i++) {
    var x = left + width * i / 6;
    context.fillRect(x, top, 1, 4);
    context.fillText("+" + duration(span * i / 6), Math.min(x, left + width - 50), top + 15);
  }
}

var LABEL = 170;
function timeline() {
  var T = D.timeline, canvas = document.getElementById("timeline"), hogs = D.hogs;
  // A lane per CPU: 14 px each when there is room, else thinner, down to a quarter pixel.
  var allLanes = T.lanes.reduce(function (a, b) { return a + b; }, 0);
  var span = D.last - D.first, laneHeight = Math.max(0.25, Math.min(14, 700 / Math.max(1, allLanes)));
  var tops = [], y = 4;
  hogs.forEach(function (hog, i) { tops.push(y); y += Math.max(10, T.lanes[i] * laneHeight) + 4; });
  var height = y + 24, fit = fitCanvas(canvas, height), context = fit[0], width = fit[1] - LABEL - 10;
  var colourBy = document.getElementById("colour").value;
  function x(offset) { return LABEL + width * offset / span; }
  context.clearRect(0, 0, fit[1], height);
  context.font = "11px sans-serif";
  hogs.forEach(function (hog, i) {
    var rowHeight = Math.max(10, T.lanes[i] * laneHeight);
    context.fillStyle = "#f3f3f3";
    context.fillRect(x(hog.launched - D.first), tops[i], Math.max(1, x(hog.ended - D.first) - x(hog.launched - D.first)), rowHeight);
    context.fillStyle = hog.state === "lost" ? "#b00" : "#333";
    context.fillText("hog " + hog.id + " " + (hog.host || "") + " (" + hog.state + ")", 2, tops[i] + Math.min(rowHeight, 12) - 1);
    if (laneHeight >= 10 && T.lane_labels[i].length > 1) {
      context.fillStyle = "#777";
      T.lane_labels[i].forEach(function (label, lane) { context.fillText("cpu " + label, LABEL - 40, tops[i] + lane * laneHeight + 10); });
    }
    if (T.mode === "binned") {
      var cell = width / T.busy[i].length;
      T.busy[i].forEach(function (share, b) {
        if (share <= 0) return;
        context.fillStyle = "rgba(78,121,167," + Math.min(1, 0.15 + 0.85 * share) + ")";
        context.fillRect(LABEL + b * cell, tops[i], Math.max(1, cell), rowHeight);
      });
    }
    if (hog.state === "lost" && hog.heartbeat) {
      context.fillStyle = "#b00";
      context.fillRect(x(hog.heartbeat - D.first), tops[i] - 2, 2, rowHeight + 4);
    }
  });
  var B = T.bars;
  for (var k = 0; k < B.row.length; k++) {
    var row = B.row[k], top = tops[row] + B.lane[k] * laneHeight;
    context.fillStyle = colourBy === "name" ? PALETTE[B.name[k] % PALETTE.length] : OUTCOME_COLOURS[B.outcome[k]];
    context.fillRect(x(B.start[k]), top + (laneHeight > 3 ? 1 : 0), Math.max(1, width * B.length[k] / span), Math.max(1, laneHeight - (laneHeight > 3 ? 2 : 0)));
    if (B.outcome[k] === 1 || B.outcome[k] === 2) {
      context.fillStyle = "#000";
      context.fillRect(x(B.start[k] + B.length[k]) - 1, top, 2, Math.max(1, laneHeight));
    }
  }
  timeAxis(context, LABEL, width, height - 20, span);
  var legend = document.getElementById("legend");
  legend.textContent = "";
  var entries = colourBy === "name" ? T.bar_names.map(function (n, i) { return [nameOf(n), PALETTE[i % PALETTE.length]]; })
                                    : D.outcomes.map(function (o, i) { return [o, OUTCOME_COLOURS[i]]; });
  entries.slice(0, 20).forEach(function (entry) {
    var key = el("span", {"class": "key"});
    key.style.background = entry[1];
    legend.appendChild(key);
    legend.appendChild(document.createTextNode(entry[0]));
  });
  canvas.onmousemove = function (event) {
    var box = canvas.getBoundingClientRect(), mx = event.clientX - box.left, my = event.clientY - box.top;
    var tip = document.getElementById("tip"), found = -1;
    for (var k = 0; k < B.row.length; k++) {
      var top = tops[B.row[k]] + B.lane[k] * laneHeight, left = x(B.start[k]);
      if (my >= top && my <= top + Math.max(2, laneHeight) && mx >= left - 1 && mx <= left + Math.max(2, width * B.length[k] / span)) found = k;
    }
    if (found < 0) { tip.hidden = true; return; }
    tip.hidden = false;
    tip.textContent = "task " + B.task[found] + " attempt " + B.attempt[found] + " (" + nameOf(T.bar_names[B.name[found]]) + ")\n" +
      D.outcomes[B.outcome[found]] + ", " + duration(B.length[found]) + ", from +" + duration(B.start[found]);
    tip.style.left = Math.min(mx + 12, box.width - 260) + "px";
    tip.style.top = (my + 12) + "px";
  };
  canvas.onmouseleave = function () { document.getElementById("tip").hidden = true; };
}

function series() {
  var S = D.series, canvas = document.getElementById("series"), fit = fitCanvas(canvas, 240), context = fit[0];
  var width = fit[1] - LABEL - 10, plot = 190, n = S.queued.length, span = D.last - D.first;
  // Each line on its own scale: a million queued would flatten a few hundred running.
  var most = {queued: Math.max(1, Math.max.apply(null, S.queued)), running: Math.max(1, Math.max.apply(null, S.running))};
  var rates = S.done.map(function (c) { return c / S.bin_s; }), fastest = Math.max(1e-9, Math.max.apply(null, rates));
  context.clearRect(0, 0, fit[1], 240);
  context.fillStyle = "#7bc27b";
  rates.forEach(function (rate, i) { var h = plot * rate / fastest; context.fillRect(LABEL + width * i / n, 10 + plot - h, Math.max(1, width / n - 0.5), h); });
  [["queued", "#e8a33d"], ["running", "#2a6fdb"]].forEach(function (line) {
    context.strokeStyle = line[1];
    context.lineWidth = 2;
    context.beginPath();
    S[line[0]].forEach(function (value, i) {
      var px = LABEL + width * (i + 1) / n, py = 10 + plot - plot * value / most[line[0]];
      if (i === 0) context.moveTo(LABEL, py); else context.lineTo(px, py);
    });
    context.stroke();
  });
  context.fillStyle = "#333";
  context.font = "11px sans-serif";
  context.fillText("queued: up to " + most.queued.toLocaleString(), 2, 20);
  context.fillText("running: up to " + most.running.toLocaleString(), 2, 36);
  context.fillText("done/s: up to " + fastest.toFixed(fastest < 10 ? 2 : 0), 2, 52);
  timeAxis(context, LABEL, width, 10 + plot + 6, span);
}

function histogram(h, format) {
  var canvas = el("canvas", {"class": "hist", width: "120", height: "36"});
  canvas.style.width = "120px";
  if (!h) return canvas;
  var context = canvas.getContext("2d"), most = Math.max.apply(null, h.counts), n = h.counts.length;
  context.fillStyle = "#4e79a7";
  h.counts.forEach(function (c, i) { var bh = 34 * c / Math.max(1, most); context.fillRect(120 * i / n, 35 - bh, Math.max(1, 120 / n - 1), bh); });
  canvas.title = format(h.edges[0]) + " to " + format(h.edges[h.edges.length - 1]) + " (log scale)";
  return canvas;
}

function names() {
  var box = document.getElementById("names");
  if (!D.names.length) { box.textContent = "No task ran."; return; }
  var t = table(box, ["name", "tasks", "done", "runs", "failed", "retries", "lost", "runtime p50", "p95", "max", "runtimes",
                      "peak mem p95", "max", "peaks", "CPU eff.", "--time", "--mem"], [], []);
  D.names.forEach(function (n) {
    var row = el("tr");
    [nameOf(n.name), n.tasks, n.done, n.runs, n.failed, n.retries, n.lost, duration(n.runtime["50"]), duration(n.runtime["95"]),
     duration(n.runtime["100"]), null, size(n.peak["95"]), size(n.peak["100"]), null, percent(n.cpu_efficiency),
     slurmTime(n.suggested_time_s), slurmMem(n.suggested_mem_bytes)].forEach(function (cell, c) {
      var td = el("td", {"data-key": "name." + nameOf(n.name) + "." + c});
      if (c === 10) td.appendChild(histogram(n.runtime_histogram, duration));
      else if (c === 13) td.appendChild(histogram(n.peak_histogram, size));
      else td.textContent = typeof cell === "number" ? cell.toLocaleString() : cell;
      row.appendChild(td);
    });
    t.appendChild(row);
  });
  box.appendChild(el("p", {}, "Runs: attempts that ended on their own (exited however, or killed at their time limit). " +
    "CPU efficiency: CPU time over cores x runtime. Suggested --time and --mem: the runs' 99th percentile x 1.5, rounded up " +
    "to the next of 1, 2, 5, 10, 15, 20, 30, 45 min, 1, 1.5, 2, 3, 4, 6, 8, 12 h, then days; memory to a power of two " +
    "MiB (at least 64M) up to 1G, then whole GiB."));
}

function failures() {
  var box = document.getElementById("failures");
  if (!D.failures.length) { box.textContent = "No attempt failed."; return; }
  D.failures.forEach(function (f) {
    box.appendChild(el("p", {"data-key": "failure." + f.task + "." + f.attempt},
      nameOf(f.name) + ": task " + f.task + ", attempt " + f.attempt + ", " + f.why + " on " + (f.host || "?") +
      (f.ended ? " at " + clock(f.ended) : "")));
    box.appendChild(el("pre", {"class": "tail"}, f.tail || "(no stderr)"));
  });
}

function hogTable() {
  var box = document.getElementById("hogs");
  table(box, ["hog", "host", "state", "cores", "started", "ended", "held", "ran", "efficiency", "lock wait", "attempts", "why it ended"],
    D.hogs.map(function (h) {
      return ["hog " + h.id, h.host || "-", h.state, String(h.cores), clock(h.launched), clock(h.ended), hours(h.held_core_s),
              hours(h.busy_core_s), percent(h.held_core_s > 0 ? h.busy_core_s / h.held_core_s : null), duration(h.lock_wait_s),
              String(h.attempts), h.end_reason || "-"];
    }), D.hogs.map(function (h) { return [null, null, ["hog." + h.id + ".state", h.state]]; }));
}

summary();
timeline();
series();
names();
failures();
hogTable();
document.getElementById("colour").addEventListener("change", timeline);
window.addEventListener("resize", function () { timeline(); series(); });
document.body.setAttribute("data-rendered", "yes");
