/* kind "dashboard": one feature's or neuron's dashboard (probes.sae.FeatureDashboard.to_view).
   data: {unit, label, layer, index, hook, frequency, max_activation, n_tokens, n_texts,
          contexts: [{text, tokens: [str], pos, activation, activations: [per token]}],
          value_top / value_bottom: [[token, logit]], key_sources: [[source, value]] | null,
          key_pre_activation, histogram: {counts: [bins], edges: [bins + 1]}}.
   Draws: a header; the top contexts as token strips shaded by activation (hover: the value; the
   top token outlined); the value's promoted / suppressed tokens as bars of their logits; the key
   at the top context by source as signed bars summing to the pre-activation; the histogram.
   Everything stays inside `root` (no ids), so it works embedded: InterpViews.mount(el, payload).
   DOM hooks: .iv-dash-token[data-pos][data-activation][data-top], .iv-dash-context[data-rank],
   .iv-dash-row[data-token][data-logit], .iv-dash-source[data-source][data-value],
   .iv-dash-sum[data-sum], .iv-dash-bin[data-count][data-lo][data-hi]. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var BEFORE = 24, AFTER = 8, MAX_SOURCES = 20;
  var MONO = "font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: 12px;";

  function pct(f) { return (100 * f).toPrecision(3).replace(/\.?0+$/, "") + "%"; }

  function header(data) {
    return IV.el("div", { class: "iv-dash-header", "data-label": data.label, "data-hook": data.hook,
      "data-frequency": data.frequency, "data-max": data.max_activation, style: "margin: 0 0 6px;" },
      IV.el("span", { class: "iv-dash-label", style: "font-weight: 600; font-size: 15px;" }, data.unit + " " + data.label),
      " ", IV.el("code", { class: "iv-muted" }, data.hook),
      IV.el("div", { class: "iv-dash-stats", style: "font-size: 12px; color: #333;" },
        "fires on " + pct(data.frequency) + " of " + data.n_tokens + " tokens (" + data.n_texts + " texts)  \u00b7  " +
        "max activation " + IV.fmt(data.max_activation, 5)));
  }

  /* One context: the tokens around its top position, each shaded by activation / the unit's max. */
  function strip(c, rank, scale, tip) {
    var first = Math.max(0, c.pos - BEFORE), last = Math.min(c.tokens.length, c.pos + AFTER + 1);
    var cells = [];
    if (first > 0) cells.push(IV.el("span", { class: "iv-muted" }, "\u2026 "));
    for (var p = first; p < last; p++) {
      (function (p) {
        var a = c.activations[p], top = p === c.pos;
        cells.push(IV.el("span", {
          class: "iv-token iv-dash-token" + (top ? " iv-selected" : ""), "data-pos": p, "data-activation": a,
          "data-top": top ? "1" : null,
          style: "background:" + IV.color(a, scale) + "; color:" + IV.textColor(a, scale) +
            "; border: 1px solid #e4e4e4;" + (top ? " font-weight: 700;" : ""),
          on: {
            mousemove: function (e) {
              tip.show(e, IV.token(c.tokens[p]) + " (" + p + ")\nactivation " + IV.fmt(a, 6));
            },
            mouseleave: tip.hide
          }
        }, IV.token(c.tokens[p])));
      })(p);
    }
    if (last < c.tokens.length) cells.push(IV.el("span", { class: "iv-muted" }, " \u2026"));
    return IV.el("div", { class: "iv-dash-context", "data-rank": rank, "data-activation": c.activation,
      "data-pos": c.pos, title: c.text, style: "display: flex; align-items: center; flex-wrap: wrap; margin: 1px 0;" },
      IV.el("span", { class: "iv-dash-context-value", style: MONO + " width: 64px; text-align: right; margin-right: 8px;" },
        IV.fmt(c.activation, 4)),
      IV.el("span", null, cells));
  }

  function panel(title, cls, content) {
    return IV.el("div", { class: "iv-panel " + cls, style: "flex: 1 1 300px; min-width: 260px;" },
      IV.el("h4", null, title), content);
  }

  /* A bar from the middle (signed) or from the left (one-sided), `width` px, value / scale. */
  function bar(v, scale, signed, width) {
    var frac = Math.min(1, Math.abs(v) / (scale || 1)), color = IV.color(v >= 0 ? 1 : -1, 1);
    var half = signed ? width / 2 : width, len = Math.max(frac * half, v === 0 ? 0 : 1);
    var left = signed ? (v >= 0 ? half : half - len) : 0;
    return IV.el("span", { class: "iv-dash-bar", style: "position: relative; display: inline-block; height: 12px; width: " +
      width + "px; background: #f4f4f4; margin: 0 6px; flex: none;" },
      signed ? IV.el("span", { style: "position: absolute; left: " + half + "px; top: -1px; bottom: -1px; width: 1px; background: #999;" }) : null,
      IV.el("span", { style: "position: absolute; top: 0; height: 12px; left: " + left + "px; width: " + len +
        "px; background: " + color + ";" }));
  }

  function row(cls, attrs, label, v, scale, signed, tip, hoverText) {
    attrs.class = cls;
    attrs.style = "display: flex; align-items: center; margin: 1px 0;";
    attrs.on = { mousemove: function (e) { tip.show(e, hoverText); }, mouseleave: tip.hide };
    return IV.el("div", attrs,
      IV.el("span", { class: "iv-dash-name", style: MONO + " flex: none; width: 120px; overflow: hidden; text-overflow: ellipsis; white-space: pre;" },
        label),
      bar(v, scale, signed, signed ? 180 : 130),
      IV.el("span", { class: "iv-dash-number", style: MONO + " flex: none; min-width: 64px;" }, (v > 0 && signed ? "+" : "") + IV.fmt(v, 4)));
  }

  function valueLists(data, tip) {
    var top = data.value_top || [], bottom = data.value_bottom || [];
    if (!top.length && !bottom.length) return panel("value", "iv-dash-value", IV.el("div", { class: "iv-muted" }, "no value logits"));
    var scale = IV.maxAbs(top.concat(bottom).map(function (r) { return r[1]; }));
    function list(rows, which) {
      return IV.el("div", { class: "iv-dash-" + which },
        IV.el("div", { style: "font-size: 12px; color: #333; margin: 2px 0;" }, which),
        rows.map(function (r, i) {
          return row("iv-dash-row", { "data-token": r[0], "data-logit": r[1], "data-rank": i }, IV.token(r[0]), r[1], scale,
            false, tip, IV.token(r[0]) + "\nlogit " + IV.fmt(r[1], 6) + " per unit activation");
        }));
    }
    return panel("value: logits per unit activation", "iv-dash-value",
      IV.el("div", { style: "display: flex; gap: 14px; flex-wrap: wrap;" }, list(top, "promoted"), list(bottom, "suppressed")));
  }

  /* Sources in their order (tokens by position, then position, MLPs, biases); beyond MAX_SOURCES
     the smallest are summed into one "other" row, so the rows still add up to the sum. */
  function keySources(data, tip) {
    var src = data.key_sources;
    if (!src || !src.length) return panel("key", "iv-dash-key", IV.el("div", { class: "iv-muted" }, "no key sources"));
    var shown = src;
    if (src.length > MAX_SOURCES) {
      var keep = src.map(function (s, i) { return i; })
        .sort(function (a, b) { return Math.abs(src[b][1]) - Math.abs(src[a][1]); }).slice(0, MAX_SOURCES - 1);
      var kept = {}, other = 0, n = 0;
      keep.forEach(function (i) { kept[i] = true; });
      shown = src.filter(function (s, i) { if (!kept[i]) { other += s[1]; n++; } return kept[i]; });
      shown.push(["other (" + n + " sources)", other]);
    }
    var sum = src.reduce(function (t, s) { return t + s[1]; }, 0);
    var scale = IV.maxAbs(shown.map(function (s) { return s[1]; }));
    return panel("key at the top context, by source", "iv-dash-key", IV.el("div", null,
      shown.map(function (s) {
        return row("iv-dash-source", { "data-source": s[0], "data-value": s[1] }, IV.token(s[0]), s[1], scale, true, tip,
          IV.token(s[0]) + "\n" + IV.fmt(s[1], 6) + " of the pre-activation");
      }),
      IV.el("div", { class: "iv-dash-sum", "data-sum": sum, "data-pre-activation": data.key_pre_activation,
        style: "margin-top: 4px; font-size: 12px; border-top: 1px solid #ddd; padding-top: 2px;" },
        "sum " + IV.fmt(sum, 5) + " = pre-activation " + IV.fmt(data.key_pre_activation, 5))));
  }

  function histogram(data, tip) {
    var counts = (data.histogram || {}).counts || [], edges = (data.histogram || {}).edges || [];
    var total = counts.reduce(function (t, c) { return t + c; }, 0);
    if (!counts.length || !total) return panel("activations", "iv-dash-hist", IV.el("div", { class: "iv-muted" }, "it never fires"));
    var W = 320, H = 130, padL = 34, padB = 18, top = Math.max.apply(null, counts), bw = (W - padL) / counts.length;
    var svg = IV.svg("svg", { width: W, height: H + padB, class: "iv-dash-hist-svg", style: "display: block;" });
    svg.appendChild(IV.svg("line", { x1: padL, y1: H, x2: W, y2: H, stroke: "#999" }));
    svg.appendChild(IV.svg("text", { x: padL - 4, y: 10, "text-anchor": "end", "font-size": 10 }, String(top)));
    svg.appendChild(IV.svg("text", { x: padL - 4, y: H, "text-anchor": "end", "font-size": 10 }, "0"));
    svg.appendChild(IV.svg("text", { x: padL, y: H + 13, "font-size": 10 }, IV.fmt(edges[0], 3)));
    svg.appendChild(IV.svg("text", { x: W, y: H + 13, "text-anchor": "end", "font-size": 10 }, IV.fmt(edges[edges.length - 1], 3)));
    counts.forEach(function (c, i) {
      var h = c ? Math.max(1, (H - 4) * c / top) : 0, x = padL + i * bw;
      var fill = IV.svg("rect", { class: "iv-dash-bar", x: x + 0.5, y: H - h, width: Math.max(bw - 1, 1), height: h, fill: IV.color(1, 1) });
      var g = IV.svg("g", { class: "iv-dash-bin", "data-bin": i, "data-count": c, "data-lo": edges[i], "data-hi": edges[i + 1],
        on: {
          mousemove: function (e) {
            fill.setAttribute("fill", "#053061");
            tip.show(e, "count " + c + "\nactivation " + IV.fmt(edges[i], 4) + " to " + IV.fmt(edges[i + 1], 4));
          },
          mouseleave: function () { fill.setAttribute("fill", IV.color(1, 1)); tip.hide(); }
        } },
        IV.svg("rect", { x: x, y: 0, width: bw, height: H, fill: "#fff", "fill-opacity": 0 }), fill);
      svg.appendChild(g);
    });
    return panel("activations where it fires (" + total + " tokens)", "iv-dash-hist", svg);
  }

  IV.register("dashboard", function (root, data) {
    var tip = IV.tooltip(root), contexts = data.contexts || [];
    var scale = data.max_activation || IV.maxAbs([].concat.apply([], contexts.map(function (c) { return c.activations; })));
    root.classList.add("iv-dash");
    root.appendChild(header(data));
    root.appendChild(IV.el("div", { class: "iv-panel iv-dash-contexts" },
      IV.el("h4", null, "top contexts (shade: activation / max; outlined: the top token)"),
      contexts.length ? contexts.map(function (c, r) { return strip(c, r, scale, tip); })
        : IV.el("div", { class: "iv-muted" }, "the " + (data.unit || "unit") + " never fires on these texts")));
    root.appendChild(IV.el("div", { class: "iv-grid" }, valueLists(data, tip), keySources(data, tip), histogram(data, tip)));
  });
})();
