/* kind "graph": a layered node-link graph of scored edges (a circuit, interp.circuits.view).
   data: {nodes: [{name, kind, layer, head, x, y}] (layout units, y up),
          inputs: [{name, node (index into nodes), kind, dx (port offset, layout units)}],
          edges: {up: [node index], input: [input index], score: [number]} (strongest |score| first),
          circuit: [edge index], threshold (initial, on |score|), max_drawn, n_edges,
          node_views: {node name: payload}, faithfulness: {value, n_edges} | null,
          curve: [[n, faithfulness of the top n]] | null}
   Shows every edge with |score| >= threshold (at most max_drawn drawn, the strongest). The SVG
   is panned (drag) and zoomed (wheel, buttons) through its viewBox. Hooks for tests:
   svg.iv-graph-svg, path.iv-graph-edge[data-up][data-down][data-score], g.iv-graph-node[data-node],
   input.iv-graph-slider (log10 |score|), input.iv-graph-threshold (exact value),
   .iv-graph-count[data-count][data-drawn][data-threshold], .iv-graph-panel[data-node]. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var BLUE = IV.color(1, 1), RED = IV.color(-1, 1);  // the ends of the shared diverging scale
  var SX = 120, SY = 60, BW = 76, BH = 24, PAD = 46, MAX_W = 860, MAX_H = 720;

  IV.register("graph", function (root, data) {
    var nodes = data.nodes || [], inputs = data.inputs || [], E = data.edges || { up: [], input: [], score: [] };
    var up = E.up, inp = E.input, score = E.score, n = score.length;
    var cap = data.max_drawn || 2000, views = data.node_views || {};
    var absMax = 0, minPos = Infinity;
    for (var i = 0; i < n; i++) {
      var a = Math.abs(score[i]);
      if (a > absMax) absMax = a;
      if (a > 0 && a < minPos) minPos = a;
    }
    if (!(absMax > 0)) absMax = 1;
    if (!isFinite(minPos)) minPos = absMax;
    var inCircuit = {};
    (data.circuit || []).forEach(function (k) { inCircuit[k] = true; });
    var downNode = inp.map(function (d) { return inputs[d].node; });
    var into = nodes.map(function () { return []; }), outOf = nodes.map(function () { return []; });
    for (i = 0; i < n; i++) { outOf[up[i]].push(i); into[downNode[i]].push(i); }

    /* Layout: layout units -> SVG user units (y flipped: logits on top). */
    var minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    nodes.forEach(function (nd) {
      minX = Math.min(minX, nd.x); maxX = Math.max(maxX, nd.x); minY = Math.min(minY, nd.y); maxY = Math.max(maxY, nd.y);
    });
    if (!nodes.length) { minX = maxX = minY = maxY = 0; }
    function px(x) { return PAD + BW / 2 + (x - minX) * SX; }
    function py(y) { return PAD + BH / 2 + (maxY - y) * SY; }
    var W = 2 * PAD + BW + (maxX - minX) * SX, H = 2 * PAD + BH + (maxY - minY) * SY;
    var scale = Math.min(1, MAX_W / W, MAX_H / H);
    var full = { x: 0, y: 0, w: W, h: H }, zoomer;

    var geometry = {};
    function pathOf(k) {
      if (geometry[k]) return geometry[k];
      var s = nodes[up[k]], t = nodes[downNode[k]], port = inputs[inp[k]];
      var x0 = px(s.x), y0 = py(s.y) - BH / 2, x1 = px(t.x + (port.dx || 0)), y1 = py(t.y) + BH / 2;
      var ym = (y0 + y1) / 2;
      geometry[k] = "M" + x0.toFixed(1) + " " + y0.toFixed(1) + " C" + x0.toFixed(1) + " " + ym.toFixed(1) + " " +
        x1.toFixed(1) + " " + ym.toFixed(1) + " " + x1.toFixed(1) + " " + y1.toFixed(1);
      return geometry[k];
    }
    function edgeLabel(k) {
      return nodes[up[k]].name + " -> " + inputs[inp[k]].name + ": " + IV.fmt(score[k], 6);
    }

    /* Controls. */
    var lo = Math.log10(minPos) - 0.1, hi = Math.log10(absMax);
    var threshold = Math.max(0, +data.threshold || 0);
    var slider = IV.el("input", { type: "range", class: "iv-graph-slider", min: lo, max: hi, step: (hi - lo) / 1000 });
    var box = IV.el("input", { type: "number", class: "iv-graph-threshold", min: 0, step: "any", style: "width:8em" });
    var count = IV.el("span", { class: "iv-graph-count" });
    var faith = IV.el("span", { class: "iv-graph-faithfulness iv-muted" });
    function sliderValue(t) { return t > 0 ? Math.max(lo, Math.min(hi, Math.log10(t))) : lo; }
    slider.addEventListener("input", function () {
      var v = +slider.value;
      threshold = v <= lo + 1e-9 ? 0 : Math.pow(10, v);
      box.value = String(threshold);
      redraw();
    });
    box.addEventListener("input", function () {
      var t = +box.value;
      if (box.value === "" || !(t >= 0)) return;
      threshold = t;
      slider.value = sliderValue(t);
      redraw();
    });
    function zoomButton(label, cls, fn) {
      return IV.el("button", { type: "button", class: cls, title: label, on: { click: fn } }, label);
    }
    var controls = IV.el("div", { class: "iv-controls" },
      IV.el("label", { class: "iv-control" }, "|score| \u2265 ", slider, " ", box), count,
      zoomButton("+", "iv-graph-zoom-in", function () { zoomer.zoom(1 / 1.25); }),
      zoomButton("\u2212", "iv-graph-zoom-out", function () { zoomer.zoom(1.25); }),
      zoomButton("reset", "iv-graph-reset", function () { zoomer.reset(); }),
      faith);
    root.appendChild(controls);

    /* The drawing and the side panel. */
    var svg = IV.svg("svg", { class: "iv-graph-svg", width: Math.round(W * scale), height: Math.round(H * scale),
      style: "border:1px solid #e3e3e3;background:#fff;cursor:grab;user-select:none;touch-action:none;flex:none" });
    zoomer = IV.panZoom(svg, full, full, function () { tip.hide(); }, 40);
    var edgeLayer = IV.svg("g", { class: "iv-graph-edges" }), nodeLayer = IV.svg("g", { class: "iv-graph-nodes" });
    svg.appendChild(edgeLayer); svg.appendChild(nodeLayer);
    var panel = IV.el("div", { class: "iv-panel iv-graph-panel", style: "flex:1 1 320px;min-width:280px;max-width:560px;display:none;overflow:auto" });
    var wrap = IV.el("div", { class: "iv-graph-wrap", style: "position:relative;display:flex;gap:10px;align-items:flex-start" }, svg, panel);
    root.appendChild(wrap);
    var tip = IV.tooltip(wrap);

    var nodeEls = nodes.map(function (nd, j) {
      var x = px(nd.x), y = py(nd.y);
      var rect = IV.svg("rect", { x: (x - BW / 2).toFixed(1), y: (y - BH / 2).toFixed(1), width: BW, height: BH, rx: 5,
        fill: "#f2f2f2", stroke: "#bbb", "stroke-width": 1 });
      var g = IV.svg("g", { class: "iv-graph-node", "data-node": nd.name, "data-index": j, style: "cursor:pointer" }, rect,
        IV.svg("text", { x: x, y: y + 4, "text-anchor": "middle", "font-size": 11, fill: "#333", "pointer-events": "none" }, nd.name));
      if (nd.kind === "head" || nd.kind === "kv_head") {
        ["q", "k", "v"].forEach(function (p) {
          var has = inputs.some(function (ip) { return ip.node === j && ip.kind === p; });
          if (has) g.appendChild(IV.svg("text", { x: x + ({ q: -0.25, k: 0, v: 0.25 }[p]) * SX, y: y + BH / 2 + 9,
            "text-anchor": "middle", "font-size": 8, fill: "#777", "pointer-events": "none" }, p));
        });
      }
      g.addEventListener("click", function () { if (!zoomer.dragged()) openPanel(j); });
      nodeLayer.appendChild(g);
      return { g: g, rect: rect };
    });

    var selected = -1;
    function redraw() {
      var shown = 0;
      while (shown < n && Math.abs(score[shown]) >= threshold) shown++;
      var drawn = Math.min(shown, cap);
      edgeLayer.innerHTML = "";
      var active = {};
      var frag = document.createDocumentFragment();
      for (var k = drawn - 1; k >= 0; k--) {  // weakest first: the strongest lie on top
        var s = score[k], rel = Math.abs(s) / absMax;
        active[up[k]] = active[downNode[k]] = true;
        frag.appendChild(IV.svg("path", { class: "iv-graph-edge" + (inCircuit[k] ? " iv-graph-circuit" : ""), d: pathOf(k),
          fill: "none", stroke: s >= 0 ? BLUE : RED, "stroke-width": (0.6 + 5.4 * rel).toFixed(2),
          "stroke-opacity": (0.3 + 0.65 * rel).toFixed(3), "data-edge": k, "data-up": nodes[up[k]].name,
          "data-down": inputs[inp[k]].name, "data-score": String(s), "data-circuit": inCircuit[k] ? "1" : null }));
      }
      edgeLayer.appendChild(frag);
      nodeEls.forEach(function (ne, j) {
        var on = !!active[j];
        ne.rect.setAttribute("fill", on ? "#fde0c5" : "#f2f2f2");
        ne.rect.setAttribute("stroke", j === selected ? "#111" : on ? "#444" : "#bbb");
        ne.rect.setAttribute("stroke-width", j === selected ? 2.5 : 1);
        ne.g.setAttribute("data-active", on ? "1" : "0");
      });
      count.setAttribute("data-count", shown);
      count.setAttribute("data-drawn", drawn);
      count.setAttribute("data-threshold", String(threshold));
      count.textContent = shown + " of " + n + " scored edges with |score| \u2265 " + IV.fmt(threshold) +
        (shown > drawn ? " (drawing the strongest " + drawn + ")" : "");
      faith.textContent = faithText(shown);
    }
    function faithText(shown) {
      var parts = [];
      if (data.faithfulness) {
        parts.push("circuit" + (data.faithfulness.n_edges !== null && data.faithfulness.n_edges !== undefined ?
          " (" + data.faithfulness.n_edges + " edges)" : "") + ": faithfulness " + IV.fmt(data.faithfulness.value, 3));
      }
      if (data.curve && data.curve.length) {
        var best = null;
        data.curve.forEach(function (c) { if (c[0] <= shown && (!best || c[0] > best[0])) best = c; });
        if (best) parts.push("top " + best[0] + " edges: faithfulness " + IV.fmt(best[1], 3) + (best[0] === shown ? "" : " (nearest computed)"));
      }
      return parts.join("; ");
    }

    /* Hover. */
    edgeLayer.addEventListener("mousemove", function (ev) {
      var t = ev.target;
      if (!t.classList || !t.classList.contains("iv-graph-edge")) return;
      tip.show(ev, edgeLabel(+t.getAttribute("data-edge")));
    });
    edgeLayer.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("iv-graph-edge")) {
        t.setAttribute("data-hover", "1");
        t.setAttribute("stroke-opacity", "1");
        tip.show(ev, edgeLabel(+t.getAttribute("data-edge")));
      }
    });
    edgeLayer.addEventListener("mouseout", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("iv-graph-edge")) {
        var rel = Math.abs(+t.getAttribute("data-score")) / absMax;
        t.removeAttribute("data-hover");
        t.setAttribute("stroke-opacity", (0.3 + 0.65 * rel).toFixed(3));
      }
      tip.hide();
    });

    /* A node's panel: its edges in and out, and its own view. */
    function edgeTable(list, other) {
      var rows = list.map(function (k) {
        var s = score[k];
        var on = Math.abs(s) >= threshold;
        return IV.el("tr", { class: "iv-graph-edge-row", style: on ? "font-weight:600" : "color:#777", "data-shown": on ? "1" : "0",
          "data-up": nodes[up[k]].name, "data-down": inputs[inp[k]].name, "data-score": String(s) },
          IV.el("td", null, other(k)), IV.el("td", { class: "iv-num", style: "color:" + (s >= 0 ? BLUE : RED) }, IV.fmt(s, 6)));
      });
      return IV.el("table", { class: "iv-table" }, IV.el("thead", null, IV.el("tr", null, IV.el("th", null, "edge"),
        IV.el("th", null, "score"))), IV.el("tbody", null, rows));
    }
    function openPanel(j) {
      var nd = nodes[j];
      selected = j;
      panel.innerHTML = "";
      panel.style.display = "block";
      panel.setAttribute("data-node", nd.name);
      var close = IV.el("button", { type: "button", class: "iv-graph-close", style: "float:right",
        on: { click: function () { panel.style.display = "none"; panel.removeAttribute("data-node"); selected = -1; redraw(); } } }, "\u00d7");
      panel.appendChild(close);
      panel.appendChild(IV.el("h4", null, nd.name));
      var info = [["kind", nd.kind]];
      if (nd.layer >= 0 && nd.kind !== "logits") info.push(["layer", nd.layer]);
      if (nd.head !== null && nd.head !== undefined && nd.kind !== "mlp" && nd.kind !== "logits") info.push(["head", nd.head]);
      info.push(["edges in / out", into[j].length + " / " + outOf[j].length]);
      panel.appendChild(IV.kvTable(info));
      if (views[nd.name]) {
        var inner = IV.el("div");
        panel.appendChild(IV.el("div", { class: "iv-graph-node-view" }, inner));
        IV.mount(inner, views[nd.name]);
      }
      if (into[j].length) {
        panel.appendChild(IV.el("div", { class: "iv-note" }, "reads (edges in, strongest first; bold: shown at this threshold)"));
        panel.appendChild(IV.el("div", { class: "iv-graph-in" }, edgeTable(into[j], function (k) {
          return nodes[up[k]].name + " \u2192 " + inputs[inp[k]].name; })));
      }
      if (outOf[j].length) {
        panel.appendChild(IV.el("div", { class: "iv-note" }, "writes to (edges out)"));
        panel.appendChild(IV.el("div", { class: "iv-graph-out" }, edgeTable(outOf[j], function (k) {
          return nd.name + " \u2192 " + inputs[inp[k]].name; })));
      }
      redraw();
    }

    slider.value = sliderValue(threshold);
    box.value = String(threshold);
    redraw();
  });
})();
