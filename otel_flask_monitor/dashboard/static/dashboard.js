// otel-flask-monitor dashboard. Every value from the server is inserted with textContent (never as
// markup): paths, user agents and exception names are attacker-controlled text.
(function () {
  "use strict";

  var body = document.body;
  var statsUrl = body.getAttribute("data-stats-url");
  var healthUrl = body.getAttribute("data-health-url");
  var routeStatsUrl = body.getAttribute("data-route-stats-url");
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 5000;
  var SVG_NS = "http://www.w3.org/2000/svg";

  var sortState = { key: "requests", descending: true };
  var lastStats = null;
  var openRoute = null; // { method, route } of the drill-down shown, if any
  var lastDetail = null;

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(id, value) {
    byId(id).textContent = value;
  }

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  function emptyRow(tbody, columns, text) {
    var row = document.createElement("tr");
    var td = cell(row, text, "muted empty");
    td.colSpan = columns;
    tbody.appendChild(row);
  }

  function number(value, digits) {
    if (value === null || value === undefined || isNaN(value)) {
      return "–";
    }
    return Number(value).toLocaleString(undefined, {
      minimumFractionDigits: digits || 0,
      maximumFractionDigits: digits || 0,
    });
  }

  function ms(value) {
    if (value === null || value === undefined) {
      return "–";
    }
    if (value < 10) {
      return number(value, 2);
    }
    if (value < 100) {
      return number(value, 1);
    }
    return number(value, 0);
  }

  function percent(ratio) {
    return number(ratio * 100, 1) + " %";
  }

  function duration(seconds) {
    seconds = Math.floor(seconds);
    var days = Math.floor(seconds / 86400);
    var hours = Math.floor((seconds % 86400) / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    if (days > 0) {
      return days + " d " + hours + " h";
    }
    if (hours > 0) {
      return hours + " h " + minutes + " min";
    }
    if (minutes > 0) {
      return seconds % 60 ? minutes + " min " + (seconds % 60) + " s" : minutes + " min";
    }
    return seconds + " s";
  }

  function clock(unixSeconds) {
    if (!unixSeconds) {
      return "–";
    }
    return new Date(unixSeconds * 1000).toLocaleTimeString();
  }

  // ---- status, system and export cards -------------------------------------------------------

  // Export connection per signal and over all signals (docs/dashboard.md): a Collector never reached
  // is a state to explain calmly (a demo, a first start); one that went away is an outage.
  var SIGNAL_STATES = {
    pending: ["waiting", "muted"],
    connected: ["ok", "ok-text"],
    never_reached: ["not connected", "muted"],
    lost: ["failing", "error-text"],
  };

  function origins(signals, connection) {
    var found = [];
    signals.forEach(function (signal) {
      if (signal.connection !== connection) {
        return;
      }
      var match = /^([a-z][a-z0-9+.-]*:\/\/[^/]+)/i.exec(signal.endpoint);
      var origin = match ? match[1] : signal.endpoint;
      if (found.indexOf(origin) < 0) {
        found.push(origin);
      }
    });
    return found.join(", ");
  }

  function onlyNotConnected(health) {
    var telemetry = health.telemetry || {};
    var failures = health.internal_failures || {};
    return telemetry.connection === "never_reached" && Object.keys(failures).length === 0;
  }

  function renderPill(health) {
    var pill = byId("status-pill");
    if (health.status === "ok") {
      pill.textContent = "ok";
      pill.className = "pill pill-ok";
    } else if (onlyNotConnected(health)) {
      // The JSON still says "degraded" (telemetry is dropped); the page says why, without alarm.
      pill.textContent = "not connected";
      pill.className = "pill pill-neutral";
    } else {
      pill.textContent = health.status;
      pill.className = "pill pill-degraded";
    }
  }

  function exportSummary(telemetry) {
    var signals = telemetry.signals || [];
    switch (telemetry.connection) {
      case "not_tracked":
        return ["Exporters are configured outside the monitor; their state is not tracked here.", "muted"];
      case "pending":
        return ["Waiting for the first export: spans and log records leave a few seconds after requests arrive, metrics once a minute.", "muted"];
      case "connected":
        return ["All signals exporting to " + origins(signals, "connected") + ".", "ok-text"];
      case "never_reached":
        return [
          "Not connected: no Collector has answered at " + origins(signals, "never_reached") +
            " since start. Telemetry is dropped; this page, health and stats work without one (see Diagnostics).",
          "note-neutral",
        ];
      default:
        var lost = origins(signals, "lost");
        return [
          lost
            ? "Export failing: the Collector at " + lost + " answered before and stopped; telemetry is being dropped."
            : "Export failing: telemetry is being dropped.",
          "error-text",
        ];
    }
  }

  function renderExport(health) {
    var telemetry = health.telemetry || { signals: [] };
    var connection = telemetry.connection || (telemetry.healthy ? "connected" : "failing");
    telemetry.connection = connection;
    var summary = exportSummary(telemetry);
    var summaryNode = byId("export-summary");
    summaryNode.textContent = summary[0];
    summaryNode.className = summary[1];
    byId("export-card").className = connection === "failing" ? "card card-alert" : "card";

    var rows = byId("export-rows");
    clear(rows);
    telemetry.signals.forEach(function (signal) {
      var row = document.createElement("tr");
      var state = SIGNAL_STATES[signal.connection] || (signal.healthy ? SIGNAL_STATES.connected : SIGNAL_STATES.lost);
      cell(row, signal.signal);
      cell(row, state[0], state[1] + " nowrap");
      cell(row, number(signal.exported), "num");
      cell(row, number(signal.failed), "num");
      cell(row, number(signal.dropped), signal.dropped > 0 && connection === "failing" ? "num error-text" : "num");
      cell(row, clock(signal.last_success_unix), "nowrap");
      row.title = signal.endpoint;
      rows.appendChild(row);
    });
    if (!telemetry.signals.length) {
      emptyRow(rows, 6, "no exporter managed by the monitor");
    }
    // An outage shows its error outright; a Collector that was never there keeps it one click away.
    var error = telemetry.last_error ? String(telemetry.last_error) : "";
    var loud = Boolean(error) && connection !== "never_reached";
    var exportError = byId("export-error");
    exportError.hidden = !loud;
    exportError.textContent = loud ? "Last error: " + error : "";
    byId("export-detail").hidden = !error || loud;
    setText("export-detail-text", loud ? "" : error);
  }

  function renderDiagnostics(diagnostics) {
    var list = byId("diagnostics-list");
    clear(list);
    (diagnostics || []).forEach(function (item) {
      var entry = document.createElement("li");
      entry.className = "diagnostic diagnostic-" + (item.severity === "warning" ? "warning" : "info");
      entry.setAttribute("data-code", item.code);
      var head = document.createElement("div");
      head.className = "diagnostic-head";
      var code = document.createElement("code");
      code.textContent = item.code;
      head.appendChild(code);
      var severity = document.createElement("span");
      severity.className = "severity";
      severity.textContent = item.severity;
      head.appendChild(severity);
      entry.appendChild(head);
      var message = document.createElement("p");
      message.className = "diagnostic-message";
      message.textContent = item.message;
      entry.appendChild(message);
      var fix = document.createElement("p");
      fix.className = "diagnostic-fix";
      var label = document.createElement("span");
      label.className = "fix-label";
      label.textContent = "Fix: ";
      fix.appendChild(label);
      fix.appendChild(document.createTextNode(item.fix));
      entry.appendChild(fix);
      list.appendChild(entry);
    });
    byId("diagnostics-empty").hidden = list.childNodes.length > 0;
  }

  function renderHealth(health) {
    renderPill(health);

    var system = health.system_metrics || {};
    var reasons = health.reasons && health.reasons.length ? health.reasons.join("; ") : "ok";
    setText("system-status", onlyNotConnected(health) ? "ok, not exporting" : reasons);
    setText("system-cpu", number(system.cpu_percent, 1) + " %");
    setText("system-memory", number(system.memory_rss_mb, 1) + " MB");
    setText("system-memory-percent", number(system.memory_percent, 1) + " %");
    setText("system-threads", number(system.threads));
    setText("system-uptime", duration(health.uptime_seconds));
    setText("system-pid", String(system.pid));

    renderExport(health);
    renderDiagnostics(health.diagnostics);

    var failures = health.internal_failures || {};
    var names = Object.keys(failures);
    setText(
      "internal-failures",
      names.length
        ? "Internal monitor failures: " + names.map(function (name) { return name + " × " + failures[name]; }).join(", ")
        : "No internal monitor failures."
    );
  }

  // ---- traffic card, routes table, error lists -------------------------------------------------

  function renderTotals(stats) {
    var totals = stats.totals;
    setText("window-label", duration(stats.window_seconds));
    setText("total-requests", number(totals.requests));
    setText("total-rps", number(totals.requests_per_second, 2) + " req/s");
    setText("total-error-rate", percent(totals.error_rate));
    setText("total-server-errors", number(totals.server_errors));
    var latency = totals.latency_ms;
    setText("total-latency", ms(latency.p50) + " / " + ms(latency.p95) + " / " + ms(latency.p99) + " ms");
  }

  function sortValue(route, key) {
    if (key === "p50" || key === "p95" || key === "p99") {
      var value = route.latency_ms[key];
      return value === null ? -1 : value;
    }
    return route[key];
  }

  function sortedRoutes(routes) {
    var key = sortState.key;
    var sign = sortState.descending ? -1 : 1;
    return routes.slice().sort(function (a, b) {
      var left = sortValue(a, key);
      var right = sortValue(b, key);
      if (left < right) {
        return -sign;
      }
      if (left > right) {
        return sign;
      }
      return b.requests - a.requests;
    });
  }

  function renderRoutes(stats) {
    var tbody = byId("routes-rows");
    clear(tbody);
    var routes = sortedRoutes(stats.routes);
    routes.forEach(function (route) {
      var row = document.createElement("tr");
      row.setAttribute("data-route", route.route);
      row.setAttribute("data-method", route.method);
      cell(row, route.method, "method");
      routeButtonCell(row, route);
      cell(row, number(route.requests), "num requests");
      cell(row, number(route.requests_per_second, 2), "num");
      var errors = route.client_errors + route.server_errors;
      var errorCell = cell(row, percent(route.error_rate), route.server_errors > 0 ? "num error-text" : "num");
      errorCell.title = route.client_errors + " client (4xx), " + route.server_errors + " server (5xx)";
      if (errors === 0) {
        errorCell.className = "num muted";
      }
      cell(row, ms(route.latency_ms.p50), "num");
      cell(row, ms(route.latency_ms.p95), "num");
      cell(row, ms(route.latency_ms.p99), "num");
      tbody.appendChild(row);
    });
    if (!routes.length) {
      emptyRow(tbody, 8, "No requests in the window yet.");
    }
    var note = "Tracking " + stats.tracked_routes + " of at most " + stats.max_routes + " method/route pairs";
    setText("routes-note", note + "; more share the row <other>, unmatched paths share <unmatched>.");

    var headers = document.querySelectorAll("#routes-table th[data-key]");
    Array.prototype.forEach.call(headers, function (th) {
      var key = th.getAttribute("data-key");
      if (key === sortState.key) {
        th.setAttribute("aria-sort", sortState.descending ? "descending" : "ascending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
  }

  function requestCell(row, error, showPath) {
    var td = document.createElement("td");
    td.className = "request";
    var method = document.createElement("span");
    method.className = "method";
    method.textContent = error.method + " ";
    td.appendChild(method);
    var target = document.createElement("span");
    target.className = "route";
    target.textContent = showPath ? error.path : error.route;
    td.appendChild(target);
    if (showPath && error.route !== error.path) {
      var route = document.createElement("div");
      route.className = "muted small";
      route.textContent = error.route;
      td.appendChild(route);
    }
    row.appendChild(td);
  }

  // The server fills trace_url_template in (docs/dashboard.md) and sends only http(s) links; the
  // check here keeps any other scheme out of an href even if a proxy or a bug changed that.
  function traceCell(row, entry) {
    var td = cell(row, "", "trace-id");
    var url = entry.trace_url;
    if (!entry.trace_id) {
      td.textContent = "–";
    } else if (typeof url === "string" && /^https?:\/\//i.test(url)) {
      var link = document.createElement("a");
      link.textContent = entry.trace_id;
      link.setAttribute("href", url);
      link.setAttribute("target", "_blank");
      link.setAttribute("rel", "noopener noreferrer");
      link.setAttribute("title", "Open the trace");
      td.appendChild(link);
    } else {
      td.textContent = entry.trace_id;
    }
    return td;
  }

  function renderErrors(stats) {
    var server = byId("server-error-rows");
    clear(server);
    stats.recent_errors.forEach(function (error) {
      var row = document.createElement("tr");
      cell(row, clock(error.time_unix));
      requestCell(row, error, false);
      cell(row, String(error.status_code), "num error-text");
      cell(row, error.exception_type || "–");
      traceCell(row, error);
      server.appendChild(row);
    });
    if (!stats.recent_errors.length) {
      emptyRow(server, 5, "No server errors recorded.");
    }

    var client = byId("client-error-rows");
    clear(client);
    stats.recent_client_errors.forEach(function (error) {
      var row = document.createElement("tr");
      cell(row, clock(error.time_unix));
      requestCell(row, error, true);
      cell(row, String(error.status_code), "num");
      cell(row, error.user_agent || "–", "user-agent");
      traceCell(row, error);
      client.appendChild(row);
    });
    if (!stats.recent_client_errors.length) {
      emptyRow(client, 5, "No client errors recorded.");
    }
  }

  var ENDPOINT_STATES = {
    false: ["never called", "muted"],
    null: ["maybe called (under <other>)", "muted"],
  };

  function renderEndpoints(stats) {
    var endpoints = stats.endpoints || [];
    var tbody = byId("unused-rows");
    clear(tbody);
    var shown = 0;
    endpoints.forEach(function (endpoint) {
      if (endpoint.called === true) {
        return;
      }
      var row = document.createElement("tr");
      row.setAttribute("data-rule", endpoint.rule);
      row.setAttribute("data-method", endpoint.method);
      var state = ENDPOINT_STATES[String(endpoint.called)];
      cell(row, endpoint.method, "method");
      cell(row, endpoint.rule, "route");
      cell(row, endpoint.endpoint, "endpoint-name");
      cell(row, state[0], state[1] + " nowrap state");
      tbody.appendChild(row);
      shown += 1;
    });
    if (!shown) {
      emptyRow(tbody, 4, stats.endpoints_total ? "Every endpoint was called in the window." : "The app has no endpoints of its own.");
    }
    var total = stats.endpoints_total || 0;
    var notCalled = stats.endpoints_not_called || 0;
    var unknown = total - notCalled - (stats.endpoints_called || 0);
    var text = notCalled + " of " + total + " endpoints (method and URL rule) not called in the last " + duration(stats.window_seconds) + ".";
    if (unknown > 0) {
      text += " " + unknown + " more cannot be told: their requests may be among those beyond max_routes, counted under <other>.";
    }
    if (endpoints.length < total) {
      text += " Listing " + endpoints.length + " of " + total + " (max_routes), the never-called first.";
    }
    setText("unused-summary", text);
  }

  // ---- chart ----------------------------------------------------------------------------------

  function svg(name, attributes, parent) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attributes).forEach(function (key) {
      node.setAttribute(key, String(attributes[key]));
    });
    if (parent) {
      parent.appendChild(node);
    }
    return node;
  }

  function svgText(parent, x, y, text, anchor, className) {
    var node = svg("text", { x: x, y: y, "text-anchor": anchor || "start", class: className || "axis-label" }, parent);
    node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) {
      return 1;
    }
    var magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i += 1) {
      if (value <= steps[i] * magnitude) {
        return steps[i] * magnitude;
      }
    }
    return 10 * magnitude;
  }

  function latencyPath(points) {
    var path = "";
    var drawing = false;
    points.forEach(function (point) {
      if (point === null) {
        drawing = false;
        return;
      }
      path += (drawing ? " L" : " M") + point[0].toFixed(1) + " " + point[1].toFixed(1);
      drawing = true;
    });
    return path.trim();
  }

  function renderChart(stats) {
    drawChart(byId("chart"), stats.timeline, stats.slot_seconds);
  }

  // A timeline (slots with requests, server_errors and latency_ms.p50/p95) as bars and lines.
  function drawChart(container, timeline, slotSeconds) {
    var width = Math.max(container.clientWidth, 280);
    var height = width < 600 ? 180 : 240;
    var margin = { top: 24, right: 48, bottom: 24, left: 44 };
    var plotWidth = width - margin.left - margin.right;
    var plotHeight = height - margin.top - margin.bottom;

    var maxRps = niceMax(Math.max.apply(null, timeline.map(function (s) { return s.requests / slotSeconds; }).concat([0])));
    var maxLatency = niceMax(Math.max.apply(null, timeline.map(function (s) { return s.latency_ms.p95 || 0; }).concat([0])));

    var root = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, class: "chart-svg" });
    var plot = svg("g", { transform: "translate(" + margin.left + "," + margin.top + ")" }, root);

    [0, 0.5, 1].forEach(function (fraction) {
      var y = plotHeight - fraction * plotHeight;
      svg("line", { x1: 0, x2: plotWidth, y1: y, y2: y, class: "grid" }, plot);
      svgText(plot, -6, y + 4, number(maxRps * fraction, maxRps < 10 ? 1 : 0), "end");
      svgText(plot, plotWidth + 6, y + 4, ms(maxLatency * fraction), "start");
    });
    svgText(plot, -6, -12, "req/s", "end", "axis-unit");
    svgText(plot, plotWidth + 6, -12, "ms", "start", "axis-unit");

    var step = plotWidth / Math.max(timeline.length, 1);
    var barWidth = Math.max(step - 1, 1);
    var p50 = [];
    var p95 = [];
    timeline.forEach(function (slot, index) {
      var x = index * step;
      var rps = slot.requests / slotSeconds;
      if (slot.requests > 0) {
        var barHeight = Math.max((rps / maxRps) * plotHeight, 1);
        svg("rect", { x: x, y: plotHeight - barHeight, width: barWidth, height: barHeight, class: "bar-requests" }, plot);
        if (slot.server_errors > 0) {
          var errorHeight = Math.max((slot.server_errors / slotSeconds / maxRps) * plotHeight, 1);
          svg("rect", { x: x, y: plotHeight - errorHeight, width: barWidth, height: errorHeight, class: "bar-errors" }, plot);
        }
      }
      var center = x + step / 2;
      var latency = slot.latency_ms;
      p50.push(latency.p50 === null ? null : [center, plotHeight - (latency.p50 / maxLatency) * plotHeight]);
      p95.push(latency.p95 === null ? null : [center, plotHeight - (latency.p95 / maxLatency) * plotHeight]);
    });
    svg("path", { d: latencyPath(p95), class: "line-p95" }, plot);
    svg("path", { d: latencyPath(p50), class: "line-p50" }, plot);
    // Dots too: a slot with traffic between two idle ones has no line to draw.
    [[p95, "dot-p95"], [p50, "dot-p50"]].forEach(function (series) {
      series[0].forEach(function (point) {
        if (point !== null) {
          svg("circle", { cx: point[0].toFixed(1), cy: point[1].toFixed(1), r: 2.5, class: series[1] }, plot);
        }
      });
    });

    if (timeline.length) {
      svgText(plot, 0, plotHeight + 16, clock(timeline[0].start_unix), "start");
      svgText(plot, plotWidth, plotHeight + 16, "now", "end");
    }
    clear(container);
    container.appendChild(root);
  }

  // ---- route drill-down (GET <prefix>/stats/route) ---------------------------------------------

  function routeButtonCell(row, route) {
    var td = document.createElement("td");
    td.className = "route";
    var button = document.createElement("button");
    button.type = "button";
    button.className = "route-open";
    button.textContent = route.route;
    button.title = "Show the detail of " + route.method + " " + route.route;
    var isOpen = openRoute !== null && openRoute.method === route.method && openRoute.route === route.route;
    button.setAttribute("aria-expanded", isOpen ? "true" : "false");
    button.setAttribute("aria-controls", "route-detail");
    button.addEventListener("click", function () {
      openDetail({ method: route.method, route: route.route });
    });
    td.appendChild(button);
    row.appendChild(td);
  }

  function detailUrl(key) {
    var query = new URLSearchParams({ method: key.method, route: key.route });
    return routeStatsUrl + "?" + query.toString();
  }

  function openDetail(key) {
    openRoute = key;
    lastDetail = null;
    var panel = byId("route-detail");
    panel.hidden = false;
    setText("detail-title", key.method + " " + key.route);
    setText("detail-state", "loading…");
    if (lastStats) {
      renderRoutes(lastStats);
    }
    loadDetail().then(function () {
      panel.scrollIntoView({ block: "nearest" });
      byId("detail-close").focus();
    });
  }

  function closeDetail() {
    var key = openRoute;
    openRoute = null;
    lastDetail = null;
    byId("route-detail").hidden = true;
    if (lastStats) {
      renderRoutes(lastStats);
    }
    if (key) {
      var buttons = document.querySelectorAll("#routes-rows button.route-open");
      Array.prototype.forEach.call(buttons, function (button) {
        var row = button.parentNode.parentNode;
        if (row.getAttribute("data-method") === key.method && row.getAttribute("data-route") === key.route) {
          button.focus();
        }
      });
    }
  }

  function loadDetail() {
    var key = openRoute;
    if (key === null) {
      return Promise.resolve();
    }
    return fetch(detailUrl(key), { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404) {
          return null;
        }
        if (!response.ok) {
          throw new Error("the route detail answered " + response.status);
        }
        return response.json();
      })
      .then(function (detail) {
        if (openRoute !== key) {
          return; // another route was opened meanwhile
        }
        lastDetail = detail;
        renderDetail(detail);
      })
      .catch(function (error) {
        setText("detail-state", "Could not load: " + error.message);
      });
  }

  function renderDetail(detail) {
    if (detail === null) {
      setText("detail-state", "No request of this route in the window any more.");
      byId("detail-body").hidden = true;
      return;
    }
    byId("detail-body").hidden = false;
    var summary = detail.summary;
    setText(
      "detail-state",
      number(summary.requests) + " requests · " + number(summary.requests_per_second, 2) + " req/s · " +
        summary.client_errors + " client (4xx) / " + summary.server_errors + " server (5xx) errors · p50 / p95 / p99 " +
        ms(summary.latency_ms.p50) + " / " + ms(summary.latency_ms.p95) + " / " + ms(summary.latency_ms.p99) + " ms"
    );
    drawChart(byId("detail-chart"), detail.timeline, detail.slot_seconds);
    renderStatusCodes(detail.status_codes);
    drawHistogram(byId("detail-histogram"), detail.latency_histogram);
    renderSlowest(detail.slowest);
  }

  function renderStatusCodes(codes) {
    var tbody = byId("detail-status-rows");
    clear(tbody);
    var total = codes.reduce(function (sum, code) { return sum + code.requests; }, 0);
    codes.forEach(function (code) {
      var row = document.createElement("tr");
      var status = code.status_code;
      cell(row, status === null ? "other" : String(status), status !== null && status >= 500 ? "num error-text" : "num");
      cell(row, number(code.requests), "num");
      cell(row, percent(total ? code.requests / total : 0), "num");
      tbody.appendChild(row);
    });
  }

  function drawHistogram(container, bars) {
    var width = Math.max(container.clientWidth, 240);
    var height = 160;
    var margin = { top: 12, right: 12, bottom: 24, left: 44 };
    var plotWidth = width - margin.left - margin.right;
    var plotHeight = height - margin.top - margin.bottom;
    var maxCount = niceMax(Math.max.apply(null, bars.map(function (bar) { return bar.requests; }).concat([0])));
    var root = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, class: "chart-svg" });
    var plot = svg("g", { transform: "translate(" + margin.left + "," + margin.top + ")" }, root);
    [0, 1].forEach(function (fraction) {
      var y = plotHeight - fraction * plotHeight;
      svg("line", { x1: 0, x2: plotWidth, y1: y, y2: y, class: "grid" }, plot);
      svgText(plot, -6, y + 4, number(maxCount * fraction), "end");
    });
    var step = plotWidth / Math.max(bars.length, 1);
    bars.forEach(function (bar, index) {
      if (bar.requests > 0) {
        var barHeight = Math.max((bar.requests / maxCount) * plotHeight, 1);
        var rect = svg("rect", { x: index * step, y: plotHeight - barHeight, width: Math.max(step - 1, 1), height: barHeight, class: "bar-requests" }, plot);
        var title = svg("title", {}, rect);
        title.textContent = ms(bar.from_ms) + "–" + ms(bar.to_ms) + " ms: " + bar.requests + " requests";
      }
    });
    if (bars.length) {
      svgText(plot, 0, plotHeight + 16, ms(bars[0].from_ms) + " ms", "start");
      svgText(plot, plotWidth, plotHeight + 16, ms(bars[bars.length - 1].to_ms) + " ms", "end");
    }
    clear(container);
    container.appendChild(root);
  }

  function renderSlowest(slowest) {
    var tbody = byId("detail-slowest-rows");
    clear(tbody);
    slowest.forEach(function (entry) {
      var row = document.createElement("tr");
      cell(row, clock(entry.time_unix));
      requestCell(row, entry, true);
      cell(row, String(entry.status_code), entry.status_code >= 500 ? "num error-text" : "num");
      cell(row, ms(entry.duration_ms) + " ms", "num");
      traceCell(row, entry);
      tbody.appendChild(row);
    });
    if (!slowest.length) {
      emptyRow(tbody, 5, "No request recorded.");
    }
  }

  byId("detail-close").addEventListener("click", closeDetail);
  byId("route-detail").addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      closeDetail();
    }
  });

  // ---- objectives (the "objectives" list of /stats) ------------------------------------------

  function objectiveText(objective) {
    if (objective.objective === "latency") {
      return objective.target_percent + " % within " + ms(objective.threshold_ms) + " ms";
    }
    return objective.target_percent + " % without a server error";
  }

  function burnText(value) {
    return value === null || value === undefined ? "–" : number(value, value < 10 ? 2 : 1) + "×";
  }

  function renderObjectives(stats) {
    var objectives = stats.objectives || [];
    var panel = byId("objectives-panel");
    panel.hidden = objectives.length === 0;
    var tbody = byId("objective-rows");
    clear(tbody);
    objectives.forEach(function (objective) {
      var row = document.createElement("tr");
      row.setAttribute("data-route", objective.route);
      row.setAttribute("data-objective", objective.objective);
      if (objective.burning) {
        row.className = "burning";
      }
      cell(row, objective.method, "method");
      cell(row, objective.route, "route");
      cell(row, objectiveText(objective));
      cell(row, objective.attained_ratio === null ? "–" : percent(objective.attained_ratio), "num");
      cell(row, objective.error_budget_left === null ? "–" : percent(objective.error_budget_left), objective.error_budget_left !== null && objective.error_budget_left < 0 ? "num error-text" : "num");
      cell(row, burnText(objective.last_5m.burn_rate), "num");
      cell(row, burnText(objective.burn_rate), "num");
      cell(row, objective.burning ? "burning" : "ok", objective.burning ? "error-text" : "ok-text");
      tbody.appendChild(row);
    });
  }

  // ---- refresh loop ---------------------------------------------------------------------------

  function fetchJson(url) {
    return fetch(url, { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (response) {
        if (!response.ok) {
          throw new Error(url + " answered " + response.status);
        }
        return response.json();
      }
    );
  }

  function showError(message) {
    var banner = byId("fetch-error");
    banner.hidden = !message;
    banner.textContent = message ? "Could not refresh: " + message + " (showing the last data received)" : "";
  }

  function refresh() {
    Promise.all([fetchJson(statsUrl), fetchJson(healthUrl)])
      .then(function (results) {
        lastStats = results[0];
        renderTotals(lastStats);
        renderRoutes(lastStats);
        renderErrors(lastStats);
        renderEndpoints(lastStats);
        renderChart(lastStats);
        renderObjectives(lastStats);
        renderHealth(results[1]);
        return loadDetail();
        setText("updated", "updated " + new Date().toLocaleTimeString());
        showError("");
      })
      .catch(function (error) {
        showError(error.message);
      })
      .then(function () {
        window.setTimeout(refresh, refreshMs);
      });
  }

  Array.prototype.forEach.call(document.querySelectorAll("#routes-table th[data-key] button"), function (button) {
    button.addEventListener("click", function () {
      var key = button.parentNode.getAttribute("data-key");
      if (sortState.key === key) {
        sortState.descending = !sortState.descending;
      } else {
        sortState.key = key;
        sortState.descending = key !== "method" && key !== "route";
      }
      if (lastStats) {
        renderRoutes(lastStats);
      }
    });
  });

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () {
      if (lastStats) {
        renderChart(lastStats);
      }
      if (lastDetail) {
        renderDetail(lastDetail);
      }
    }, 150);
  });

  refresh();
})();
