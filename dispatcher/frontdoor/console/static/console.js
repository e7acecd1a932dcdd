// wadispatch console: live tables, plots, confirmations. Served as a static file (the CSP forbids
// inline script). The pages work without it; it only refreshes them and draws the plots.
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var poll = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 2000;

  // Actions ask first; without JavaScript the server shows a confirmation page instead.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
        return;
      }
      var yes = document.createElement("input");
      yes.type = "hidden";
      yes.name = "confirmed";
      yes.value = "yes";
      form.appendChild(yes);
    });
  });

  function cell(c) {
    var td = document.createElement("td");
    if (c.cls) td.className = c.cls;
    if (c.title) td.title = c.title;
    if (c.href) {
      var a = document.createElement("a");
      a.href = c.href;
      a.textContent = c.text;
      td.appendChild(a);
    } else if (c.cls === "spark") {
      var svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("class", "sparkline");
      svg.setAttribute("width", "120");
      svg.setAttribute("height", "18");
      svg.setAttribute("viewBox", "0 0 120 18");
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", c.spark || "");
      svg.appendChild(line);
      td.appendChild(svg);
    } else {
      td.textContent = c.text;
    }
    return td;
  }

  function fillTable(table, data) {
    var body = table.tBodies[0];
    var rows = document.createDocumentFragment();
    data.rows.forEach(function (cells, i) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-key", data.numbers[i]);
      cells.forEach(function (c) { tr.appendChild(cell(c)); });
      rows.appendChild(tr);
    });
    if (!data.rows.length) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = table.tHead.rows[0].cells.length;
      td.textContent = table.getAttribute("data-empty") || "Nothing to show.";
      tr.appendChild(td);
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    // The number page's heading shows its state too.
    var state = document.getElementById("state");
    if (state && table.id === "number" && data.rows.length) {
      var cellState = data.rows[0][3];
      state.textContent = cellState.text;
      state.className = cellState.cls;
    }
    table.setAttribute("data-updated", String(Date.now()));
  }

  var plots = {};

  function column(series, name) { return series[name] || []; }

  function draw(name, el, data, series) {
    if (!window.uPlot || !el) return;
    if (!plots[name]) {
      var width = Math.max(320, el.clientWidth || 480);
      plots[name] = new window.uPlot(
        {
          width: width,
          height: 180,
          scales: { x: { time: true } },
          series: [{}].concat(series.map(function (s) {
            return { label: s[0], stroke: s[1], width: 1.5, spanGaps: false };
          })),
          axes: [{}, { size: 50 }],
        },
        data,
        el
      );
    } else {
      plots[name].setData(data);
    }
  }

  function drawPlots(json) {
    var plot = json.plot;
    if (!plot) return;
    var s = plot.series;
    draw("traffic", document.querySelector("[data-plot=traffic]"),
      [plot.times, column(s, "accepted"), column(s, "sent"), column(s, "delivered"), column(s, "read"), column(s, "failed")],
      [["accepted", "#6b7280"], ["sent", "#2563eb"], ["delivered", "#16a34a"], ["read", "#0d9488"], ["failed", "#dc2626"]]);
    draw("rate", document.querySelector("[data-plot=rate]"),
      [plot.times, column(s, "send_rate"), column(s, "rate")],
      [["in force", "#2563eb"], ["configured", "#9ca3af"]]);
    var lat = json.latency || plot;
    var ls = lat.series;
    draw("latency", document.querySelector("[data-plot=latency]"),
      [lat.times, column(ls, "p50"), column(ls, "p90"), column(ls, "p99")],
      [["p50", "#16a34a"], ["p90", "#d97706"], ["p99", "#dc2626"]]);
  }

  function refresh(table) {
    var url = table.getAttribute("data-live");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (json) {
        if (!json) return;
        fillTable(table, json);
        drawPlots(json);
      })
      .catch(function () { /* the daemon restarts or the network hiccups: try again next time */ });
  }

  document.querySelectorAll("table[data-live]").forEach(function (table) {
    refresh(table);
    window.setInterval(function () {
      if (!document.hidden) refresh(table);
    }, poll);
  });
})();
