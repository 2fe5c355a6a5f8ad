/* interp views: the shared core. Defines window.InterpViews; every other script registers a
   kind with InterpViews.register(kind, draw), where draw(root, data, payload) fills `root`.
   Hand-written, no dependencies, no network access of any kind. */
(function () {
  "use strict";
  var IV = window.InterpViews || { kinds: {} };
  window.InterpViews = IV;

  IV.register = function (kind, draw) { IV.kinds[kind] = draw; };

  /* Render payload {kind, title, notes, data} into element `el` (replacing its content). A
     failure is shown in the element and reported with console.error. */
  IV.mount = function (el, payload) {
    el.innerHTML = "";
    el.classList.add("interp-view");
    el.setAttribute("data-kind", payload.kind);
    if (payload.title) el.appendChild(IV.el("div", { class: "iv-title" }, payload.title));
    (payload.notes || []).forEach(function (n) { el.appendChild(IV.el("div", { class: "iv-note" }, n)); });
    var body = IV.el("div", { class: "iv-body" });
    el.appendChild(body);
    var draw = IV.kinds[payload.kind];
    try {
      if (!draw) throw new Error("no view script for kind '" + payload.kind + "'");
      draw(body, payload.data || {}, payload);
      el.setAttribute("data-rendered", "1");
    } catch (err) {
      body.appendChild(IV.el("div", { class: "iv-error" }, "view failed: " + err.message));
      console.error(err);
    }
    return el;
  };

  /* DOM helpers. attrs: {class, style (string), on: {event: fn}, ...}; children: strings or nodes. */
  IV.el = function (tag, attrs) {
    var node = document.createElement(tag);
    IV._fill(node, attrs, Array.prototype.slice.call(arguments, 2));
    return node;
  };
  IV.svg = function (tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    IV._fill(node, attrs, Array.prototype.slice.call(arguments, 2));
    return node;
  };
  IV._fill = function (node, attrs, children) {
    attrs = attrs || {};
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "on") { Object.keys(v).forEach(function (ev) { node.addEventListener(ev, v[ev]); }); }
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    });
    children.forEach(function (c) {
      if (c === null || c === undefined) return;
      if (Array.isArray(c)) c.forEach(function (d) { IV._fill(node, null, [d]); });
      else node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    });
  };

  /* Arrays: {dtype: "f32", shape, b64} (from interp.views.encode_array) or nested JSON lists.
     Returns {data: Float32Array (row-major), shape: [...], at(i, j, ...)}; null entries -> NaN. */
  IV.array = function (enc) {
    var data, shape;
    if (enc && enc.dtype === "f32") {
      var bin = atob(enc.b64), bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      data = new Float32Array(bytes.buffer);
      shape = enc.shape.slice();
    } else {
      shape = [];
      for (var probe = enc; Array.isArray(probe); probe = probe[0]) shape.push(probe.length);
      var flat = [];
      (function walk(x) { if (Array.isArray(x)) x.forEach(walk); else flat.push(x === null ? NaN : +x); })(enc);
      data = Float32Array.from(flat);
    }
    var strides = shape.map(function (_, d) { return shape.slice(d + 1).reduce(function (a, b) { return a * b; }, 1); });
    return {
      data: data, shape: shape, strides: strides,
      at: function () { var k = 0; for (var d = 0; d < arguments.length; d++) k += arguments[d] * strides[d]; return data[k]; }
    };
  };

  /* Numbers and tokens. */
  IV.fmt = function (v, digits) {
    if (v === null || v === undefined || isNaN(v)) return "n/a";
    digits = digits || 4;
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return (+v.toPrecision(digits)).toString();
  };
  IV.token = function (tok) {
    return String(tok).replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r");
  };
  IV.maxAbs = function (data) {
    var m = 0;
    for (var i = 0; i < data.length; i++) { var a = Math.abs(data[i]); if (a > m && isFinite(a)) m = a; }
    return m || 1;
  };

  /* Colours: diverging blue (positive) / white (0) / red (negative), as interp.plot draws them;
     sequential white -> blue. rgb(v, scale) returns [r, g, b]; color() a CSS string. */
  var POS = [33, 102, 172], NEG = [178, 24, 43];
  IV.rgb = function (v, scale) {
    if (isNaN(v)) return [221, 221, 221];
    var t = Math.max(-1, Math.min(1, v / (scale || 1))), end = t >= 0 ? POS : NEG, a = Math.abs(t);
    return [Math.round(255 + (end[0] - 255) * a), Math.round(255 + (end[1] - 255) * a), Math.round(255 + (end[2] - 255) * a)];
  };
  IV.color = function (v, scale) { var c = IV.rgb(v, scale); return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; };
  IV.textColor = function (v, scale) { return Math.abs(v / (scale || 1)) > 0.6 ? "#fff" : "#111"; };

  /* A tooltip that follows the pointer inside `container`. */
  IV.tooltip = function (container) {
    var tip = IV.el("div", { class: "iv-tooltip", role: "tooltip" });
    tip.style.display = "none";
    container.style.position = container.style.position || "relative";
    container.appendChild(tip);
    return {
      node: tip,
      show: function (event, content) {
        tip.innerHTML = "";
        IV._fill(tip, null, [content]);
        tip.style.display = "block";
        var box = container.getBoundingClientRect();
        tip.style.left = (event.clientX - box.left + 14) + "px";
        tip.style.top = (event.clientY - box.top + 14) + "px";
      },
      hide: function () { tip.style.display = "none"; }
    };
  };

  /* Controls. */
  IV.select = function (label, options, value, onChange) {
    var sel = IV.el("select", { on: { change: function () { onChange(sel.value); } } });
    options.forEach(function (o) {
      var opt = IV.el("option", { value: o.value }, o.label);
      if (String(o.value) === String(value)) opt.selected = true;
      sel.appendChild(opt);
    });
    return IV.el("label", { class: "iv-control" }, label + " ", sel);
  };
  IV.toggle = function (label, checked, onChange) {
    var box = IV.el("input", { type: "checkbox", on: { change: function () { onChange(box.checked); } } });
    box.checked = !!checked;
    return IV.el("label", { class: "iv-control" }, box, " " + label);
  };
  IV.slider = function (label, min, max, step, value, onInput) {
    var out = IV.el("span", { class: "iv-slider-value" }, IV.fmt(value));
    var input = IV.el("input", { type: "range", min: min, max: max, step: step, value: value,
      on: { input: function () { out.textContent = IV.fmt(+input.value); onInput(+input.value); } } });
    return IV.el("label", { class: "iv-control" }, label + " ", input, " ", out);
  };

  /* Pan (drag) and zoom (wheel; zoom(f) for buttons) an SVG through its viewBox. full: the
     drawing's box {x, y, w, h}; home: the box shown first and on reset(); onMove: called when a
     drag starts moving (e.g. to hide a tooltip); maxZoom: how far in (full.w / maxZoom). Returns
     {zoom(f), reset(), fit(), dragged()}: dragged() is true during the click that ends a drag. */
  IV.panZoom = function (svg, full, home, onMove, maxZoom) {
    var vb = { x: home.x, y: home.y, w: home.w, h: home.h }, drag = null, moved = false;
    maxZoom = maxZoom || 40;
    function set() {
      svg.setAttribute("viewBox", [vb.x, vb.y, vb.w, vb.h].map(function (v) { return +v.toFixed(2); }).join(" "));
    }
    function zoomAt(cx, cy, factor) {  // factor < 1 zooms in, around user point (cx, cy)
      var w = Math.max(full.w / maxZoom, Math.min(full.w * 8, vb.w * factor)), f = w / vb.w;
      vb = { x: cx - (cx - vb.x) * f, y: cy - (cy - vb.y) * f, w: vb.w * f, h: vb.h * f };
      set();
    }
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var r = svg.getBoundingClientRect();
      zoomAt(vb.x + (ev.clientX - r.left) / r.width * vb.w, vb.y + (ev.clientY - r.top) / r.height * vb.h,
        Math.exp(Math.max(-1, Math.min(1, ev.deltaY * 0.0015))));
    }, { passive: false });
    svg.addEventListener("mousedown", function (ev) {
      if (ev.button !== 0) return;
      ev.preventDefault();
      var r = svg.getBoundingClientRect();
      drag = { cx: ev.clientX, cy: ev.clientY, x: vb.x, y: vb.y, k: vb.w / r.width };
      moved = false;
      window.addEventListener("mousemove", onDrag);
      window.addEventListener("mouseup", endDrag);
    });
    function onDrag(ev) {
      if (!drag) return;
      var dx = ev.clientX - drag.cx, dy = ev.clientY - drag.cy;
      if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
      if (!moved) return;
      if (onMove) onMove();
      svg.style.cursor = "grabbing";
      vb.x = drag.x - dx * drag.k; vb.y = drag.y - dy * drag.k;
      set();
    }
    function endDrag() {
      drag = null;
      svg.style.cursor = "grab";
      window.removeEventListener("mousemove", onDrag);
      window.removeEventListener("mouseup", endDrag);
      setTimeout(function () { moved = false; }, 0);  // the click that ends a drag opens nothing
    }
    set();
    return {
      zoom: function (factor) { zoomAt(vb.x + vb.w / 2, vb.y + vb.h / 2, factor); },
      reset: function () { vb = { x: home.x, y: home.y, w: home.w, h: home.h }; set(); },
      fit: function () { vb = { x: full.x, y: full.y, w: full.w, h: full.h }; set(); },
      dragged: function () { return moved; }
    };
  };

  /* A small "key: value" table from [[key, value], ...]. */
  IV.kvTable = function (rows) {
    return IV.el("table", { class: "iv-table iv-kv" }, rows.map(function (r) {
      return IV.el("tr", null, IV.el("th", null, String(r[0])), IV.el("td", null, r[1] === null ? "" : r[1]));
    }));
  };
})();
