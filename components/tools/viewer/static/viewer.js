/* MARCO plate viewer: plate grids, ranked crystals, filters, time course, keys.
 *
 * Plain JavaScript, no libraries: data.js sets window.MARCO_VIEWER_DATA (the
 * format is written by components/tools/viewer/site.py) and this file renders it.
 * The helpers in window.MarcoViewer (colours, number formats, the time-course
 * strip) are there for other pages built in the same style.
 */
(function () {
  "use strict";

  var NONE = "none";  // the class filter's key for images that could not be scored

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function prob(value) { return value === null || value === undefined ? "" : value.toFixed(2); }
  function day(imagedAt) { return imagedAt ? imagedAt.slice(0, 10) : ""; }
  function classKey(image) { return image["class"] || NONE; }
  function fileUrl(path) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(path)) { return path; }
    return "file://" + encodeURI(path).replace(/#/g, "%23").replace(/\?/g, "%3F");
  }

  /* The time-course strip of a drop: thumbnails, dates, crystal probability and a line
   * of the probability over time against the threshold. */
  function timeCourseHTML(images, current, threshold) {
    var items = images.map(function (image, k) {
      var cls = [k === current ? "current" : "", image.crystals > threshold ? "above" : ""];
      return '<li data-step="' + k + '" class="' + cls.join(" ").trim() + '">' +
        (image.thumb ? '<img src="' + esc(image.thumb) + '" alt="" loading="lazy">' : "") +
        '<span class="date">' + esc(day(image.imaged_at) || "no date") + "</span><br>" +
        '<span class="p">' + (image.error ? "error" : prob(image.crystals)) + "</span></li>";
    });
    var width = 300, height = 70, pad = 8;
    var n = images.length;
    function x(k) { return n === 1 ? width / 2 : pad + k * (width - 2 * pad) / (n - 1); }
    function y(p) { return height - pad - p * (height - 2 * pad); }
    var points = [], dots = [];
    images.forEach(function (image, k) {
      if (image.crystals === null || image.crystals === undefined) { return; }
      points.push(x(k).toFixed(1) + "," + y(image.crystals).toFixed(1));
      dots.push('<circle cx="' + x(k).toFixed(1) + '" cy="' + y(image.crystals).toFixed(1) +
        '" r="' + (k === current ? 5 : 3) + '" fill="' +
        (k === current ? "#111" : "var(--crystals)") + '"></circle>');
    });
    var svg = '<svg width="' + width + '" height="' + height + '" role="img" ' +
      'aria-label="crystal probability over time">' +
      '<rect x="0" y="0" width="' + width + '" height="' + height + '" fill="#fafafa"></rect>' +
      '<line x1="0" x2="' + width + '" y1="' + y(threshold).toFixed(1) + '" y2="' +
      y(threshold).toFixed(1) + '" stroke="#999" stroke-dasharray="4 3"></line>' +
      '<polyline fill="none" stroke="var(--crystals)" stroke-width="1.5" points="' +
      points.join(" ") + '"></polyline>' + dots.join("") + "</svg>";
    return '<ol class="series">' + items.join("") + "</ol>" + svg;
  }

  window.MarcoViewer = {esc: esc, prob: prob, day: day, classKey: classKey,
                        fileUrl: fileUrl, timeCourseHTML: timeCourseHTML};

  var D = window.MARCO_VIEWER_DATA;
  if (!D) {
    document.getElementById("summary").textContent =
      "data.js is missing or did not load: rebuild the site with marco view.";
    return;
  }
  var images = D.images, series = D.series, plates = D.plates;
  var state = {
    classes: {}, institution: "", plate: "", date: "", threshold: D.threshold,
    sort: "probability", selected: -1, step: 0, nav: "grid", rankLimit: 100,
    heatmap: true
  };
  D.classes.concat([NONE]).forEach(function (c) { state.classes[c] = true; });

  series.forEach(function (s, i) {
    s.index = i;
    s.items = s.images.map(function (k) { return images[k]; });
  });

  /* The image a drop shows in the grid: at the chosen date, else its latest. */
  function shown(s) {
    if (!state.date) { return s.items[s.items.length - 1]; }
    for (var k = s.items.length - 1; k >= 0; k--) {
      if (day(s.items[k].imaged_at) === state.date) { return s.items[k]; }
    }
    return null;
  }
  function plateName(s) { return s.plate >= 0 ? plates[s.plate].name : ""; }
  function passes(s) {
    var image = shown(s);
    if (!image) { return false; }
    if (!state.classes[classKey(image)]) { return false; }
    if (state.institution && image.institution !== state.institution) { return false; }
    if (state.plate !== "" && plateName(s) !== state.plate) { return false; }
    return true;
  }
  /* Images of a drop that count for the ranking: those of the chosen date, or all. */
  function considered(s) {
    if (!state.date) { return s.items; }
    return s.items.filter(function (image) { return day(image.imaged_at) === state.date; });
  }
  function best(s) {
    var top = null;
    considered(s).forEach(function (image) {
      if (image.crystals !== null && (top === null || image.crystals > top.crystals)) {
        top = image;
      }
    });
    return top;
  }
  function firstAbove(s) {
    var items = considered(s);
    for (var k = 0; k < items.length; k++) {
      if (items[k].crystals !== null && items[k].crystals > state.threshold) {
        return items[k].imaged_at || "";
      }
    }
    return "";
  }
  function where(s) {
    if (s.plate < 0) { return s.items[0].path.split("/").pop(); }
    var text = plates[s.plate].name + " " + s.well;
    return s.drop && s.drop !== "1" ? text + " drop " + s.drop : text;
  }

  /* ------------------------------------------------------------------ rendering */

  function dropHTML(s) {
    var image = shown(s) || s.items[s.items.length - 1];
    var inner = image.thumb
      ? '<img src="' + esc(image.thumb) + '" alt="" loading="lazy" decoding="async">'
      : '<span class="nothumb">&times;</span>';
    var count = s.items.length > 1 ? '<span class="count">' + s.items.length + "</span>" : "";
    return '<div class="drop c-' + classKey(image) + '" data-series="' + s.index + '" title="' +
      esc(where(s) + " " + (image["class"] || "not scored") + " " + prob(image.crystals) +
          (image.imaged_at ? " " + image.imaged_at : "")) + '">' + inner +
      '<span class="prob">' + prob(image.crystals) + "</span>" + count + "</div>";
  }

  /* Plates are drawn when they come near the screen (IntersectionObserver); the first
   * ones at once. Until then a plate is an empty section of its size, so a page of
   * many plates opens as fast as a page of a few. */
  var EAGER_CELLS = 1000;
  var dropElements = [], plateElements = [], filled = [], byPlate = [], unplaced = [];
  var passing = [];

  function gridHTML(p) {
    var plate = plates[p];
    var cells = ['<span class="label"></span>'];
    for (var c = 0; c < plate.columns; c++) {
      cells.push('<span class="label">' + (c + 1) + "</span>");
    }
    for (var r = 0; r < plate.rows; r++) {
      cells.push('<span class="label">' + esc(plate.row_names[r]) + "</span>");
      for (var c2 = 0; c2 < plate.columns; c2++) {
        var members = byPlate[p][r + ":" + c2];
        var name = plate.row_names[r] + (c2 + 1);
        if (!members) {
          cells.push('<div class="well empty" data-well="' + name + '"></div>');
        } else {
          cells.push('<div class="well" data-well="' + name + '">' +
            members.map(dropHTML).join("") + "</div>");
        }
      }
    }
    return cells.join("");
  }

  function fill(p) {
    if (filled[p]) { return; }
    filled[p] = true;
    var holder = plateElements[p].querySelector(".grid, .drops");
    holder.innerHTML = p < plates.length ? gridHTML(p) : unplaced.map(dropHTML).join("");
    holder.classList.remove("pending");
    var nodes = holder.querySelectorAll(".drop");
    for (var i = 0; i < nodes.length; i++) {
      var index = +nodes[i].getAttribute("data-series");
      dropElements[index] = nodes[i];
      if (passing[index]) { refreshDrop(series[index], nodes[i]); }
      nodes[i].classList.toggle("filtered", !passing[index]);
      nodes[i].classList.toggle("selected", index === state.selected);
    }
  }

  function renderPlates() {
    byPlate = plates.map(function () { return {}; });
    series.forEach(function (s) {
      if (s.plate < 0) { unplaced.push(s); return; }
      var key = s.row + ":" + s.column;
      (byPlate[s.plate][key] = byPlate[s.plate][key] || []).push(s);
    });
    var html = plates.map(function (plate, p) {
      return '<section class="plate" data-plate="' + esc(plate.name) + '" data-index="' + p +
        '" data-format="' + plate.format + '"><h2>' + esc(plate.name) + " <small>(" +
        plate.format + " wells" +
        (plate.institutions.length ? ", " + esc(plate.institutions.join(", ")) : "") +
        ")</small></h2>" + '<div class="grid pending" style="--columns:' + plate.columns +
        ";--rows:" + plate.rows + '"></div></section>';
    });
    if (unplaced.length) {
      html.push('<section class="plate unplaced" data-plate="" data-index="' + plates.length +
        '"><h2>Images without a plate and well</h2><div class="drops pending"></div>' +
        "</section>");
    }
    var root = document.getElementById("plates");
    root.innerHTML = html.join("");
    dropElements = new Array(series.length);
    plateElements = root.querySelectorAll(".plate");
    var budget = EAGER_CELLS;
    var observer = "IntersectionObserver" in window ? new IntersectionObserver(
      function (entries) {
        entries.forEach(function (entry) {
          if (entry.isIntersecting) {
            fill(+entry.target.getAttribute("data-index"));
            observer.unobserve(entry.target);
          }
        });
      }, {rootMargin: "800px 0px"}) : null;
    for (var p = 0; p < plateElements.length; p++) {
      var cells = p < plates.length ? plates[p].rows * plates[p].columns : unplaced.length;
      if (budget > 0 || !observer) {
        budget -= cells;
      } else {
        observer.observe(plateElements[p]);
      }
    }
  }

  /* Fills the plates the first screen shows (the rest fill as they come near). */
  function fillFirst() {
    var budget = EAGER_CELLS;
    var all = !("IntersectionObserver" in window);
    for (var p = 0; p < plateElements.length && (budget > 0 || all); p++) {
      budget -= p < plates.length ? plates[p].rows * plates[p].columns : unplaced.length;
      fill(p);
    }
  }

  function plateOf(s) { return s.plate >= 0 ? s.plate : plates.length; }

  function refreshDrop(s, element) {
    var image = shown(s);
    if (!image) { return; }
    var cls = "c-" + classKey(image);
    if (!element.classList.contains(cls)) {
      element.className = element.className.replace(/\bc-[a-z]+\b/, cls);
    }
    var img = element.querySelector("img");
    if (img && image.thumb && img.getAttribute("src") !== image.thumb) {
      img.setAttribute("src", image.thumb);
    }
    element.querySelector(".prob").textContent = prob(image.crystals);
  }

  var visible = [];
  function applyFilters() {
    visible = [];
    var platesShown = {};
    series.forEach(function (s) {
      var element = dropElements[s.index];
      var ok = passes(s);
      passing[s.index] = ok;
      if (ok) { visible.push(s); }
      if (element) {
        if (ok) { refreshDrop(s, element); }
        element.classList.toggle("filtered", !ok);
      }
      var image = shown(s);
      if (image && (!state.institution || image.institution === state.institution)) {
        platesShown[plateName(s)] = true;
      }
    });
    for (var i = 0; i < plateElements.length; i++) {
      var name = plateElements[i].getAttribute("data-plate");
      var wanted = (state.plate === "" || state.plate === name) &&
        (!state.institution || platesShown[name]);
      plateElements[i].classList.toggle("filtered", !wanted);
    }
    document.getElementById("visible-count").textContent = String(visible.length);
    renderRanking();
    if (state.selected >= 0) { renderDetail(); }
  }

  var ranked = [];
  function renderRanking() {
    ranked = [];
    visible.forEach(function (s) {
      var top = best(s);
      if (top && top.crystals > state.threshold) {
        ranked.push({s: s, top: top, first: firstAbove(s)});
      }
    });
    ranked.sort(function (a, b) {
      if (state.sort === "first-date") {
        if (a.first !== b.first) {
          if (!a.first) { return 1; }
          if (!b.first) { return -1; }
          return a.first < b.first ? -1 : 1;
        }
      }
      return (b.top.crystals - a.top.crystals) || (a.s.index - b.s.index);
    });
    document.getElementById("hit-count").textContent = String(ranked.length);
    var list = ranked.slice(0, state.rankLimit).map(function (entry) {
      var s = entry.s, top = entry.top;
      return '<li data-series="' + s.index + '"' +
        (s.index === state.selected ? ' class="selected"' : "") + ">" +
        (top.thumb ? '<img src="' + esc(top.thumb) + '" alt="" loading="lazy">' : "") +
        '<span class="where">' + esc(where(s)) +
        (entry.first ? '<span class="first">first above: ' + esc(entry.first) + "</span>" : "") +
        '</span><span class="p">' + prob(top.crystals) + "</span></li>";
    });
    document.getElementById("rank-list").innerHTML = list.join("");
    var more = document.getElementById("rank-more");
    more.hidden = ranked.length <= state.rankLimit;
    more.textContent = "Show more (" + (ranked.length - state.rankLimit) + " left)";
  }

  function renderDetail() {
    var panel = document.getElementById("detail");
    if (state.selected < 0) {
      panel.innerHTML = '<p class="hint">Click a drop, or press <kbd>j</kbd> / <kbd>k</kbd>.</p>';
      return;
    }
    var s = series[state.selected];
    var image = s.items[state.step];
    var rows = D.classes.map(function (name, c) {
      var p = image.probabilities ? image.probabilities[c] : null;
      return "<tr><td>" + '<span class="swatch c-' + name + '"></span>' + esc(name) +
        '</td><td class="v">' + prob(p) + '</td><td><span class="bar c-' + name +
        '" style="width:' + Math.round((p || 0) * 120) + 'px"></span></td></tr>';
    });
    var heat = image.heatmap
      ? '<img class="heatmap" src="' + esc(image.heatmap) + '" alt="crystal heatmap">' : "";
    panel.innerHTML =
      '<h2 id="detail-where">' + esc(where(s)) + "</h2>" +
      '<div class="big' + (state.heatmap ? "" : " no-heatmap") + '">' +
      (image.thumb ? '<img src="' + esc(image.thumb) + '" alt="drop image">' : "") + heat +
      "</div>" +
      '<p id="detail-time">' + (image.imaged_at ? "imaged " + esc(image.imaged_at) : "no date") +
      " &middot; image " + (state.step + 1) + " of " + s.items.length +
      (image.institution ? " &middot; " + esc(image.institution) : "") + "</p>" +
      '<p>predicted <strong id="detail-class">' + esc(image["class"] || "not scored") +
      '</strong>, crystals <strong id="detail-crystals">' + prob(image.crystals) +
      "</strong></p>" +
      (image.error ? '<p class="error">' + esc(image.error) + "</p>" : "") +
      "<table>" + rows.join("") + "</table>" +
      '<p class="path"><a href="' + esc(fileUrl(image.path)) + '">' + esc(image.path) +
      "</a></p>" + '<div id="timecourse">' + timeCourseHTML(s.items, state.step,
      state.threshold) + "</div>";
  }

  function select(index, nav, step) {
    if (state.selected >= 0 && dropElements[state.selected]) {
      dropElements[state.selected].classList.remove("selected");
    }
    state.selected = index;
    if (nav) { state.nav = nav; }
    if (index >= 0) {
      var s = series[index];
      fill(plateOf(s));
      var image = shown(s);
      state.step = step !== undefined ? step
        : Math.max(0, image ? s.items.indexOf(image) : s.items.length - 1);
      dropElements[index].classList.add("selected");
      if (state.nav === "grid" || !ranked.length) {
        dropElements[index].scrollIntoView({block: "nearest"});
      }
    }
    var items = document.querySelectorAll("#rank-list li");
    for (var i = 0; i < items.length; i++) {
      var on = +items[i].getAttribute("data-series") === index;
      items[i].classList.toggle("selected", on);
      if (on && state.nav === "list") { items[i].scrollIntoView({block: "nearest"}); }
    }
    renderDetail();
  }

  function move(delta) {
    var order = state.nav === "list" && ranked.length
      ? ranked.map(function (entry) { return entry.s; }) : visible;
    if (!order.length) { return; }
    var at = -1;
    for (var i = 0; i < order.length; i++) {
      if (order[i].index === state.selected) { at = i; break; }
    }
    var next = at < 0 ? (delta > 0 ? 0 : order.length - 1)
      : Math.min(order.length - 1, Math.max(0, at + delta));
    if (state.nav === "list" && next >= state.rankLimit) {
      state.rankLimit = next + 100;
      renderRanking();
    }
    select(order[next].index);
  }

  function stepTime(delta) {
    if (state.selected < 0) { return; }
    var s = series[state.selected];
    state.step = Math.min(s.items.length - 1, Math.max(0, state.step + delta));
    renderDetail();
  }

  /* ------------------------------------------------------------------ controls */

  function option(value, label, selected) {
    return '<option value="' + esc(value) + '"' + (selected ? " selected" : "") + ">" +
      esc(label) + "</option>";
  }

  function setUpControls() {
    var fieldset = document.getElementById("class-filter");
    D.classes.concat([NONE]).forEach(function (name) {
      var label = document.createElement("label");
      label.innerHTML = '<input type="checkbox" name="class" value="' + name + '" checked> ' +
        '<span class="swatch c-' + name + '"></span>' + (name === NONE ? "not scored" : name);
      fieldset.appendChild(label);
    });
    fieldset.addEventListener("change", function (event) {
      state.classes[event.target.value] = event.target.checked;
      applyFilters();
    });

    var institutions = {}, dates = {};
    images.forEach(function (image) {
      if (image.institution) { institutions[image.institution] = true; }
      if (image.imaged_at) { dates[day(image.imaged_at)] = true; }
    });
    var institutionSelect = document.getElementById("institution-filter");
    institutionSelect.innerHTML = option("", "all", true) +
      Object.keys(institutions).sort().map(function (n) { return option(n, n); }).join("");
    institutionSelect.disabled = !Object.keys(institutions).length;
    var plateSelect = document.getElementById("plate-filter");
    plateSelect.innerHTML = option("", "all", true) +
      plates.map(function (p) { return option(p.name, p.name); }).join("");
    var dateSelect = document.getElementById("date-filter");
    dateSelect.innerHTML = option("", "latest image", true) +
      Object.keys(dates).sort().map(function (d) { return option(d, d); }).join("");
    dateSelect.disabled = !Object.keys(dates).length;
    institutionSelect.addEventListener("change", function () {
      state.institution = institutionSelect.value; applyFilters();
    });
    plateSelect.addEventListener("change", function () {
      state.plate = plateSelect.value; applyFilters();
    });
    dateSelect.addEventListener("change", function () {
      state.date = dateSelect.value; applyFilters();
    });

    var slider = document.getElementById("threshold");
    var number = document.getElementById("threshold-value");
    slider.value = number.value = String(state.threshold);
    function setThreshold(value) {
      var t = parseFloat(value);
      if (isNaN(t)) { return; }
      state.threshold = Math.min(1, Math.max(0, t));
      slider.value = number.value = String(state.threshold);
      renderRanking();
      if (state.selected >= 0) { renderDetail(); }
    }
    slider.addEventListener("input", function () { setThreshold(slider.value); });
    number.addEventListener("change", function () { setThreshold(number.value); });

    var sort = document.getElementById("rank-sort");
    sort.addEventListener("change", function () { state.sort = sort.value; renderRanking(); });
    document.getElementById("rank-more").addEventListener("click", function () {
      state.rankLimit += 100; renderRanking();
    });

    document.getElementById("plates").addEventListener("click", function (event) {
      var drop = event.target.closest(".drop");
      if (drop) { select(+drop.getAttribute("data-series"), "grid"); }
    });
    document.getElementById("rank-list").addEventListener("click", function (event) {
      var item = event.target.closest("li");
      if (item) { select(+item.getAttribute("data-series"), "list"); }
    });
    document.getElementById("detail").addEventListener("click", function (event) {
      var item = event.target.closest("#timecourse li");
      if (item) { state.step = +item.getAttribute("data-step"); renderDetail(); }
    });

    document.addEventListener("keydown", function (event) {
      var tag = event.target && event.target.tagName;
      if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") { return; }
      if (event.altKey || event.ctrlKey || event.metaKey) { return; }
      var handled = true;
      switch (event.key) {
        case "j": case "n": case "ArrowDown": move(1); break;
        case "k": case "p": case "ArrowUp": move(-1); break;
        case "l": case ".": case "ArrowRight": stepTime(1); break;
        case "h": case ",": case "ArrowLeft": stepTime(-1); break;
        case "m": state.heatmap = !state.heatmap; renderDetail(); break;
        case "Escape": select(-1); break;
        default: handled = false;
      }
      if (handled) { event.preventDefault(); }
    });
  }

  function summary() {
    var scored = 0, dated = 0;
    images.forEach(function (image) {
      if (image.crystals !== null) { scored++; }
      if (image.imaged_at) { dated++; }
    });
    document.getElementById("summary").textContent =
      images.length + " images (" + scored + " scored) in " + series.length + " drops on " +
      plates.length + " plate" + (plates.length === 1 ? "" : "s") +
      (dated ? "; " + dated + " with an imaging time" : "") + ".";
    document.getElementById("source").textContent =
      "From " + D.source + ", built " + D.generated + ".";
  }

  summary();
  setUpControls();
  renderPlates();
  applyFilters();
  fillFirst();
  window.MARCO_VIEWER_RENDERED_MS = performance.now();
  // Ready once the first frame with everything rendered has been laid out and painted.
  requestAnimationFrame(function () {
    setTimeout(function () {
      window.MARCO_VIEWER_READY_MS = performance.now();
      document.documentElement.setAttribute("data-ready", "1");
    }, 0);
  });
})();
