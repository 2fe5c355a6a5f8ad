/* kind "attribution": the graph browser of an attribution graph (probes.graph.view.graph_view).
   data: {prompt, tokens: [str], n_layers, n_pos,
          nodes: [{node (graph index), id (circuit-tracer style node_id), kind: feature|error|token|target,
                   layer, row (0 = tokens, l + 1 = layer l, n_layers + 1 = targets), pos, index, label,
                   influence (cumulative, 0..1, smaller = more important), value, activation?, prob?, short?}],
          edges: {source: [node list index], target: [...], weight: [adjacency[target, source]],
                  note?: [text or null] (a line under the edge's hover)} (largest |weight| first),
          dashboards: {node list index: payload}, n_nodes_total, n_nodes_kept, n_edges_kept, ...,
          supernodes?: [{name, nodes: [node ids]}] groups made when the page opens (pinned and grouped)}
   Layout: x = position (token labels along the bottom), y = row; the nodes of one (row, position)
   side by side, most influential first. Edges blue (+) / red (-), width by |weight|. Pan (drag) and
   zoom (wheel, buttons) through the SVG's viewBox. Hover: a node's label, values, influence, its
   edges highlighted; an edge's "source -> target: weight". Click: side panel with the node's edges
   in and out (largest |weight| first; a row click opens the other node) and its dashboard.
   Shift-click (or the panel's pin button): pin into the subgraph panel, where selected pins group
   into a named supernode; pins, supernodes and node labels save to JSON (Blob download) and load
   back (pasted text or a file). The influence slider hides features and errors whose cumulative
   influence is above its value (tokens and targets always stay).
   DOM hooks: svg.iv-attr-svg; path.iv-attr-node[data-node (graph index)][data-node-id][data-kind]
   [data-influence][data-pinned][data-hidden]; path.iv-attr-edge[data-edge][data-source][data-target]
   [data-weight][data-hidden][data-hl]; input.iv-attr-slider; .iv-attr-count[data-nodes][data-edges]
   [data-threshold]; .iv-attr-panel[data-node] with .iv-attr-in / .iv-attr-out
   tr.iv-attr-edge-row[data-source][data-target][data-weight][data-shown], button.iv-attr-pin,
   input.iv-attr-label-input, .iv-attr-dashboard; .iv-attr-subgraph with .iv-attr-pinned-item[data-node-id]
   (input.iv-attr-select), .iv-attr-supernode[data-name][data-members], input.iv-attr-group-name,
   button.iv-attr-group, button.iv-attr-save, textarea.iv-attr-load-text, button.iv-attr-load,
   input.iv-attr-load-file, .iv-attr-message, svg.iv-attr-mini; the view root gets data-render-ms. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var BLUE = IV.color(1, 1), RED = IV.color(-1, 1);
  var DX = 15, MINCOL = 70, DY = 64, LEFT = 52, TOP = 40, BOTTOM = 46, PAD = 16, R = 5.5, MAX_W = 900, MAX_H = 640, MIN_SCALE = 0.7;
  var STYLE = {
    feature: { fill: "#fdd49e", stroke: "#b35806" },
    error: { fill: "#d9d9d9", stroke: "#636363" },
    token: { fill: "#c7e9c0", stroke: "#238b45" },
    target: { fill: "#dadaeb", stroke: "#54278f" }
  };

  /* Pan (drag) and zoom (wheel) of `svg` through its viewBox; full = {x, y, w, h} the whole
     drawing, home the initial view. Returns {zoom(factor), reset() (home), fit() (all), dragged()}: dragged() is true right after a drag (so its click opens
     nothing). The same approach as graph.js; a candidate for core.js. */


  /* A node's outline as a path (one element per node): circle, diamond, square or label box. */
  function shape(kind, x, y, w) {
    if (kind === "feature") {
      return "M" + (x - R) + " " + y + " a" + R + " " + R + " 0 1 0 " + 2 * R + " 0 a" + R + " " + R + " 0 1 0 " + -2 * R + " 0Z";
    }
    if (kind === "error") {
      var d = R + 1;
      return "M" + x + " " + (y - d) + " L" + (x + d) + " " + y + " L" + x + " " + (y + d) + " L" + (x - d) + " " + y + "Z";
    }
    if (kind === "token") return "M" + (x - R) + " " + (y - R) + " h" + 2 * R + " v" + 2 * R + " h" + -2 * R + "Z";
    var hw = w / 2, hh = 9;
    return "M" + (x - hw) + " " + (y - hh) + " h" + w + " v" + 2 * hh + " h" + -w + "Z";
  }

  function num(v) { return v === null || v === undefined ? NaN : +v; }

  IV.register("attribution", function (root, data) {
    var t0 = performance.now();
    var nodes = data.nodes || [], E = data.edges || { source: [], target: [], weight: [] };
    var src = E.source, tgt = E.target, wt = E.weight, nE = wt.length, nN = nodes.length;
    var boards = data.dashboards || {}, nPos = data.n_pos || (data.tokens || []).length, nRows = (data.n_layers || 0) + 2;
    var view = root.closest(".interp-view") || root;
    var byId = {};
    nodes.forEach(function (nd, j) { byId[nd.id] = j; });
    var inE = nodes.map(function () { return []; }), outE = nodes.map(function () { return []; });
    for (var k = 0; k < nE; k++) { outE[src[k]].push(k); inE[tgt[k]].push(k); }
    function byAbs(a, b) { return Math.abs(wt[b]) - Math.abs(wt[a]) || a - b; }
    inE.forEach(function (l) { l.sort(byAbs); });
    outE.forEach(function (l) { l.sort(byAbs); });
    var absMax = 0;
    for (k = 0; k < nE; k++) absMax = Math.max(absMax, Math.abs(wt[k]));
    if (!(absMax > 0)) absMax = 1;
    function infl(j) { var v = num(nodes[j].influence); return isNaN(v) ? Infinity : v; }

    /* Layout: one column per position, wide enough for its fullest (row, position) cell. */
    var cells = {};
    nodes.forEach(function (nd, j) { var c = nd.row * nPos + nd.pos; (cells[c] = cells[c] || []).push(j); });
    var colW = [], colX = [];
    for (var p = 0; p < nPos; p++) colW.push(MINCOL);
    Object.keys(cells).forEach(function (c) {
      var list = cells[c], pos = (+c) % nPos;
      list.sort(function (a, b) { return infl(a) - infl(b) || nodes[a].node - nodes[b].node; });
      var width = list.reduce(function (s, j) { return s + (nodes[j].kind === "target" ? targetWidth(j) + 6 : DX); }, 0);
      colW[pos] = Math.max(colW[pos], width + 10);
    });
    function targetWidth(j) { return Math.max(40, 7 * String(nodes[j].short || nodes[j].label).length + 10); }
    var x = LEFT;
    for (p = 0; p < nPos; p++) { colX.push(x); x += colW[p]; }
    var W = x + PAD, H = TOP + (nRows - 1) * DY + BOTTOM;
    function rowY(r) { return TOP + (nRows - 1 - r) * DY; }
    var X = new Float64Array(nN), Y = new Float64Array(nN);
    Object.keys(cells).forEach(function (c) {
      var list = cells[c], pos = (+c) % nPos, widths = list.map(function (j) {
        return nodes[j].kind === "target" ? targetWidth(j) + 6 : DX; });
      var total = widths.reduce(function (a, b) { return a + b; }, 0), at = colX[pos] + (colW[pos] - total) / 2;
      list.forEach(function (j, r) { X[j] = at + widths[r] / 2; Y[j] = rowY(nodes[j].row); at += widths[r]; });
    });

    /* State. */
    var threshold = 1, selected = -1;
    var pinned = [], groups = [], labels = {};  // pinned: node ids in pin order; groups: [{name, nodes: [ids]}]
    var visible = new Uint8Array(nN), edgeOn = new Uint8Array(nE);

    /* Controls. */
    var slider = IV.el("input", { type: "range", class: "iv-attr-slider", min: 0, max: 1, step: 0.001, value: 1 });
    var sliderOut = IV.el("span", { class: "iv-slider-value" }, "1");
    var count = IV.el("span", { class: "iv-attr-count" });
    slider.addEventListener("input", function () { threshold = +slider.value; sliderOut.textContent = IV.fmt(threshold, 3); applyThreshold(); });
    function button(label, cls, fn, title) {
      return IV.el("button", { type: "button", class: cls, title: title || label, on: { click: fn } }, label);
    }
    var zoomer = null;
    root.appendChild(IV.el("div", { class: "iv-controls" },
      IV.el("label", { class: "iv-control", title: "hide features and errors whose cumulative influence is above this" },
        "cumulative influence \u2264 ", slider, " ", sliderOut), count,
      button("+", "iv-attr-zoom-in", function () { zoomer.zoom(1 / 1.25); }, "zoom in"),
      button("\u2212", "iv-attr-zoom-out", function () { zoomer.zoom(1.25); }, "zoom out"),
      button("reset", "iv-attr-reset", function () { zoomer.reset(); }, "reset the view"),
      button("all", "iv-attr-fit", function () { zoomer.fit(); }, "show the whole graph"),
      IV.el("span", { class: "iv-muted" }, "shift-click a node to pin it")));

    /* Shown at a readable scale: a wide graph opens on its left part (drag to pan, "all" to fit). */
    var scale = Math.min(1, MAX_H / H, Math.max(MAX_W / W, MIN_SCALE));
    var dispW = Math.min(W * scale, MAX_W), dispH = H * scale;
    var svg = IV.svg("svg", { class: "iv-attr-svg", width: Math.round(dispW), height: Math.round(dispH),
      style: "border:1px solid #e3e3e3;background:#fff;cursor:grab;user-select:none;touch-action:none;flex:none" });
    var gridLayer = IV.svg("g", { class: "iv-attr-grid" }), edgeLayer = IV.svg("g", { class: "iv-attr-edges" });
    var nodeLayer = IV.svg("g", { class: "iv-attr-nodes" }), textLayer = IV.svg("g", { class: "iv-attr-texts", "pointer-events": "none" });
    svg.appendChild(gridLayer); svg.appendChild(edgeLayer); svg.appendChild(nodeLayer); svg.appendChild(textLayer);
    var panel = IV.el("div", { class: "iv-panel iv-attr-panel", style: "display:none;overflow:auto;max-height:560px" });
    var sub = IV.el("div", { class: "iv-panel iv-attr-subgraph" });
    var side = IV.el("div", { class: "iv-attr-side", style: "flex:1 1 340px;min-width:300px;max-width:600px" }, panel, sub);
    var wrap = IV.el("div", { class: "iv-attr-wrap", style: "position:relative;display:flex;gap:10px;align-items:flex-start;flex-wrap:wrap" }, svg, side);
    root.appendChild(wrap);
    var tip = IV.tooltip(wrap);
    zoomer = IV.panZoom(svg, { x: 0, y: 0, w: W, h: H }, { x: 0, y: 0, w: dispW / scale, h: H }, tip.hide, 60);

    /* Grid: row names on the left, token labels along the bottom. */
    for (var r = 0; r < nRows; r++) {
      var name = r === 0 ? "emb" : r === nRows - 1 ? "logit" : "L" + (r - 1);
      gridLayer.appendChild(IV.svg("line", { x1: LEFT - 6, x2: W - PAD, y1: rowY(r), y2: rowY(r), stroke: "#f0f0f0" }));
      gridLayer.appendChild(IV.svg("text", { x: 6, y: rowY(r) + 4, "font-size": 11, fill: "#777", class: "iv-attr-row-label" }, name));
    }
    for (p = 0; p < nPos; p++) {
      if (p > 0) gridLayer.appendChild(IV.svg("line", { x1: colX[p], x2: colX[p], y1: TOP - 20, y2: H - BOTTOM + 8, stroke: "#f3f3f3" }));
      var tok = IV.token((data.tokens || [])[p] || "");
      gridLayer.appendChild(IV.svg("text", { x: colX[p] + colW[p] / 2, y: H - BOTTOM + 26, "text-anchor": "middle", "font-size": 11,
        fill: "#333", class: "iv-attr-token-label", "data-pos": p }, (tok.length > 14 ? tok.slice(0, 13) + "\u2026" : tok)));
      gridLayer.appendChild(IV.svg("text", { x: colX[p] + colW[p] / 2, y: H - BOTTOM + 39, "text-anchor": "middle", "font-size": 9,
        fill: "#999" }, String(p)));
    }

    /* Edges (weakest first, so the strongest lie on top) and nodes. */
    function edgeWidth(k) { return 0.6 + 3.6 * Math.abs(wt[k]) / absMax; }
    function edgeOpacity(k) { return 0.25 + 0.6 * Math.abs(wt[k]) / absMax; }
    var edgeEls = new Array(nE), frag = document.createDocumentFragment();
    for (k = nE - 1; k >= 0; k--) {
      var a = src[k], b = tgt[k];
      var el = IV.svg("path", { class: "iv-attr-edge", d: "M" + X[a].toFixed(1) + " " + Y[a].toFixed(1) + " L" + X[b].toFixed(1) + " " + Y[b].toFixed(1),
        fill: "none", stroke: wt[k] >= 0 ? BLUE : RED, "stroke-width": edgeWidth(k).toFixed(2), "stroke-opacity": edgeOpacity(k).toFixed(3),
        "data-edge": k, "data-source": nodes[a].node, "data-target": nodes[b].node, "data-weight": String(wt[k]) });
      edgeEls[k] = el;
      frag.appendChild(el);
    }
    edgeLayer.appendChild(frag);
    var nodeEls = new Array(nN);
    frag = document.createDocumentFragment();
    nodes.forEach(function (nd, j) {
      var st = STYLE[nd.kind] || STYLE.feature;
      var el = IV.svg("path", { class: "iv-attr-node", d: shape(nd.kind, X[j], Y[j], nd.kind === "target" ? targetWidth(j) : 0),
        fill: st.fill, stroke: st.stroke, "stroke-width": 1, style: "cursor:pointer", "data-i": j, "data-node": nd.node,
        "data-node-id": nd.id, "data-kind": nd.kind, "data-influence": nd.influence === null ? "" : String(nd.influence) });
      nodeEls[j] = el;
      frag.appendChild(el);
      if (nd.kind === "target") {
        textLayer.appendChild(IV.svg("text", { x: X[j], y: Y[j] + 4, "text-anchor": "middle", "font-size": 11, fill: "#222" },
          String(nd.short || nd.label)));
      }
    });
    nodeLayer.appendChild(frag);

    /* The influence slider. */
    function applyThreshold() {
      var shownN = 0, shownE = 0;
      for (var j = 0; j < nN; j++) {
        var kind = nodes[j].kind;
        visible[j] = (kind === "token" || kind === "target" || infl(j) <= threshold + 1e-12) ? 1 : 0;
        shownN += visible[j];
        if (visible[j]) { nodeEls[j].removeAttribute("display"); nodeEls[j].removeAttribute("data-hidden"); }
        else { nodeEls[j].setAttribute("display", "none"); nodeEls[j].setAttribute("data-hidden", "1"); }
      }
      for (var q = 0; q < nE; q++) {
        edgeOn[q] = visible[src[q]] && visible[tgt[q]] ? 1 : 0;
        shownE += edgeOn[q];
        if (edgeOn[q]) { edgeEls[q].removeAttribute("display"); edgeEls[q].removeAttribute("data-hidden"); }
        else { edgeEls[q].setAttribute("display", "none"); edgeEls[q].setAttribute("data-hidden", "1"); }
      }
      count.setAttribute("data-nodes", shownN);
      count.setAttribute("data-edges", shownE);
      count.setAttribute("data-threshold", String(threshold));
      count.textContent = "showing " + shownN + " of " + nN + " nodes, " + shownE + " of " + nE + " edges" +
        (data.n_nodes_total ? " (graph: " + data.n_nodes_total + " nodes)" : "");
      if (selected >= 0) openPanel(selected);
    }

    /* Hover. */
    function nodeText(j) {
      var nd = nodes[j], lines = [nd.label];
      if (labels[nd.id]) lines.push("\u201c" + labels[nd.id] + "\u201d");
      if (nd.kind === "feature") lines.push("activation " + IV.fmt(num(nd.activation), 5) + "   pre-activation " + IV.fmt(num(nd.value), 5));
      else if (nd.kind === "target") lines.push("value " + IV.fmt(num(nd.value), 5) + "   p = " + IV.fmt(num(nd.prob), 4));
      else if (nd.kind === "token") lines.push("token id " + nd.index);
      lines.push("influence (cumulative) " + IV.fmt(num(nd.influence), 4));
      lines.push("edges in / out: " + inE[j].length + " / " + outE[j].length);
      return lines.join("\n");
    }
    function edgeText(k) {
      var text = nodes[src[k]].label + " -> " + nodes[tgt[k]].label + ": " + IV.fmt(wt[k], 6);
      return E.note && E.note[k] ? text + "\n" + E.note[k] : text;
    }
    function highlight(j) {
      var on = {};
      if (j >= 0) { inE[j].forEach(function (q) { on[q] = 1; }); outE[j].forEach(function (q) { on[q] = 1; }); }
      for (var q = 0; q < nE; q++) {
        if (j < 0) { edgeEls[q].setAttribute("stroke-opacity", edgeOpacity(q).toFixed(3)); edgeEls[q].removeAttribute("data-hl"); }
        else if (on[q]) { edgeEls[q].setAttribute("stroke-opacity", "1"); edgeEls[q].setAttribute("data-hl", "1"); }
        else { edgeEls[q].setAttribute("stroke-opacity", "0.06"); edgeEls[q].removeAttribute("data-hl"); }
      }
    }
    nodeLayer.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (!t.classList || !t.classList.contains("iv-attr-node")) return;
      var j = +t.getAttribute("data-i");
      highlight(j);
      tip.show(ev, nodeText(j));
    });
    nodeLayer.addEventListener("mousemove", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("iv-attr-node")) tip.show(ev, nodeText(+t.getAttribute("data-i")));
    });
    nodeLayer.addEventListener("mouseout", function () { highlight(-1); tip.hide(); });
    edgeLayer.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (!t.classList || !t.classList.contains("iv-attr-edge")) return;
      t.setAttribute("data-hover", "1");
      t.setAttribute("stroke-opacity", "1");
      tip.show(ev, edgeText(+t.getAttribute("data-edge")));
    });
    edgeLayer.addEventListener("mousemove", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("iv-attr-edge")) tip.show(ev, edgeText(+t.getAttribute("data-edge")));
    });
    edgeLayer.addEventListener("mouseout", function (ev) {
      var t = ev.target;
      if (t.classList && t.classList.contains("iv-attr-edge")) {
        t.removeAttribute("data-hover");
        t.setAttribute("stroke-opacity", edgeOpacity(+t.getAttribute("data-edge")).toFixed(3));
      }
      tip.hide();
    });
    nodeLayer.addEventListener("click", function (ev) {
      var t = ev.target;
      if (!t.classList || !t.classList.contains("iv-attr-node") || zoomer.dragged()) return;
      var j = +t.getAttribute("data-i");
      if (ev.shiftKey) togglePin(nodes[j].id); else openPanel(j);
    });

    /* The node panel. */
    function paintNode(j) {
      var nd = nodes[j], st = STYLE[nd.kind] || STYLE.feature, pin = pinned.indexOf(nd.id) >= 0;
      nodeEls[j].setAttribute("stroke", j === selected ? "#e6550d" : pin ? "#000" : st.stroke);
      nodeEls[j].setAttribute("stroke-width", j === selected ? 3 : pin ? 2.5 : 1);
      if (pin) nodeEls[j].setAttribute("data-pinned", "1"); else nodeEls[j].removeAttribute("data-pinned");
      if (j === selected) nodeEls[j].setAttribute("data-selected", "1"); else nodeEls[j].removeAttribute("data-selected");
    }
    function edgeTable(list, other, cls) {
      return IV.el("table", { class: "iv-table " + cls },
        IV.el("thead", null, IV.el("tr", null, IV.el("th", null, "node"), IV.el("th", null, "weight"))),
        IV.el("tbody", null, list.map(function (q) {
          var o = other(q);
          return IV.el("tr", { class: "iv-attr-edge-row", "data-source": nodes[src[q]].node, "data-target": nodes[tgt[q]].node,
            "data-weight": String(wt[q]), "data-shown": edgeOn[q] ? "1" : "0", title: "open " + nodes[o].label,
            style: "cursor:pointer;" + (edgeOn[q] ? "" : "color:#999"), on: { click: function () { openPanel(o); } } },
            IV.el("td", null, nodes[o].label + (labels[nodes[o].id] ? " \u201c" + labels[nodes[o].id] + "\u201d" : "")),
            IV.el("td", { class: "iv-num", style: "color:" + (wt[q] >= 0 ? BLUE : RED) }, IV.fmt(wt[q], 6)));
        })));
    }
    function openPanel(j) {
      var old = selected, nd = nodes[j];
      selected = j;
      if (old >= 0 && old !== j) paintNode(old);
      paintNode(j);
      panel.innerHTML = "";
      panel.style.display = "block";
      panel.setAttribute("data-node", nd.node);
      panel.setAttribute("data-node-id", nd.id);
      panel.appendChild(button("\u00d7", "iv-attr-close", function () {
        panel.style.display = "none"; panel.removeAttribute("data-node"); var was = selected; selected = -1; if (was >= 0) paintNode(was);
      }, "close"));
      panel.lastChild.style.float = "right";
      panel.appendChild(IV.el("h4", null, nd.label));
      var info = [["kind", nd.kind], ["node id", nd.id], ["position", nd.pos + " (" + IV.token((data.tokens || [])[nd.pos] || "") + ")"]];
      if (nd.kind === "feature" || nd.kind === "error") info.push(["layer", nd.layer]);
      if (nd.kind === "feature") { info.push(["feature", nd.index]); info.push(["activation", IV.fmt(num(nd.activation), 6)]);
        info.push(["pre-activation", IV.fmt(num(nd.value), 6)]); }
      if (nd.kind === "target") { info.push(["value", IV.fmt(num(nd.value), 6)]); info.push(["probability", IV.fmt(num(nd.prob), 4)]); }
      if (nd.kind === "token") info.push(["token id", nd.index]);
      info.push(["influence (cumulative)", IV.fmt(num(nd.influence), 4)]);
      info.push(["kept edges in / out", inE[j].length + " / " + outE[j].length]);
      panel.appendChild(IV.kvTable(info));
      var isPinned = pinned.indexOf(nd.id) >= 0;
      var labelBox = IV.el("input", { type: "text", class: "iv-attr-label-input", placeholder: "your label for this node",
        value: labels[nd.id] || "", style: "width:14em" });
      labelBox.addEventListener("change", function () { setLabel(nd.id, labelBox.value); });
      panel.appendChild(IV.el("div", { class: "iv-controls" },
        button(isPinned ? "unpin" : "pin", "iv-attr-pin", function () { togglePin(nd.id); openPanel(j); }), labelBox));
      if (boards[j]) {
        var inner = IV.el("div");
        panel.appendChild(IV.el("div", { class: "iv-attr-dashboard", style: "border-top:1px solid #eee;margin-top:4px;padding-top:4px" }, inner));
        IV.mount(inner, boards[j]);
      }
      panel.appendChild(IV.el("div", { class: "iv-note" }, "edges in (" + inE[j].length + ", largest |weight| first; grey: hidden by the slider)"));
      panel.appendChild(IV.el("div", { class: "iv-attr-in" }, edgeTable(inE[j], function (q) { return src[q]; }, "iv-attr-in-table")));
      panel.appendChild(IV.el("div", { class: "iv-note" }, "edges out (" + outE[j].length + ")"));
      panel.appendChild(IV.el("div", { class: "iv-attr-out" }, edgeTable(outE[j], function (q) { return tgt[q]; }, "iv-attr-out-table")));
    }

    /* Pins, supernodes, labels. */
    function groupOf(id) {
      for (var g = 0; g < groups.length; g++) if (groups[g].nodes.indexOf(id) >= 0) return g;
      return -1;
    }
    function togglePin(id) {
      var at = pinned.indexOf(id);
      if (at >= 0) {
        pinned.splice(at, 1);
        var g = groupOf(id);
        if (g >= 0) { groups[g].nodes.splice(groups[g].nodes.indexOf(id), 1); if (!groups[g].nodes.length) groups.splice(g, 1); }
      } else pinned.push(id);
      if (byId[id] !== undefined) paintNode(byId[id]);
      drawSubgraph();
    }
    function setLabel(id, text) {
      text = String(text || "").trim();
      if (text) labels[id] = text; else delete labels[id];
      drawSubgraph();
    }
    var message = IV.el("div", { class: "iv-attr-message iv-note" });
    function say(text, bad) { message.textContent = text; message.style.color = bad ? "#b2182b" : "#555"; message.setAttribute("data-error", bad ? "1" : "0"); }
    var selectedPins = {};
    function drawSubgraph() {
      sub.innerHTML = "";
      sub.appendChild(IV.el("h4", null, "subgraph (" + pinned.length + " pinned, " + groups.length + " supernodes)"));
      var loose = pinned.filter(function (id) { return groupOf(id) < 0; });
      if (!pinned.length) sub.appendChild(IV.el("div", { class: "iv-muted" }, "none pinned: shift-click a node, or use its panel's pin button"));
      groups.forEach(function (g, gi) {
        sub.appendChild(IV.el("div", { class: "iv-attr-supernode", "data-name": g.name, "data-members": g.nodes.join(","),
          style: "margin:2px 0;padding:2px 4px;background:#f4f0fa;border-radius:3px" },
          IV.el("b", null, g.name), " ", IV.el("span", { class: "iv-muted" }, g.nodes.map(nameOf).join(", ")), " ",
          button("ungroup", "iv-attr-ungroup", function () { groups.splice(gi, 1); drawSubgraph(); })));
      });
      loose.forEach(function (id) {
        var box = IV.el("input", { type: "checkbox", class: "iv-attr-select", "data-node-id": id });
        box.checked = !!selectedPins[id];
        box.addEventListener("change", function () { if (box.checked) selectedPins[id] = 1; else delete selectedPins[id]; });
        sub.appendChild(IV.el("div", { class: "iv-attr-pinned-item", "data-node-id": id, "data-node": byId[id] !== undefined ? nodes[byId[id]].node : null },
          IV.el("label", null, box, " " + nameOf(id)), " ",
          button("\u00d7", "iv-attr-unpin", function () { togglePin(id); }, "unpin")));
      });
      var groupName = IV.el("input", { type: "text", class: "iv-attr-group-name", placeholder: "supernode name", style: "width:10em" });
      sub.appendChild(IV.el("div", { class: "iv-controls" }, groupName,
        button("group selected", "iv-attr-group", function () {
          var name = groupName.value.trim(), chosen = loose.filter(function (id) { return selectedPins[id]; });
          if (!name) return say("type a name for the supernode first", true);
          if (chosen.length < 1) return say("select pinned nodes (the boxes) to group", true);
          if (groups.some(function (g) { return g.name === name; })) return say("a supernode named \u201c" + name + "\u201d exists", true);
          groups.push({ name: name, nodes: chosen });
          chosen.forEach(function (id) { delete selectedPins[id]; });
          say("grouped " + chosen.length + " nodes as \u201c" + name + "\u201d");
          drawSubgraph();
        }),
        button("save", "iv-attr-save", save, "download pins, supernodes and labels as JSON"),
        button("clear", "iv-attr-clear", function () {
          pinned.slice().forEach(togglePin); groups = []; labels = {}; selectedPins = {}; drawSubgraph(); })));
      var loadText = IV.el("textarea", { class: "iv-attr-load-text", rows: 2, placeholder: "paste saved JSON here", style: "width:95%" });
      var loadFile = IV.el("input", { type: "file", class: "iv-attr-load-file", accept: ".json,application/json" });
      loadFile.addEventListener("change", function () {
        var f = loadFile.files && loadFile.files[0];
        if (!f) return;
        var reader = new FileReader();
        reader.onload = function () { load(String(reader.result)); };
        reader.readAsText(f);
      });
      sub.appendChild(IV.el("div", null, loadText));
      sub.appendChild(IV.el("div", { class: "iv-controls" }, button("load", "iv-attr-load", function () { load(loadText.value); }), loadFile));
      sub.appendChild(message);
      if (pinned.length) sub.appendChild(mini());
    }
    function nameOf(id) {
      var j = byId[id];
      var base = j === undefined ? id : nodes[j].label;
      return labels[id] ? base + " \u201c" + labels[id] + "\u201d" : base;
    }
    function state() {
      return { format: "interp-attribution-subgraph", version: 1, prompt: data.prompt || "",
        pinned: pinned.slice(), supernodes: groups.map(function (g) { return { name: g.name, nodes: g.nodes.slice() }; }),
        labels: Object.assign({}, labels),
        qParams: { pinnedIds: pinned.join(","), supernodes: groups.map(function (g) { return [g.name].concat(g.nodes); }) } };
    }
    function save() {
      var text = JSON.stringify(state(), null, 1);
      var url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      var a = IV.el("a", { href: url, download: "attribution-subgraph.json", style: "display:none" });
      root.appendChild(a);
      a.click();
      root.removeChild(a);
      setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
      view.setAttribute("data-saved-bytes", text.length);
      say("saved " + pinned.length + " pins, " + groups.length + " supernodes");
    }
    function load(text) {
      var s;
      try { s = JSON.parse(text); } catch (e) { return say("not JSON: " + e.message, true); }
      if (!s || typeof s !== "object" || !Array.isArray(s.pinned)) return say("not a saved subgraph: it needs a \"pinned\" list", true);
      var unknown = [];
      function known(id) { if (byId[id] === undefined) { unknown.push(id); return false; } return true; }
      var oldPins = pinned;
      pinned = [];
      s.pinned.forEach(function (id) { id = String(id); if (known(id) && pinned.indexOf(id) < 0) pinned.push(id); });
      groups = [];
      (s.supernodes || []).forEach(function (g) {
        var members = (g.nodes || []).map(String).filter(function (id) { return pinned.indexOf(id) >= 0 && groupOf(id) < 0; });
        if (g.name && members.length) groups.push({ name: String(g.name), nodes: members });
      });
      labels = {};
      Object.keys(s.labels || {}).forEach(function (id) { if (byId[id] !== undefined) labels[id] = String(s.labels[id]); });
      selectedPins = {};
      oldPins.concat(pinned).forEach(function (id) { if (byId[id] !== undefined) paintNode(byId[id]); });
      drawSubgraph();
      say("loaded " + pinned.length + " pins, " + groups.length + " supernodes" +
        (unknown.length ? "; " + unknown.length + " ids not in this graph ignored: " + unknown.slice(0, 5).join(", ") : ""), unknown.length > 0);
      if (selected >= 0) openPanel(selected);
    }

    /* The pinned subgraph, supernodes merged: units by (row, mean position), edges summed. */
    function mini() {
      var units = [], unitOf = {};
      groups.forEach(function (g) { units.push({ name: g.name, members: g.nodes.map(function (id) { return byId[id]; }) }); });
      pinned.forEach(function (id) { if (groupOf(id) < 0) units.push({ name: nameOf(id), id: id, members: [byId[id]] }); });
      units.forEach(function (u, ui) {
        u.members.forEach(function (j) { unitOf[j] = ui; });
        u.row = Math.max.apply(null, u.members.map(function (j) { return nodes[j].row; }));
        u.pos = u.members.reduce(function (s, j) { return s + nodes[j].pos; }, 0) / u.members.length;
      });
      var sums = {};
      for (var q = 0; q < nE; q++) {
        var a = unitOf[src[q]], b = unitOf[tgt[q]];
        if (a === undefined || b === undefined || a === b) continue;
        sums[a + ":" + b] = (sums[a + ":" + b] || 0) + wt[q];
      }
      var order = units.map(function (_, i) { return i; }).sort(function (a, b) { return units[a].row - units[b].row || units[a].pos - units[b].pos; });
      var rows = {};
      order.forEach(function (i) { (rows[units[i].row] = rows[units[i].row] || []).push(i); });
      var rowKeys = Object.keys(rows).map(Number).sort(function (a, b) { return b - a; });
      var MW = 320, UW = 96, MH = 26 + rowKeys.length * 46, ux = {}, uy = {};
      var step = UW + 6;
      rowKeys.forEach(function (rk, ri) {
        var list = rows[rk];
        MW = Math.max(MW, list.length * step + 10);
        list.forEach(function (i, n) { ux[i] = 5 + step / 2 + n * step; uy[i] = 20 + ri * 46; });
      });
      var m = IV.svg("svg", { class: "iv-attr-mini", width: MW, height: MH, style: "border:1px solid #eee;background:#fff;margin-top:4px" });
      var smax = 0;
      Object.keys(sums).forEach(function (key) { smax = Math.max(smax, Math.abs(sums[key])); });
      Object.keys(sums).forEach(function (key) {
        var ab = key.split(":").map(Number), v = sums[key], rel = Math.abs(v) / (smax || 1);
        m.appendChild(IV.svg("path", { class: "iv-attr-mini-edge", d: "M" + ux[ab[0]] + " " + uy[ab[0]] + " L" + ux[ab[1]] + " " + uy[ab[1]],
          stroke: v >= 0 ? BLUE : RED, "stroke-width": (0.8 + 3 * rel).toFixed(2), "stroke-opacity": 0.8,
          "data-from": units[ab[0]].name, "data-to": units[ab[1]].name, "data-weight": String(v) },
          IV.svg("title", null, units[ab[0]].name + " -> " + units[ab[1]].name + ": " + IV.fmt(v, 6))));
      });
      units.forEach(function (u, i) {
        var text = u.name.length > 15 ? u.name.slice(0, 14) + "\u2026" : u.name, grouped = u.id === undefined;
        m.appendChild(IV.svg("g", { class: "iv-attr-mini-node", "data-unit": u.name, "data-size": u.members.length },
          IV.svg("rect", { x: ux[i] - UW / 2, y: uy[i] - 10, width: UW, height: 20, rx: 4, fill: grouped ? "#e5dcf3" : "#f6f6f6",
            stroke: grouped ? "#54278f" : "#999" }),
          IV.svg("text", { x: ux[i], y: uy[i] + 4, "text-anchor": "middle", "font-size": 10, fill: "#222" }, text),
          IV.svg("title", null, u.name + (grouped ? " (" + u.members.length + " nodes)" : ""))));
      });
      return m;
    }

    /* Initial supernodes (data.supernodes, the saved file's format: [{name, nodes: [node ids]}], e.g.
       suggested ones): their members pinned and grouped, editable like the person's own. */
    (data.supernodes || []).forEach(function (g) {
      var members = (g.nodes || []).map(String).filter(function (id) { return byId[id] !== undefined && groupOf(id) < 0; });
      if (!g.name || !members.length || groups.some(function (h) { return h.name === String(g.name); })) return;
      members.forEach(function (id) { if (pinned.indexOf(id) < 0) pinned.push(id); });
      groups.push({ name: String(g.name), nodes: members });
    });
    pinned.forEach(function (id) { paintNode(byId[id]); });

    applyThreshold();
    drawSubgraph();
    if (groups.length) say(groups.length + " suggested supernodes: edit, ungroup or save them");
    view.setAttribute("data-render-ms", (performance.now() - t0).toFixed(1));
  });
})();
