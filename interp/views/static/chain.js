/* kind "chain": the recall chain of one fact (analyses.anatomy.chain_view). data: {tokens, n_layers,
   target, subject_span, sites: [{kind, label, layer, pos, index, score, text, colour, ...}],
   heads: [{label, layer, head, attention, logit, top_token, source, dest, slot, y}], head_colour,
   kinds: {kind: {colour, name, score}}, localisation: {k, method, margin_before, ...}}.
   Positions across, layers down; sites are dots at (layer, position) sized by |score| within their
   kind; heads are arrows from source to destination position between the MLP rows (width:
   attention). Hover: tooltip and the status line (.iv-chain-status, data-* of the thing hovered);
   click: the details panel (.iv-chain-details). Each kind can be hidden from the legend. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var LEFT = 64, TOP = 44, COL = 118, ROW = 92, RMIN = 4, RMAX = 12, STEP = 20;

  function sizes(sites) {
    var top = {};
    sites.forEach(function (s) {
      var a = Math.abs(s.score);
      if (isFinite(a)) top[s.kind] = Math.max(top[s.kind] || 0, a);
    });
    return sites.map(function (s) {
      var a = Math.abs(s.score), m = top[s.kind];
      return isFinite(a) && m ? RMIN + (RMAX - RMIN) * a / m : RMIN;
    });
  }

  function describe(data, thing, isHead) {
    var tok = function (p) { return "'" + IV.token(data.tokens[p]) + "'"; };
    if (isHead) {
      return "head " + thing.label + " (layer " + thing.layer + "): moves position " + thing.source + " " +
        tok(thing.source) + " -> " + thing.dest + " " + tok(thing.dest) + "; attention " + IV.fmt(thing.attention) +
        ", logit(" + data.target + ") " + IV.fmt(thing.logit) + ", top token '" + IV.token(thing.top_token) + "'";
    }
    var kind = data.kinds[thing.kind] || { name: thing.kind, score: "score" };
    return kind.name + " " + thing.label + ": layer " + thing.layer + ", position " + thing.pos + " " +
      tok(thing.pos) + "; " + kind.score + " " + IV.fmt(thing.score);
  }

  function details(data, thing, isHead) {
    var rows;
    if (isHead) {
      rows = [["head", thing.label], ["layer", thing.layer], ["head index", thing.head],
        ["from position", thing.source + " '" + IV.token(data.tokens[thing.source]) + "'"],
        ["to position", thing.dest + " '" + IV.token(data.tokens[thing.dest]) + "'"],
        ["attention to the subject", IV.fmt(thing.attention)],
        ["logit(" + data.target + ") of what it writes from the subject", IV.fmt(thing.logit)],
        ["top token of what it writes", IV.token(thing.top_token)]];
    } else {
      var kind = data.kinds[thing.kind] || { name: thing.kind, score: "score" };
      rows = [["site", thing.label], ["kind", kind.name], ["layer", thing.layer],
        ["position", thing.pos + " '" + IV.token(data.tokens[thing.pos]) + "'"], [kind.score, IV.fmt(thing.score)]];
      if (thing.index !== null && thing.index !== undefined) rows.splice(3, 0, ["index", thing.index]);
      if (thing.activation) rows.push(["activation: full / first-only / last-only", [thing.activation.full,
        thing.activation.first_only, thing.activation.last_only].map(function (v) { return IV.fmt(v); }).join(" / ")]);
      if (thing.role) rows.push(["position role", thing.role]);
      if (thing.method) rows.push(["ranking", thing.method]);
      if (thing.sites) rows.push(["sites", thing.sites.join(", ")]);
    }
    return rows;
  }

  IV.register("chain", function (root, data) {
    var tokens = data.tokens || [], nLayers = data.n_layers, sites = data.sites || [], heads = data.heads || [];
    if (!tokens.length || !(nLayers > 0)) throw new Error("chain view needs tokens and n_layers");
    var nPos = tokens.length, width = LEFT + COL * nPos + 16, height = TOP + ROW * nLayers + 12;
    var x = function (pos) { return LEFT + COL * (pos + 0.5); };
    var y = function (layer) { return TOP + ROW * (layer + 0.5); };
    var hidden = {};

    var controls = IV.el("div", { class: "iv-controls iv-chain-legend" });
    Object.keys(data.kinds || {}).forEach(function (k) {
      if (!sites.some(function (s) { return s.kind === k; })) return;
      var info = data.kinds[k];
      var swatch = IV.el("span", { style: "display:inline-block;width:10px;height:10px;border-radius:5px;background:" +
        info.colour + ";margin-right:3px" });
      var t = IV.toggle(info.name, true, function (on) { hidden[k] = !on; apply(); });
      t.setAttribute("data-kind", k);
      t.insertBefore(swatch, t.firstChild);
      controls.appendChild(t);
    });
    if (heads.length) {
      var ht = IV.toggle("heads", true, function (on) { hidden.head = !on; apply(); });
      ht.setAttribute("data-kind", "head");
      controls.appendChild(ht);
    }
    root.appendChild(controls);

    var status = IV.el("div", { class: "iv-chain-status iv-muted", "aria-live": "polite" }, "hover a dot or an arrow");
    var wrap = IV.el("div", { class: "iv-chain-plot", style: "position:relative" });
    var svg = IV.svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height,
      class: "iv-chain-svg", role: "img" });
    wrap.appendChild(svg);
    root.appendChild(wrap);
    root.appendChild(status);
    var panel = IV.el("div", { class: "iv-panel iv-chain-details" }, IV.el("span", { class: "iv-muted" },
      "click a dot or an arrow for its details"));
    root.appendChild(panel);
    var tip = IV.tooltip(wrap);

    var defs = IV.svg("defs", null, IV.svg("marker", { id: "iv-chain-arrow-" + Math.random().toString(36).slice(2),
      viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 10, markerHeight: 10, markerUnits: "userSpaceOnUse",
      orient: "auto-start-reverse" },
      IV.svg("path", { d: "M0,0 L10,5 L0,10 z", fill: data.head_colour || "#542788" })));
    svg.appendChild(defs);
    var markerId = defs.firstChild.getAttribute("id");

    // the grid: token labels across, layer labels down, the subject's positions shaded
    var span = data.subject_span || [0, 0];
    if (span[1] > span[0]) {
      svg.appendChild(IV.svg("rect", { x: LEFT + COL * span[0], y: TOP - 4, width: COL * (span[1] - span[0]),
        height: ROW * nLayers + 8, fill: "#f3efe6" }));
    }
    for (var p = 0; p < nPos; p++) {
      svg.appendChild(IV.svg("line", { x1: x(p), x2: x(p), y1: TOP, y2: TOP + ROW * nLayers, stroke: "#e6e6e6" }));
      svg.appendChild(IV.svg("text", { x: x(p), y: TOP - 22, "text-anchor": "middle", "font-size": 12,
        "font-family": "ui-monospace, monospace", class: "iv-chain-token", "data-pos": p }, IV.token(tokens[p])));
      svg.appendChild(IV.svg("text", { x: x(p), y: TOP - 8, "text-anchor": "middle", "font-size": 10, fill: "#888" }, String(p)));
    }
    for (var l = 0; l < nLayers; l++) {
      svg.appendChild(IV.svg("line", { x1: LEFT, x2: width - 16, y1: y(l), y2: y(l), stroke: "#e6e6e6" }));
      svg.appendChild(IV.svg("text", { x: LEFT - 8, y: y(l) + 4, "text-anchor": "end", "font-size": 12 }, "MLP " + l));
    }

    function hover(el, thing, isHead) {
      el.addEventListener("mouseenter", function (ev) {
        var text = describe(data, thing, isHead);
        tip.show(ev, text);
        status.textContent = text;
        status.classList.remove("iv-muted");
        status.setAttribute("data-kind", isHead ? "head" : thing.kind);
        status.setAttribute("data-label", thing.label);
        status.setAttribute("data-layer", thing.layer);
        status.setAttribute("data-pos", isHead ? thing.dest : thing.pos);
        status.setAttribute("data-source", isHead ? thing.source : thing.pos);
        status.setAttribute("data-score", isHead ? thing.logit : thing.score);
        if (isHead) status.setAttribute("data-attention", thing.attention);
        else status.removeAttribute("data-attention");
      });
      el.addEventListener("mousemove", function (ev) { tip.show(ev, describe(data, thing, isHead)); });
      el.addEventListener("mouseleave", function () { tip.hide(); });
      el.addEventListener("click", function () {
        panel.innerHTML = "";
        panel.setAttribute("data-label", thing.label);
        panel.appendChild(IV.el("h4", null, isHead ? "head " + thing.label : thing.label));
        panel.appendChild(IV.kvTable(details(data, thing, isHead)));
      });
    }

    // heads: arrows between the rows (a block's heads act before its MLP)
    var inLayer = {};
    heads.forEach(function (h) { inLayer[h.layer] = (inLayer[h.layer] || 0) + 1; });
    var headEls = heads.map(function (h, i) {
      var slot = h.slot === undefined ? 0 : h.slot;
      var yy = TOP + ROW * h.layer + (slot - (inLayer[h.layer] - 1) / 2) * 18, w = 1 + 3 * Math.max(0, Math.min(1, h.attention));
      var g = IV.svg("g", { class: "iv-chain-head", "data-head": i, "data-label": h.label, "data-layer": h.layer,
        "data-source": h.source, "data-dest": h.dest, "data-attention": h.attention, "data-score": h.logit,
        style: "cursor:pointer" });
      g.appendChild(IV.svg("line", { x1: x(h.source), x2: x(h.dest) - 6, y1: yy, y2: yy, stroke: "transparent",
        "stroke-width": 12 }));
      g.appendChild(IV.svg("line", { x1: x(h.source), x2: x(h.dest) - 6, y1: yy, y2: yy,
        stroke: data.head_colour || "#542788", "stroke-width": w, "marker-end": "url(#" + markerId + ")" }));
      g.appendChild(IV.svg("text", { x: x(h.source) + 6, y: yy - 4, "font-size": 10, fill: data.head_colour || "#542788" },
        h.label + " attn " + IV.fmt(h.attention, 2) + ", " + data.target + " " + (h.logit >= 0 ? "+" : "") + IV.fmt(h.logit, 3)));
      svg.appendChild(g);
      hover(g, h, true);
      return g;
    });

    // sites: dots in their cell, several per cell side by side
    var radius = sizes(sites), perCell = {}, counts = {};
    sites.forEach(function (s) { var key = s.layer + ":" + s.pos; counts[key] = (counts[key] || 0) + 1; });
    var siteEls = sites.map(function (s, i) {
      var key = s.layer + ":" + s.pos, j = perCell[key] || 0, n = counts[key];
      perCell[key] = j + 1;
      var perRow = Math.min(n, 5), row = Math.floor(j / perRow), colIdx = j % perRow;
      var inRow = Math.min(perRow, n - row * perRow);
      var cx = x(s.pos) + (colIdx - (inRow - 1) / 2) * STEP, cy = y(s.layer) + (row - (Math.ceil(n / perRow) - 1) / 2) * STEP;
      var c = IV.svg("circle", { cx: cx, cy: cy, r: radius[i], fill: s.colour, "fill-opacity": 0.85, stroke: "#fff",
        "stroke-width": 1, class: "iv-chain-dot", "data-site": i, "data-kind": s.kind, "data-label": s.label,
        "data-layer": s.layer, "data-pos": s.pos, "data-score": s.score, style: "cursor:pointer" });
      svg.appendChild(c);
      hover(c, s, false);
      return c;
    });

    function apply() {
      siteEls.forEach(function (el, i) { el.style.display = hidden[sites[i].kind] ? "none" : ""; });
      headEls.forEach(function (el) { el.style.display = hidden.head ? "none" : ""; });
    }

    var loc = data.localisation || {};
    var summary = loc.k ? "localised with k = " + loc.k + " sites (" + loc.method + "): margin " + IV.fmt(loc.margin_before) +
      " -> " + IV.fmt(loc.margin_after) + "; random sites at the same layers and positions: " + loc.random_flips + " of " +
      loc.random_draws + " draws move the answer" : (loc.skipped ? "localisation skipped: " + loc.skipped :
      (loc.reason ? "not localised: " + loc.reason : ""));
    if (summary) root.insertBefore(IV.el("div", { class: "iv-note iv-chain-summary" }, summary), controls);
  });
})();
