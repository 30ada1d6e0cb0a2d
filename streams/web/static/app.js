/* touchpath ops page: plain JavaScript, no libraries, no build step, works offline.
 *
 * Every figure comes from a named query through /api/query/<name>; parameters are the
 * defaults declared in the SQL files (/dashboard/queries) overridden by the page's window.
 * Each rendered figure keeps its raw value in a data-raw attribute, so a test can compare
 * what the page shows with what the query returned.
 */
(function () {
  "use strict";

  var REFRESH_MS = 5000;
  var ARROW = "\u2192";
  var DASH = "\u2013";
  var state = { days: 30, customer: "", catalogue: null, busy: false, timer: null };

  // --- small helpers ----------------------------------------------------------------------

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined) return;
        if (k === "text") node.textContent = String(v);
        else if (k === "cls") node.className = v;
        else if (k === "style") node.setAttribute("style", v);
        else node.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    for (var i = 2; i < arguments.length; i++) node.appendChild(arguments[i]);
    return node;
  }

  function fmtInt(n) { return Number(n).toLocaleString("en-US", { maximumFractionDigits: 0 }); }
  function fmtPct(x, digits) { return (100 * Number(x)).toFixed(digits === undefined ? 2 : digits) + "%"; }
  function fmtNum(x, digits) { return Number(x).toFixed(digits === undefined ? 1 : digits); }
  function fmtTime(iso) {
    // API datetimes are ISO 8601 in UTC; show them as "YYYY-MM-DD HH:MM" (UTC)
    return String(iso).replace("T", " ").slice(0, 16);
  }
  function raw(v) { return v === null || v === undefined ? "" : (typeof v === "object" ? JSON.stringify(v) : String(v)); }
  function chan(name) {
    var known = { web: 1, call_centre: 1, store: 1, sms: 1 };
    return el("span", { cls: "chan", style: "--chan: var(--" + (known[name] ? name : "other") + ")", text: name || DASH });
  }
  function color(name) {
    var v = getComputedStyle(document.documentElement).getPropertyValue("--" + name).trim();
    return v || getComputedStyle(document.documentElement).getPropertyValue("--other").trim();
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function empty(node, text) { clear(node).appendChild(el("p", { cls: "empty", text: text || "No data yet." })); }
  function cell(field, value, text, cls) {
    return el("td", { "data-field": field, "data-raw": raw(value), cls: cls || null }, text === undefined ? raw(value) : text);
  }
  function setRows(node, rows) { node.setAttribute("data-rows", String(rows.length)); }

  // --- data ------------------------------------------------------------------------------

  function params(name, extra) {
    var declared = (state.catalogue && state.catalogue[name]) || [];
    var out = {};
    var page = { days: state.days, hours: state.days * 24, period_days: state.days, limit: 20 };
    declared.forEach(function (p) {
      var v = p.name in (extra || {}) ? extra[p.name] : (p.name in page ? page[p.name] : p["default"]);
      out[p.name] = String(v);
    });
    return out;
  }

  function query(name, extra) {
    var qs = new URLSearchParams(params(name, extra)).toString();
    return fetch("/api/query/" + encodeURIComponent(name) + (qs ? "?" + qs : ""), { cache: "no-store" })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(name + ": " + (body.error || r.status));
          return body.rows;
        });
      });
  }

  function loadCatalogue() {
    return fetch("/dashboard/queries", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (c) { state.catalogue = c; });
  }

  // --- panels ----------------------------------------------------------------------------

  function renderTiles(overview, repeat) {
    var o = overview[0] || {};
    function tile(name, value, text, note) {
      var t = document.querySelector('[data-tile="' + name + '"]');
      var v = t.querySelector(".value");
      v.textContent = text;
      v.setAttribute("data-raw", raw(value));
      t.querySelector(".note").textContent = note || "";
    }
    tile("events", o.events, fmtInt(o.events || 0), "distinct touchpoints in ClickHouse");
    tile("dead_letter_rate", o.dead_letter_rate, fmtPct(o.dead_letter_rate || 0),
      fmtInt(o.dead_letters || 0) + " dead letters");
    tile("pain_points", o.pain_points, fmtInt(o.pain_points || 0), "detected, all time");
    tile("care_actions", o.care_actions, fmtInt(o.care_actions || 0),
      fmtInt(o.care_delivered || 0) + " delivered");
    tile("journeys", o.journeys, fmtInt(o.journeys || 0), fmtInt(o.open_journeys || 0) + " open now");
    var r = repeat[0] || {};
    tile("repeat_contact_rate", r.rate, fmtPct(r.rate || 0, 1),
      fmtInt(r.repeat_customers || 0) + " of " + fmtInt(r.contacting_customers || 0) + " contacting");
  }

  function renderVolume(rows) {
    var card = document.getElementById("volume");
    var legend = clear(card.querySelector(".legend"));
    var chart = card.querySelector(".chart");
    setRows(card, rows);
    if (!rows.length) { empty(chart, "No touchpoints landed yet."); return; }
    var hours = [], seen = {}, series = {}, totals = {};
    rows.forEach(function (r) {
      var t = Date.parse(r.hour);
      if (!seen[t]) { seen[t] = 1; hours.push(t); }
      series[r.channel] = series[r.channel] || {};
      series[r.channel][t] = (series[r.channel][t] || 0) + r.events;
      totals[r.channel] = (totals[r.channel] || 0) + r.events;
    });
    hours.sort(function (a, b) { return a - b; });
    var first = hours[0], last = hours[hours.length - 1], H = 3600 * 1000, all = [];
    for (var t = first; t <= last; t += H) all.push(t);
    var channels = Object.keys(series).sort();
    var max = 1;
    channels.forEach(function (c) { all.forEach(function (t) { max = Math.max(max, series[c][t] || 0); }); });

    channels.forEach(function (c) {
      legend.appendChild(el("span", { cls: "key", "data-channel": c },
        el("span", { cls: "swatch", style: "background:" + color(c) }), c + " ",
        el("span", { cls: "total", "data-raw": totals[c], text: fmtInt(totals[c]) })));
    });

    var W = 900, Hh = 220, L = 44, R = 10, T = 10, B = 26;
    var x = function (t) { return L + (all.length === 1 ? (W - L - R) / 2 : (t - first) / (last - first) * (W - L - R)); };
    var y = function (v) { return T + (1 - v / max) * (Hh - T - B); };
    var root = svg("svg", { viewBox: "0 0 " + W + " " + Hh, role: "img", "aria-label": "touchpoints per channel per hour" });
    [0, 0.5, 1].forEach(function (f) {
      var v = Math.round(max * f);
      root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), "class": "axis" }));
      var label = svg("text", { x: L - 6, y: y(v) + 3, "text-anchor": "end", "class": "tick" });
      label.textContent = fmtInt(v);
      root.appendChild(label);
    });
    [first, first + Math.floor(all.length / 2) * H, last].forEach(function (t, i) {
      var label = svg("text", { x: x(t), y: Hh - 8, "text-anchor": ["start", "middle", "end"][i], "class": "tick" });
      label.textContent = fmtTime(new Date(t).toISOString()) + (i === 2 ? " UTC" : "");
      root.appendChild(label);
    });
    channels.forEach(function (c) {
      var d = all.map(function (t, i) { return (i ? "L" : "M") + x(t).toFixed(1) + " " + y(series[c][t] || 0).toFixed(1); }).join(" ");
      root.appendChild(svg("path", { d: d, "class": "line", stroke: color(c), "data-channel": c }));
      if (all.length <= 48) {
        all.forEach(function (t) {
          var dot = svg("circle", { cx: x(t), cy: y(series[c][t] || 0), r: 2.5, fill: color(c) });
          var tip = svg("title", {});
          tip.textContent = c + " " + fmtTime(new Date(t).toISOString()) + ": " + fmtInt(series[c][t] || 0);
          dot.appendChild(tip);
          root.appendChild(dot);
        });
      }
    });
    clear(chart).appendChild(root);
  }

  function renderDead(rows) {
    var card = document.getElementById("dead"), body = card.querySelector(".body");
    setRows(card, rows);
    if (!rows.length) { empty(body, "No dead letters: every record was valid."); return; }
    var table = el("table", null, el("thead", null, el("tr", null,
      el("th", { text: "reason" }), el("th", { cls: "num", text: "dead letters" }), el("th", { cls: "num", text: "rate" }))));
    var tb = el("tbody");
    rows.forEach(function (r) {
      tb.appendChild(el("tr", { "data-key": r.reason },
        cell("reason", r.reason),
        cell("dead_letters", r.dead_letters, fmtInt(r.dead_letters), "num"),
        cell("rate", r.rate, fmtPct(r.rate, 3), "num")));
    });
    table.appendChild(tb);
    clear(body).appendChild(table);
  }

  function renderPain(rows) {
    var card = document.getElementById("pain"), body = card.querySelector(".body");
    setRows(card, rows);
    if (!rows.length) { empty(body, "No pain points detected in this window."); return; }
    var max = Math.max.apply(null, rows.map(function (r) { return r.pain_points; }).concat([1]));
    clear(body);
    rows.forEach(function (r) {
      var cls = r.change > 0 ? "up" : (r.change < 0 ? "down" : "flat");
      var trend = r.change_pct === null ? (r.previous === 0 ? "new" : DASH)
        : (r.change_pct > 0 ? "+" : "") + fmtNum(r.change_pct) + "%";
      body.appendChild(el("div", { cls: "barrow", "data-key": r.rule_id, title: fmtInt(r.customers) + " customers; previous period " + fmtInt(r.previous) },
        el("span", { cls: "name", text: r.rule_id }),
        el("span", { cls: "track" }, el("span", { cls: "fill", style: "display:block;width:" + (100 * r.pain_points / max).toFixed(1) + "%" })),
        el("span", { cls: "num", "data-field": "pain_points", "data-raw": r.pain_points, text: fmtInt(r.pain_points) }),
        el("span", { cls: "trend " + cls, "data-field": "change", "data-raw": r.change, text: trend })));
    });
  }

  var STAGES = ["decided", "held", "sent", "delivered", "suppressed", "failed", "dead_lettered"];

  function renderFunnel(rows, reasons) {
    var card = document.getElementById("funnel"), body = card.querySelector(".body");
    var rbox = card.querySelector(".reasons");
    setRows(card, rows);
    setRows(rbox, reasons);
    if (!rows.length) { empty(body, "No care actions decided in this window."); }
    else {
      var byStatus = {}, byKind = {};
      rows.forEach(function (r) {
        byStatus[r.status] = (byStatus[r.status] || 0) + r.actions;  // an action has one kind
        byKind[r.kind] = byKind[r.kind] || {};
        byKind[r.kind][r.status] = r.actions;
      });
      var decided = byStatus.decided || Math.max.apply(null, Object.keys(byStatus).map(function (k) { return byStatus[k]; }));
      var wrap = el("div", { cls: "funnel" });
      STAGES.concat(Object.keys(byStatus).filter(function (s) { return STAGES.indexOf(s) < 0; })).forEach(function (s) {
        if (!(s in byStatus)) return;
        wrap.appendChild(el("div", { cls: "barrow", "data-key": s },
          el("span", { cls: "name", text: s.replace("_", " ") }),
          el("span", { cls: "track" }, el("span", { cls: "fill", "data-status": s, style: "display:block;width:" + Math.min(100, 100 * byStatus[s] / decided).toFixed(1) + "%" })),
          el("span", { cls: "num", "data-field": "actions", "data-raw": byStatus[s], text: fmtInt(byStatus[s]) })));
      });
      var kinds = Object.keys(byKind).sort();
      var cols = STAGES.filter(function (s) { return s in byStatus; });
      var head = el("tr", null, el("th", { text: "kind" }));
      var table = el("table", { cls: "kinds" }, el("thead", null, head));
      cols.forEach(function (s) { head.appendChild(el("th", { cls: "num", text: s.replace("_", " ") })); });
      var tb = el("tbody");
      kinds.forEach(function (k) {
        var tr = el("tr", { "data-key": k }, cell("kind", k));
        cols.forEach(function (s) { tr.appendChild(cell(s, byKind[k][s] || 0, fmtInt(byKind[k][s] || 0), "num")); });
        tb.appendChild(tr);
      });
      table.appendChild(tb);
      clear(body).appendChild(wrap);
      body.appendChild(table);
    }
    if (!reasons.length) { empty(rbox, "Nothing held, suppressed or failed."); return; }
    var t = el("table", null, el("thead", null, el("tr", null,
      el("th", { text: "status" }), el("th", { text: "reason" }), el("th", { cls: "num", text: "actions" }))));
    var b = el("tbody");
    reasons.forEach(function (r) {
      b.appendChild(el("tr", { "data-key": r.status + "/" + r.reason },
        cell("status", r.status, undefined), cell("reason", r.reason, r.reason || DASH),
        cell("actions", r.actions, fmtInt(r.actions), "num")));
    });
    t.appendChild(b);
    clear(rbox).appendChild(t);
  }

  function renderScore(rows) {
    var card = document.getElementById("score"), body = card.querySelector(".body");
    setRows(card, rows);
    if (!rows.length) { empty(body, "No closed journeys in this window."); return; }
    clear(body);
    rows.forEach(function (r) {
      var scale = el("div", { cls: "scale", title: "p10 " + r.p10 + ", median " + r.median + ", p90 " + r.p90 },
        el("span", { cls: "range", style: "left:" + r.p10 + "%;width:" + Math.max(0.5, r.p90 - r.p10) + "%" }),
        el("span", { cls: "avg", style: "left:" + r.avg_score + "%" }));
      body.appendChild(el("div", { cls: "tier", "data-key": r.tier },
        el("span", { cls: "name", text: r.tier || DASH }),
        scale,
        el("span", { cls: "facts" },
          "avg ", el("b", { "data-field": "avg_score", "data-raw": r.avg_score, text: fmtNum(r.avg_score) }),
          " \u00b7 ", el("b", { "data-field": "journeys", "data-raw": r.journeys, text: fmtInt(r.journeys) }), " journeys",
          el("br"),
          fmtInt(r.poor) + " poor \u00b7 " + fmtInt(r.fair) + " fair \u00b7 " + fmtInt(r.good) + " good")));
    });
  }

  function renderMap(rows) {
    var card = document.getElementById("map"), body = card.querySelector(".body");
    setRows(card, rows);
    if (!rows.length) { empty(body, "No channel switches yet."); return; }
    var max = Math.max.apply(null, rows.map(function (r) { return r.journeys; }).concat([1]));
    var table = el("table", null, el("thead", null, el("tr", null,
      el("th", { text: "from" }), el("th", { text: "" }), el("th", { text: "to" }), el("th", { cls: "num", text: "journeys" }))));
    var tb = el("tbody");
    rows.forEach(function (r) {
      tb.appendChild(el("tr", { "data-key": r.from_channel + ">" + r.to_channel },
        el("td", { "data-field": "from_channel", "data-raw": r.from_channel }, chan(r.from_channel)),
        el("td", { style: "width:35%" }, el("span", { cls: "track", style: "display:block;background:#eef1f5;border-radius:4px;height:8px" },
          el("span", { style: "display:block;height:8px;border-radius:4px;background:var(--accent);width:" + (100 * r.journeys / max).toFixed(1) + "%" }))),
        el("td", { "data-field": "to_channel", "data-raw": r.to_channel }, chan(r.to_channel)),
        cell("journeys", r.journeys, fmtInt(r.journeys), "num")));
    });
    table.appendChild(tb);
    clear(body).appendChild(table);
  }

  function scoreCls(s) { return s < 50 ? "score poor" : (s >= 80 ? "score good" : "score"); }

  function renderWorst(rows) {
    var card = document.getElementById("worst"), body = card.querySelector(".body");
    setRows(card, rows);
    if (!rows.length) { empty(body, "No journeys yet."); return; }
    var table = el("table", null, el("thead", null, el("tr", null,
      el("th", { cls: "num", text: "score" }), el("th", { text: "customer" }), el("th", { text: "tier" }),
      el("th", { text: "outcome" }), el("th", { cls: "num", text: "steps" }), el("th", { text: "channels" }),
      el("th", { text: "pain points" }), el("th", { text: "started" }))));
    var tb = el("tbody");
    rows.forEach(function (r) {
      var link = el("a", { cls: "customer", href: "#customer=" + encodeURIComponent(r.customer_id), text: r.customer_id });
      link.addEventListener("click", function (ev) { ev.preventDefault(); showCustomer(r.customer_id); });
      var channels = el("td", { "data-field": "channels", "data-raw": raw(r.channels) });
      (r.channels || []).forEach(function (c, i) { if (i) channels.appendChild(document.createTextNode(" " + ARROW + " ")); channels.appendChild(chan(c)); });
      var pains = el("td", { "data-field": "pain_points", "data-raw": raw(r.pain_points) });
      (r.pain_points || []).forEach(function (p) { pains.appendChild(el("span", { cls: "pill pain", text: p })); });
      tb.appendChild(el("tr", { "data-key": r.journey_id },
        cell("score", r.score, fmtNum(r.score), "num " + scoreCls(r.score)),
        el("td", { "data-field": "customer_id", "data-raw": r.customer_id }, link),
        cell("tier", r.tier), cell("outcome", r.outcome),
        cell("steps", r.steps, fmtInt(r.steps), "num"),
        channels, pains, cell("started_at", r.started_at, fmtTime(r.started_at))));
    });
    table.appendChild(tb);
    clear(body).appendChild(table);
  }

  function renderCustomer(rows) {
    var card = document.getElementById("customer"), body = card.querySelector(".body");
    setRows(card, rows);
    card.setAttribute("data-customer", state.customer);
    if (!state.customer) { empty(body, "Enter a customer id to see their journeys, touchpoints, pain points and care actions."); return; }
    if (!rows.length) { empty(body, "Nothing known about customer " + state.customer + "."); return; }
    clear(body);
    var groups = {}, order = [];
    rows.forEach(function (r) {
      var key = r.journey_id || "";
      if (!(key in groups)) { groups[key] = { head: null, items: [] }; order.push(key); }
      if (r.item === "journey") groups[key].head = r; else groups[key].items.push(r);
    });
    order.forEach(function (key) {
      var g = groups[key], h = g.head;
      var header = el("header");
      if (h) {
        header.appendChild(el("span", { cls: scoreCls(h.score), "data-field": "score", "data-raw": h.score, text: fmtNum(h.score) }));
        header.appendChild(el("b", { text: h.type }));
        header.appendChild(el("span", { text: "tier " + h.status + " \u00b7 " + fmtInt(h.steps) + " steps \u00b7 " + h.channel.split(" > ").join(" " + ARROW + " ") }));
        header.appendChild(el("span", { cls: "jid", text: h.ref }));
      } else {
        header.appendChild(el("b", { text: "outside any journey" }));
      }
      var list = el("ol", { cls: "timeline" });
      g.items.forEach(function (r) {
        var what = el("div", { cls: "what" });
        if (r.item === "touchpoint") {
          what.appendChild(chan(r.channel));
          what.appendChild(document.createTextNode(" "));
          what.appendChild(el("b", { text: r.type }));
          r.links.forEach(function (rule) { what.appendChild(document.createTextNode(" ")); what.appendChild(el("span", { cls: "pill pain", text: rule })); });
          if (r.detail) what.appendChild(el("div", { cls: "detail", text: r.detail }));
        } else if (r.item === "pain_point") {
          what.appendChild(el("span", { cls: "pill pain", text: "pain point" }));
          what.appendChild(el("b", { text: " " + r.type }));
          what.appendChild(document.createTextNode(" severity " + r.severity + " \u00b7 " + r.channel));
        } else {
          what.appendChild(el("span", { cls: "pill status-" + r.status, text: r.status }));
          what.appendChild(el("b", { text: " " + r.type }));
          what.appendChild(document.createTextNode(" via " + r.channel + " \u00b7 priority " + r.severity));
          if (r.detail) what.appendChild(el("div", { cls: "detail", text: r.detail }));
        }
        list.appendChild(el("li", { cls: r.item, "data-item": r.item, "data-ref": r.ref },
          el("span", { cls: "when", text: fmtTime(r.at) }),
          el("span", { cls: "kind", text: r.item.replace("_", " ") }),
          what));
      });
      body.appendChild(el("section", { cls: "journey", "data-journey": key }, header, list));
    });
  }

  // --- refresh loop ----------------------------------------------------------------------

  function panelError(id, err) {
    var card = document.getElementById(id);
    var body = card.querySelector(".body") || card.querySelector(".chart");
    clear(body).appendChild(el("p", { cls: "panel-error", text: String(err.message || err) }));
  }

  function refresh() {
    if (state.busy) return Promise.resolve();
    state.busy = true;
    var jobs = {
      overview: query("overview"),
      repeat: query("repeat_contact_rate"),
      volume: query("live_volume_by_channel"),
      dead: query("dead_letter_rate"),
      pain: query("top_pain_points"),
      funnel: query("care_funnel"),
      reasons: query("care_suppressions"),
      score: query("experience_score_by_tier"),
      map: query("journey_map"),
      worst: query("worst_journeys"),
      customer: state.customer ? query("customer_journey", { customer_id: state.customer }) : Promise.resolve([])
    };
    var names = Object.keys(jobs);
    return Promise.allSettled(names.map(function (k) { return jobs[k]; })).then(function (results) {
      var got = {}, errors = [];
      results.forEach(function (r, i) {
        if (r.status === "fulfilled") got[names[i]] = r.value; else errors.push(r.reason);
      });
      function run(keys, fn, panel) {
        if (keys.every(function (k) { return k in got; })) {
          try { fn.apply(null, keys.map(function (k) { return got[k]; })); }
          catch (e) { errors.push(e); }
        } else if (panel) {
          panelError(panel, errors[errors.length - 1] || "query failed");
        }
      }
      run(["overview", "repeat"], renderTiles);
      run(["volume"], renderVolume, "volume");
      run(["dead"], renderDead, "dead");
      run(["pain"], renderPain, "pain");
      run(["funnel", "reasons"], renderFunnel, "funnel");
      run(["score"], renderScore, "score");
      run(["map"], renderMap, "map");
      run(["worst"], renderWorst, "worst");
      run(["customer"], renderCustomer, "customer");
      var status = document.getElementById("status");
      var box = document.getElementById("error");
      var now = new Date().toISOString().slice(11, 19) + " UTC";
      if (errors.length) {
        status.setAttribute("data-state", "error");
        status.textContent = "error at " + now;
        box.hidden = false;
        box.textContent = errors.map(function (e) { return String(e.message || e); }).join(" | ");
      } else {
        status.setAttribute("data-state", "ok");
        status.textContent = "updated " + now;
        box.hidden = true;
      }
      document.body.setAttribute("data-refreshed", String(Date.now()));
    }).finally(function () { state.busy = false; });
  }

  function schedule() {
    if (state.timer) clearInterval(state.timer);
    state.timer = document.getElementById("auto").checked ? setInterval(refresh, REFRESH_MS) : null;
  }

  function showCustomer(id) {
    state.customer = String(id || "").trim();
    document.getElementById("customer-id").value = state.customer;
    history.replaceState(null, "", state.customer ? "#customer=" + encodeURIComponent(state.customer) : "#");
    refresh();
    if (state.customer) document.getElementById("customer").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function start() {
    var m = /customer=([^&]+)/.exec(location.hash);
    if (m) { state.customer = decodeURIComponent(m[1]); document.getElementById("customer-id").value = state.customer; }
    document.getElementById("window").addEventListener("change", function (ev) {
      state.days = parseInt(ev.target.value, 10) || 30;
      refresh();
    });
    document.getElementById("auto").addEventListener("change", schedule);
    document.getElementById("lookup").addEventListener("submit", function (ev) {
      ev.preventDefault();
      showCustomer(document.getElementById("customer-id").value);
    });
    state.days = parseInt(document.getElementById("window").value, 10) || 30;
    loadCatalogue().then(refresh, function (err) {
      var box = document.getElementById("error");
      box.hidden = false;
      box.textContent = "cannot load the query catalogue: " + err;
    });
    schedule();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
