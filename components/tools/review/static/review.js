/* MARCO label review: one image at a time, a key per class, downloads overrides files.
 *
 * Plain JavaScript, no libraries: data.js sets window.MARCO_REVIEW_DATA (the format is
 * written by components/tools/review/page.py); viewer.js provides window.MarcoViewer.
 * Decisions are kept in the browser (localStorage) until they are downloaded, one
 * overrides file per institution (<CODE>.csv, the columns in D.columns), for the
 * catalogue's overrides folder.
 */
(function () {
  "use strict";

  var V = window.MarcoViewer;
  var D = window.MARCO_REVIEW_DATA;
  var summary = document.getElementById("summary");
  if (!D || !V) {
    summary.textContent = "data.js or viewer.js is missing or did not load: run marco review again.";
    return;
  }
  var items = D.items, classes = D.classes;
  var state = {current: 0, heatmap: true};
  var decisions = load();

  function load() {
    try { return JSON.parse(window.localStorage.getItem(D.key) || "{}") || {}; }
    catch (e) { return {}; }
  }
  function save() {
    try { window.localStorage.setItem(D.key, JSON.stringify(decisions)); } catch (e) { /* full */ }
  }
  function idOf(item) { return item.institution + "/" + item.image_id; }
  function decisionOf(item) { return decisions[idOf(item)] || {new_class: "", note: "", time: ""}; }
  function isOverride(item) {
    var d = decisionOf(item);
    return d.new_class !== "" && d.new_class !== item.label;
  }
  function label(name) { return name === D.dispute ? "dispute / unsure" : name; }

  function renderQueue() {
    var html = items.map(function (item, i) {
      var d = decisionOf(item);
      var cls = [i === state.current ? "current" : "", d.new_class ? "decided" : "",
                 isOverride(item) ? "changed" : ""].join(" ").trim();
      return '<li data-index="' + i + '" class="' + cls + '"><span>' + V.esc(idOf(item)) +
        "</span><span>" + V.esc(item.label) + ' &rarr; <span class="decision">' +
        V.esc(d.new_class ? label(d.new_class) : "?") + "</span></span></li>";
    });
    document.getElementById("queue").innerHTML = html.join("");
    var decided = items.filter(function (item) { return decisionOf(item).new_class; }).length;
    var changed = items.filter(isOverride).length;
    document.getElementById("progress").textContent = decided + " of " + items.length +
      " decided, " + changed + " override" + (changed === 1 ? "" : "s");
  }

  function renderItem() {
    var box = document.getElementById("item");
    if (!items.length) { box.innerHTML = '<p class="hint">Nothing to review.</p>'; return; }
    var item = items[state.current], d = decisionOf(item);
    var rows = classes.map(function (name, c) {
      var p = item.probabilities[c];
      return '<tr class="' + (name === item.label ? "stored" : "") + '"><td>' + V.esc(name) +
        (name === item.label ? " (stored)" : "") + '</td><td class="bar"><span class="c-' +
        V.esc(name) + '" style="width:' + (100 * p).toFixed(1) + '%"></span></td><td>' +
        V.prob(p) + "</td></tr>";
    });
    var buttons = classes.concat([D.dispute]).map(function (name, c) {
      var key = name === D.dispute ? "0" : String(c + 1);
      return '<button type="button" data-class="' + V.esc(name) + '" class="' +
        (d.new_class === name ? "chosen" : "") + '"><kbd>' + key + "</kbd> " +
        V.esc(label(name)) + "</button>";
    });
    box.innerHTML =
      "<h2>" + (state.current + 1) + " of " + items.length + ": " + V.esc(idOf(item)) + "</h2>" +
      '<figure><img id="image" src="' + V.esc(item.image) + '" alt="' + V.esc(item.image_id) +
      '">' + (item.heatmap ? '<img class="heatmap" src="' + V.esc(item.heatmap) + '" alt=""' +
      (state.heatmap ? "" : " hidden") + ">" : "") + "</figure>" +
      "<dl><dt>Stored label</dt><dd id=\"stored\">" + V.esc(item.label) + " (native " +
      V.esc(JSON.stringify(item.old_label)) + ", from the " + V.esc(item.label_source) +
      ")</dd><dt>Model</dt><dd>" + V.esc(item.predicted) + ", cross-entropy " +
      item.cross_entropy.toFixed(2) + "</dd><dt>Split</dt><dd>" + V.esc(item.split) +
      "</dd><dt>File</dt><dd>" + V.esc(item.source_path) + ' (<a href="' +
      V.esc(item.original) + '">as stored</a>)</dd></dl>' +
      '<table class="probabilities">' + rows.join("") + "</table>" +
      '<div class="decisions">' + buttons.join("") + "</div>" +
      '<label>Note<br><textarea id="note" rows="2">' + V.esc(d.note || "") +
      "</textarea></label>";
    box.querySelectorAll(".decisions button").forEach(function (button) {
      button.addEventListener("click", function () { decide(button.getAttribute("data-class")); });
    });
    document.getElementById("note").addEventListener("input", function (event) {
      var current = decisionOf(item);
      current.note = event.target.value;
      decisions[idOf(item)] = current;
      save();
    });
  }

  function render() { renderItem(); renderQueue(); }

  function go(index) {
    if (!items.length) { return; }
    state.current = Math.max(0, Math.min(items.length - 1, index));
    render();
  }

  function decide(name) {
    if (!items.length) { return; }
    var item = items[state.current], d = decisionOf(item);
    d.new_class = name;
    d.time = new Date().toISOString();
    decisions[idOf(item)] = d;
    save();
    if (state.current < items.length - 1) { go(state.current + 1); } else { render(); }
  }

  function undo() {
    var item = items[state.current], d = decisionOf(item);
    d.new_class = "";
    d.time = "";
    decisions[idOf(item)] = d;
    save();
    render();
  }

  function cell(value) {
    var text = String(value === undefined || value === null ? "" : value);
    return /[",\r\n]|^\s|\s$/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  /* One overrides file per institution: the decisions that change the stored class. */
  function overridesFiles() {
    var reviewer = document.getElementById("reviewer").value.trim();
    var files = {};
    items.forEach(function (item) {
      if (!isOverride(item)) { return; }
      var d = decisionOf(item);
      var values = {institution: item.institution, image_id: item.image_id,
                    old_label: item.old_label, new_class: d.new_class, reviewer: reviewer,
                    note: d.note || "", time: d.time};
      var row = D.columns.map(function (column) { return cell(values[column]); }).join(",");
      (files[item.institution] = files[item.institution] || []).push(row);
    });
    return Object.keys(files).sort().map(function (code) {
      return {name: code + ".csv", rows: files[code].length,
              text: D.columns.join(",") + "\r\n" + files[code].join("\r\n") + "\r\n"};
    });
  }

  function download() {
    var files = overridesFiles();
    var note = document.getElementById("exported");
    if (!files.length) {
      note.textContent = "No overrides to download: no decision changes a stored class.";
      document.documentElement.dataset.exported = "0";
      return;
    }
    files.forEach(function (file) {
      var url = URL.createObjectURL(new Blob([file.text], {type: "text/csv"}));
      var link = document.createElement("a");
      link.href = url;
      link.download = file.name;
      document.body.appendChild(link);
      link.click();
      link.remove();
      window.setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
    });
    note.textContent = "Downloaded " + files.map(function (f) {
      return f.name + " (" + f.rows + ")"; }).join(", ") +
      ": put each in the catalogue's overrides folder (or append its rows to the file there).";
    document.documentElement.dataset.exported = String(files.length);
  }

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT");
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (typing(event.target)) {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    var key = event.key;
    var number = "1234".indexOf(key);
    if (number >= 0 && number < classes.length) { decide(classes[number]); }
    else if (key === "0" || key === "d") { decide(D.dispute); }
    else if (key === "u") { undo(); }
    else if (key === "j" || key === "ArrowDown") { go(state.current + 1); }
    else if (key === "k" || key === "ArrowUp") { go(state.current - 1); }
    else if (key === "m") { state.heatmap = !state.heatmap; renderItem(); }
    else if (key === "e") { download(); }
    else if (key === "n") { document.getElementById("note").focus(); }
    else { return; }
    event.preventDefault();
  });
  document.getElementById("queue").addEventListener("click", function (event) {
    var li = event.target.closest("li");
    if (li) { go(Number(li.dataset.index)); }
  });
  document.getElementById("export").addEventListener("click", download);
  var reviewer = document.getElementById("reviewer");
  reviewer.value = window.localStorage ? (window.localStorage.getItem("marco-reviewer") || "") : "";
  reviewer.addEventListener("input", function () {
    try { window.localStorage.setItem("marco-reviewer", reviewer.value); } catch (e) { /* full */ }
  });
  document.getElementById("class-keys").innerHTML = classes.map(function (name, c) {
    return "<kbd>" + (c + 1) + "</kbd> " + V.esc(name); }).join(", ");

  var skipped = D.skipped || {};
  summary.textContent = items.length + " of " + D.considered + " labelled images to review " +
    "(the " + (100 * D.fraction).toFixed(1) + "% the model disagrees with most)" +
    (skipped.unscored ? "; " + skipped.unscored + " could not be scored" : "") +
    (skipped.unlabelled ? "; " + skipped.unlabelled + " have no catalogue label" : "") + ".";
  document.getElementById("source").textContent = "Examples: " + D.examples + "; model: " +
    D.model + (D.model_version !== null ? " (version " + D.model_version + ")" : "");
  render();
  document.documentElement.dataset.ready = "1";
}());
