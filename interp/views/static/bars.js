/* kind "bars" (interp.views.results.bars_data / dla_bars_data): horizontal bars of a labelled
   result's entries, largest |effect| first, top k shown. data: {groups: [{name, values: f32
   array [*axes], axes, labels: {axis: [label]}, baseline, suffix}], metric, k}.

   - An entry's name joins its axis labels ("L1H3", "L0N12"), the position last ("L1 @ of (6)"),
     plus the group's suffix (" @ of (6)" for a result measured at one position).
   - The bar is the effect (value - baseline): positive blue, negative red, zero line marked.
   - Controls: the group (heads / neurons / per layer) when there are several, k (1..500),
     "index order" (the top k in index order instead of by |effect|).
   - Hover: tooltip with the exact value; the status element .iv-bars-status gets data-index,
     data-label, data-value, data-effect. Each bar row is .iv-bar-row with the same attributes. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var MAX_K = 500, TRACK = 420;

  /* Labels of several axes as one name: tags join ("L1" + "H3" -> "L1H3"), others take a space
     ("L1" + "last subject" -> "L1 last subject"). */
  var TAG = /^[A-Za-z]-?\d+$/, ENDS_IN_TAG = /(^|[^A-Za-z])[A-Za-z]-?\d+$/;
  function joinLabels(a, b) {
    if (!a) return b;
    return a + (TAG.test(b) && (TAG.test(a) || ENDS_IN_TAG.test(a)) ? "" : " ") + b;
  }

  function prepare(g) {
    var arr = IV.array(g.values), n = arr.data.length, base = +g.baseline || 0;
    var key = new Float64Array(n);
    for (var i = 0; i < n; i++) { var e = Math.abs(arr.data[i] - base); key[i] = isNaN(e) ? -1 : e; }
    var order = null;
    return {
      name: g.name, arr: arr, n: n, base: base,
      ranked: function () {  // indices by |effect|, largest first (ties in index order), computed once
        if (!order) {
          order = new Uint32Array(n);
          for (var j = 0; j < n; j++) order[j] = j;
          order.sort(function (a, b) { return key[b] - key[a] || a - b; });
        }
        return order;
      },
      label: function (k) {
        var name = "", pos = null, rest = k;
        g.axes.forEach(function (a, d) {
          var s = arr.strides[d], i = Math.floor(rest / s);
          rest -= i * s;
          if (a === "pos") pos = g.labels[a][i]; else name = joinLabels(name, g.labels[a][i]);
        });
        return (pos === null ? name : (name ? name + " @ " + pos : pos)) + (g.suffix || "");
      }
    };
  }

  IV.register("bars", function (root, data) {
    var groups = (data.groups || []).map(prepare);
    if (!groups.length) throw new Error("bars: no groups of values to show");
    var state = { g: groups[0], k: Math.max(1, data.k || 20), inOrder: false };

    var wrap = IV.el("div", { class: "iv-bars" });
    root.appendChild(wrap);
    var controls = IV.el("div", { class: "iv-controls" });
    wrap.appendChild(controls);
    if (groups.length > 1) {
      var pick = IV.select("show", groups.map(function (g, i) { return { value: i, label: g.name + " (" + g.n + ")" }; }), 0,
        function (v) { state.g = groups[+v]; draw(); });
      pick.querySelector("select").classList.add("iv-bars-group");
      controls.appendChild(pick);
    }
    var kInput = IV.el("input", { type: "number", class: "iv-bars-k", min: 1, max: MAX_K, step: 1, value: state.k,
      style: "width:5em", on: { change: function () { setK(kInput.value); }, input: function () { setK(kInput.value); } } });
    controls.appendChild(IV.el("label", { class: "iv-control" }, "top k ", kInput));
    var order = IV.toggle("index order", false, function (on) { state.inOrder = on; draw(); });
    order.querySelector("input").classList.add("iv-bars-order");
    controls.appendChild(order);
    var caption = IV.el("div", { class: "iv-note iv-bars-caption" });
    wrap.appendChild(caption);
    var list = IV.el("div", { class: "iv-bars-list", style: "position:relative" });
    wrap.appendChild(list);
    var status = IV.el("div", { class: "iv-bars-status iv-note", style: "font-variant-numeric:tabular-nums;min-height:1.4em" },
      "hover a bar");
    wrap.appendChild(status);
    var tip = IV.tooltip(wrap);

    function setK(v) {
      var k = Math.floor(+v);
      if (!(k >= 1)) return;
      state.k = Math.min(k, MAX_K);
      draw();
    }

    function draw() {
      var g = state.g, k = Math.min(state.k, g.n), top = Array.prototype.slice.call(g.ranked().subarray(0, k));
      if (state.inOrder) top.sort(function (a, b) { return a - b; });
      var maxAbs = 0, anyNeg = false, anyPos = false;
      top.forEach(function (i) {
        var e = g.arr.data[i] - g.base;
        if (isFinite(e)) { maxAbs = Math.max(maxAbs, Math.abs(e)); if (e < 0) anyNeg = true; if (e > 0) anyPos = true; }
      });
      maxAbs = maxAbs || 1;
      var zero = anyNeg && anyPos ? TRACK / 2 : anyNeg ? TRACK : 0, room = anyNeg && anyPos ? TRACK / 2 : TRACK;
      list.innerHTML = "";
      top.forEach(function (i) {
        var v = g.arr.data[i], e = v - g.base, w = isFinite(e) ? Math.abs(e) / maxAbs * room : 0;
        var label = g.label(i);
        var barEl = IV.el("div", { class: "iv-bar", style: "position:absolute;top:2px;bottom:2px;background:" +
          (e >= 0 ? "#2166ac" : "#b2182b") + ";left:" + (e >= 0 ? zero : zero - w) + "px;width:" + Math.max(w, 1) + "px" });
        var track = IV.el("div", { style: "position:relative;width:" + TRACK + "px;height:18px;flex:none" },
          IV.el("div", { style: "position:absolute;top:0;bottom:0;width:1px;background:#555;left:" + zero + "px" }), barEl);
        list.appendChild(IV.el("div", { class: "iv-bar-row", "data-index": i, "data-label": label, "data-value": String(v),
          "data-effect": String(e), style: "display:flex;align-items:center;gap:8px;cursor:default" },
          IV.el("span", { class: "iv-bar-label", style: "width:16em;text-align:right;font-family:ui-monospace,monospace;" +
            "font-size:12px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;flex:none" }, label),
          track, IV.el("span", { class: "iv-bar-value", style: "font-size:12px;font-variant-numeric:tabular-nums" }, IV.fmt(v))));
      });
      caption.textContent = "top " + k + " of " + g.n + " by |effect|" + (state.inOrder ? ", in index order" : ", largest first") +
        "; " + data.metric + (g.base ? " (bars: value - " + IV.fmt(g.base) + ")" : "");
      tip.hide();
    }

    list.addEventListener("mousemove", function (event) {
      var row = event.target.closest ? event.target.closest(".iv-bar-row") : null;
      if (!row) { tip.hide(); return; }
      ["data-index", "data-label", "data-value", "data-effect"].forEach(function (a) { status.setAttribute(a, row.getAttribute(a)); });
      var v = +row.getAttribute("data-value"), e = +row.getAttribute("data-effect");
      status.textContent = row.getAttribute("data-label") + ": " + String(v) + (state.g.base ? "  (effect " + IV.fmt(e, 5) + ")" : "");
      tip.show(event, row.getAttribute("data-label") + "\n" + data.metric + ": " + String(v) +
        (state.g.base ? "\neffect: " + String(e) : ""));
    });
    list.addEventListener("mouseleave", function () { tip.hide(); });

    draw();
  });
})();
