/* kind "heatmap" (interp.views.results.heatmap_data): a labelled 2-D or 3-D result drawn on a
   <canvas>. data: {values: f32 array [*axes], axes, labels: {axis: [display label]}, row_axis,
   col_axis, extra_axis (3-D only, else null), pos_axis (or null), baseline, metric,
   norm: {low, high, text}}.

   - Rows are the row axis (layer 0 at the top), columns the column axis ("tok (i)").
   - 3-D: a selector shows all units as rows ("L0H0", ...), one row-axis entry (e.g. one layer,
     rows = its neurons) or one unit (rows = layers). Only the chosen slice is drawn, one
     pixel per cell into an ImageData scaled up on the canvas; tall slices scroll.
   - Colours are diverging around "no effect" (the baseline), symmetric, with a colour bar.
   - The hovered cell is computed from the pointer position (no per-cell DOM node); its label
     and value go to a tooltip and to the status element .iv-heatmap-status (data-row,
     data-col, data-index, data-label, data-value (as shown), data-raw, data-effect).
   - "normalised" shows (value - low) / (high - low), explained in the view.
   Test hooks: canvas.iv-heatmap-cells has data-cell-width / data-cell-height (CSS px),
   data-rows / data-cols; div.iv-heatmap gets data-mode (the layout shown). */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var MAX_CANVAS = 30000;     // px: browsers refuse taller canvases
  var MAX_ALL_ROWS = 8000;    // "all units as rows" only up to this many rows
  var MAX_UNIT_OPTIONS = 64;  // one option per unit only for up to this many units
  var LUT_SIZE = 511;

  /* Labels of several axes as one name: tags join ("L1" + "H3" -> "L1H3"), others take a space
     ("L1" + "last subject" -> "L1 last subject"). */
  var TAG = /^[A-Za-z]-?\d+$/, ENDS_IN_TAG = /(^|[^A-Za-z])[A-Za-z]-?\d+$/;
  function joinLabels(a, b) {
    if (!a) return b;
    return a + (TAG.test(b) && (TAG.test(a) || ENDS_IN_TAG.test(a)) ? "" : " ") + b;
  }

  function colourTable() {
    var lut = new Uint8ClampedArray(LUT_SIZE * 3);
    for (var i = 0; i < LUT_SIZE; i++) {
      var c = IV.rgb(2 * i / (LUT_SIZE - 1) - 1, 1);
      lut[3 * i] = c[0]; lut[3 * i + 1] = c[1]; lut[3 * i + 2] = c[2];
    }
    return lut;
  }

  /* The layouts a result can be shown in: {value, label, rows, rowLabel(r), offset(r, c)}. */
  function layouts(shape, strides, data) {
    var L = data.labels, ax = data.axes, R = data.row_axis, C = data.col_axis, X = data.extra_axis;
    var sr = strides[R], sc = strides[C];
    if (X === null || X === undefined) {
      return [{ value: "grid", label: ax[R] + " x " + ax[C], rows: shape[R], rowName: ax[R],
        rowLabel: function (r) { return L[ax[R]][r]; },
        offset: function (r, c) { return r * sr + c * sc; } }];
    }
    var sx = strides[X], nR = shape[R], nX = shape[X], out = [];
    var rl = L[ax[R]], xl = L[ax[X]];
    if (nR * nX <= MAX_ALL_ROWS) {
      out.push({ value: "all", label: "all " + ax[X] + "s as rows (" + joinLabels(rl[0], xl[0]) + ", ...)", rows: nR * nX,
        rowName: ax[R] + ", " + ax[X], group: nX,
        rowLabel: function (r) { return joinLabels(rl[Math.floor(r / nX)], xl[r % nX]); },
        offset: function (r, c) { return Math.floor(r / nX) * sr + (r % nX) * sx + c * sc; } });
    }
    for (var a = 0; a < nR; a++) {
      (function (a) {
        out.push({ value: "row:" + a, label: ax[R] + " " + rl[a] + " (rows: " + ax[X] + "s)", rows: nX,
          rowName: ax[X] + " of " + rl[a],
          rowLabel: function (r) { return joinLabels(rl[a], xl[r]); },
          offset: function (r, c) { return a * sr + r * sx + c * sc; } });
      })(a);
    }
    if (nX <= MAX_UNIT_OPTIONS) {
      for (var x = 0; x < nX; x++) {
        (function (x) {
          out.push({ value: "unit:" + x, label: ax[X] + " " + xl[x] + " (rows: " + ax[R] + "s)", rows: nR,
            rowName: ax[R] + " (" + xl[x] + ")",
            rowLabel: function (r) { return joinLabels(rl[r], xl[x]); },
            offset: function (r, c) { return r * sr + x * sx + c * sc; } });
        })(x);
      }
    }
    return out;
  }

  function unravel(k, strides) {
    return strides.map(function (s) { var i = Math.floor(k / s); k -= i * s; return i; });
  }

  /* "L1H3 @ Jordan (2)": the labels of one entry, position last. */
  function entryLabel(index, data) {
    var name = "", pos = null;
    data.axes.forEach(function (a, d) {
      var l = data.labels[a][index[d]];
      if (d === data.pos_axis) pos = l; else name = joinLabels(name, l);
    });
    return pos === null ? name : (name ? name + " @ " + pos : pos);
  }

  function sizeCanvas(canvas, w, h) {
    var dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(w * dpr));
    canvas.height = Math.max(1, Math.round(h * dpr));
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  IV.register("heatmap", function (root, data) {
    var arr = IV.array(data.values), shape = arr.shape, strides = arr.strides, values = arr.data;
    var C = data.col_axis, nC = shape[C], colLabels = data.labels[data.axes[C]];
    var base = +data.baseline || 0, low = +data.norm.low, high = +data.norm.high, span = high - low;
    var modes = layouts(shape, strides, data), lut = colourTable();
    var maxEffect = 0;
    for (var i = 0; i < values.length; i++) {
      var e = Math.abs(values[i] - base);
      if (e > maxEffect && isFinite(e)) maxEffect = e;
    }
    if (!(maxEffect > 0)) maxEffect = 1;
    var state = { mode: modes[0], normalised: false, cw: 0, ch: 0 };

    function shown(v) { return state.normalised ? (v - low) / span : v; }
    function scale() { return state.normalised ? maxEffect / Math.abs(span) : maxEffect; }

    /* ---- layout */
    var wrap = IV.el("div", { class: "iv-heatmap" });
    root.appendChild(wrap);
    var controls = IV.el("div", { class: "iv-controls" });
    wrap.appendChild(controls);
    if (modes.length > 1) {
      var pick = IV.select("show", modes.map(function (m) { return { value: m.value, label: m.label }; }), modes[0].value,
        function (v) { state.mode = modes.filter(function (m) { return m.value === v; })[0]; draw(); });
      pick.querySelector("select").classList.add("iv-heatmap-mode");
      controls.appendChild(pick);
    }
    var norm = IV.toggle("normalised", false, function (on) { state.normalised = on; draw(); });
    norm.querySelector("input").classList.add("iv-heatmap-normalised");
    controls.appendChild(norm);
    var normNote = IV.el("div", { class: "iv-note iv-heatmap-norm-note" }, data.norm.text);
    wrap.appendChild(normNote);
    var caption = IV.el("div", { class: "iv-note iv-heatmap-caption" });
    wrap.appendChild(caption);

    var area = IV.el("div", { style: "display:flex;align-items:flex-start;gap:14px" });
    wrap.appendChild(area);
    var plot = IV.el("div", { style: "position:relative" });
    area.appendChild(plot);
    var head = IV.el("div", { style: "display:flex" });
    var corner = IV.el("div");
    var colCanvas = IV.el("canvas", { class: "iv-heatmap-cols" });
    head.appendChild(corner); head.appendChild(colCanvas);
    plot.appendChild(head);
    var scroller = IV.el("div", { class: "iv-heatmap-scroll", style: "max-height:620px;overflow-y:auto;overflow-x:hidden;display:flex" });
    plot.appendChild(scroller);
    var rowCanvas = IV.el("canvas", { class: "iv-heatmap-rows" });
    var cellBox = IV.el("div", { style: "position:relative;line-height:0" });
    var cells = IV.el("canvas", { class: "iv-heatmap-cells", style: "cursor:crosshair" });
    var cursor = IV.el("div", { class: "iv-heatmap-cursor",
      style: "position:absolute;display:none;pointer-events:none;box-sizing:border-box;border:2px solid #111" });
    cellBox.appendChild(cells); cellBox.appendChild(cursor);
    scroller.appendChild(rowCanvas); scroller.appendChild(cellBox);

    var bar = IV.el("div", { class: "iv-heatmap-colorbar", style: "display:flex;gap:6px;align-items:stretch" });
    var barCanvas = IV.el("canvas");
    var barTicks = IV.el("div", { style: "display:flex;flex-direction:column;justify-content:space-between;font-size:11px" });
    bar.appendChild(barCanvas); bar.appendChild(barTicks);
    area.appendChild(IV.el("div", null, IV.el("div", { class: "iv-note" }, data.metric), bar));

    var status = IV.el("div", { class: "iv-heatmap-status iv-note", style: "font-variant-numeric:tabular-nums;min-height:1.4em" },
      "hover a cell");
    wrap.appendChild(status);
    var tip = IV.tooltip(plot);

    /* ---- drawing */
    function labelFont(ctx) { ctx.font = "11px system-ui, 'DejaVu Sans', sans-serif"; }

    function draw() {
      var m = state.mode, nR = m.rows;
      wrap.setAttribute("data-mode", m.value);
      var cw = Math.max(6, Math.min(56, Math.floor(760 / nC)));
      var ch = nR <= 40 ? 24 : nR <= 150 ? 12 : nR <= 1500 ? 5 : 3;
      if (nR * ch > MAX_CANVAS) ch = Math.max(1, Math.floor(MAX_CANVAS / nR));
      if (nC * cw > MAX_CANVAS) cw = Math.max(1, Math.floor(MAX_CANVAS / nC));
      state.cw = cw; state.ch = ch;

      // the cells: one pixel each, scaled up without smoothing
      var img = new ImageData(nC, nR), px = img.data, s = scale(), b = shown(base);
      for (var r = 0; r < nR; r++) {
        for (var c = 0; c < nC; c++) {
          var v = values[m.offset(r, c)], k = 4 * (r * nC + c);
          if (isNaN(v)) { px[k] = px[k + 1] = px[k + 2] = 221; }
          else {
            var t = (shown(v) - b) / s;
            t = t < -1 ? -1 : t > 1 ? 1 : t;
            var j = 3 * Math.round((t + 1) / 2 * (LUT_SIZE - 1));
            px[k] = lut[j]; px[k + 1] = lut[j + 1]; px[k + 2] = lut[j + 2];
          }
          px[k + 3] = 255;
        }
      }
      var off = document.createElement("canvas");
      off.width = nC; off.height = nR;
      off.getContext("2d").putImageData(img, 0, 0);
      var ctx = sizeCanvas(cells, nC * cw, nR * ch);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off, 0, 0, nC * cw, nR * ch);
      if (m.group && ch >= 3) {  // a line between the row axis' groups (layers)
        ctx.fillStyle = "rgba(0,0,0,0.35)";
        for (var g = m.group; g < nR; g += m.group) ctx.fillRect(0, g * ch - 0.5, nC * cw, 1);
      }
      cells.setAttribute("data-cell-width", cw);
      cells.setAttribute("data-cell-height", ch);
      cells.setAttribute("data-rows", nR);
      cells.setAttribute("data-cols", nC);

      // row labels (every k-th when rows are thin), column labels rotated
      var probe = rowCanvas.getContext("2d");
      labelFont(probe);
      var every = Math.max(1, Math.ceil(12 / ch)), rowW = 0;
      for (var q = 0; q < nR; q += every) rowW = Math.max(rowW, probe.measureText(m.rowLabel(q)).width);
      rowW = Math.ceil(rowW) + 8;
      var rctx = sizeCanvas(rowCanvas, rowW, nR * ch);
      labelFont(rctx);
      rctx.fillStyle = "#222"; rctx.textAlign = "right"; rctx.textBaseline = "middle";
      var rowH = nR * ch;
      for (var q2 = 0; q2 < nR; q2 += every) {
        rctx.fillText(m.rowLabel(q2), rowW - 4, Math.min(Math.max((q2 + 0.5) * ch, 6), rowH - 6));
      }
      corner.style.width = rowW + "px";

      labelFont(probe);
      var colH = 0;
      colLabels.forEach(function (l) { colH = Math.max(colH, probe.measureText(l).width); });
      colH = Math.min(160, Math.ceil(colH) + 8);
      var cctx = sizeCanvas(colCanvas, nC * cw, colH);
      labelFont(cctx);
      cctx.fillStyle = "#222"; cctx.textAlign = "left"; cctx.textBaseline = "middle";
      var colEvery = Math.max(1, Math.ceil(12 / cw));
      for (var c2 = 0; c2 < nC; c2 += colEvery) {
        cctx.save();
        cctx.translate((c2 + 0.5) * cw, colH - 4);
        cctx.rotate(-Math.PI / 2);
        cctx.fillText(colLabels[c2], 0, 0);
        cctx.restore();
      }
      caption.textContent = "rows: " + m.rowName + " (" + nR + ", top to bottom); columns: " + data.axes[C] +
        " (" + nC + ")" + (state.normalised ? "; showing normalised values" : "; showing raw values (" + data.metric + ")");
      drawColourBar(s, b, Math.min(Math.max(nR * ch, 120), 320));
      hide();
    }

    function drawColourBar(s, b, h) {
      var ctx = sizeCanvas(barCanvas, 16, h);
      for (var y = 0; y < h; y++) {
        ctx.fillStyle = IV.color(1 - 2 * y / (h - 1), 1);
        ctx.fillRect(0, y, 16, 1);
      }
      ctx.strokeStyle = "#999"; ctx.strokeRect(0.5, 0.5, 15, h - 1);
      barTicks.style.height = h + "px";
      barTicks.innerHTML = "";
      [[b + s, ""], [b, " (no effect)"], [b - s, ""]].forEach(function (t) {
        barTicks.appendChild(IV.el("span", null, IV.fmt(t[0]) + t[1]));
      });
      bar.setAttribute("data-max", b + s);
      bar.setAttribute("data-center", b);
      bar.setAttribute("data-min", b - s);
    }

    /* ---- hover: the cell from the pointer position */
    function hide() {
      tip.hide();
      cursor.style.display = "none";
    }
    function cellAt(event) {
      var box = cells.getBoundingClientRect();
      var c = Math.floor((event.clientX - box.left) / state.cw), r = Math.floor((event.clientY - box.top) / state.ch);
      return (r >= 0 && r < state.mode.rows && c >= 0 && c < nC) ? [r, c] : null;
    }
    function onMove(event) {
      var at = cellAt(event);
      if (!at) { hide(); return; }
      var r = at[0], c = at[1], k = state.mode.offset(r, c), raw = values[k], index = unravel(k, strides);
      var label = entryLabel(index, data), v = shown(raw), eff = raw - base;
      status.setAttribute("data-row", r);
      status.setAttribute("data-col", c);
      status.setAttribute("data-index", index.join(","));
      status.setAttribute("data-label", label);
      status.setAttribute("data-value", String(v));
      status.setAttribute("data-raw", String(raw));
      status.setAttribute("data-effect", String(eff));
      var text = label + ": " + IV.fmt(v, 5) + (state.normalised ? " (normalised; raw " + IV.fmt(raw, 5) + ")" : "") +
        "  effect " + (eff >= 0 ? "+" : "") + IV.fmt(eff, 4);
      status.textContent = text;
      cursor.style.display = "block";
      cursor.style.left = (c * state.cw) + "px";
      cursor.style.top = (r * state.ch) + "px";
      cursor.style.width = state.cw + "px";
      cursor.style.height = Math.max(2, state.ch) + "px";
      tip.show(event, label + "\n" + data.metric + ": " + IV.fmt(raw, 5) +
        (state.normalised ? "\nnormalised: " + IV.fmt(v, 5) : "") + "\neffect: " + IV.fmt(eff, 5));
    }
    cells.addEventListener("mousemove", onMove);
    cells.addEventListener("mouseleave", hide);

    draw();
  });
})();
