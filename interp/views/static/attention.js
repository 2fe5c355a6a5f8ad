/* kind "attention": {tokens: [str] (one per position), patterns: [group, head, dst, src] (encoded),
   heads: [[name per head] per group], groups: [label per group] (a layer selector when > 1)}.
   Thumbnails of every head of the chosen group; a click (or Enter) shows a head large. Hover a
   token: every token is shaded by the hovered token's attention to it (the hovered token as
   destination: a row) or, with "as source", by its attention to the hovered token (a column).
   Hover a cell of the large pattern: "dst -> src: weight".
   Hooks: .iv-attn-large[data-head] (selected head), while hovered data-dst / data-src / data-weight;
   .iv-attn-thumb[data-head][data-selected]; .iv-attn-token[data-pos] with data-weight while shading. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var FONT = "11px ui-monospace, 'DejaVu Sans Mono', monospace";

  function short(tok) { var t = IV.token(tok); return t.length > 14 ? t.slice(0, 13) + "\u2026" : t; }

  /* An offscreen canvas of n x n pixels: pattern (group g, head h), white (0) -> blue (1). */
  function patternImage(P, g, h) {
    var n = P.shape[2], m = P.shape[3], off = document.createElement("canvas");
    off.width = m; off.height = n;
    var ctx = off.getContext("2d"), img = ctx.createImageData(m, n);
    for (var i = 0; i < n; i++) {
      for (var j = 0; j < m; j++) {
        var c = IV.rgb(P.at(g, h, i, j), 1), k = 4 * (i * m + j);
        img.data[k] = c[0]; img.data[k + 1] = c[1]; img.data[k + 2] = c[2]; img.data[k + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return off;
  }

  IV.register("attention", function (root, data) {
    var tokens = data.tokens || [], P = IV.array(data.patterns), heads = data.heads || [], groups = data.groups || [];
    if (P.shape.length !== 4) throw new Error("attention: patterns must be [group, head, dst, src], got shape " + P.shape);
    var G = P.shape[0], H = P.shape[1], N = P.shape[2];
    if (N !== tokens.length || P.shape[3] !== tokens.length) throw new Error("attention: pattern does not match the tokens");
    var state = { group: 0, head: 0, source: false, hover: null };
    var images = {};  /* one offscreen image per (group, head), drawn once */
    function image(g, h) { var key = g + "," + h; return images[key] || (images[key] = patternImage(P, g, h)); }
    function w(i, j) { return P.at(state.group, state.head, i, j); }
    function headName() { return (heads[state.group] || [])[state.head] || ("H" + state.head); }

    var tip = IV.tooltip(root);
    root.style.paddingBottom = "44px";  /* room for the tooltip under the pattern */
    var controls = IV.el("div", { class: "iv-controls" });
    if (G > 1) {
      controls.appendChild(IV.select("layer", groups.map(function (label, g) { return { value: g, label: label }; }), 0,
        function (v) { state.group = +v; drawThumbs(); drawLarge(); clearShade(); }));
    }
    controls.appendChild(IV.toggle("shade by attention to the hovered token (as source)", false,
      function (on) { state.source = on; clearShade(); }));
    controls.lastChild.classList.add("iv-attn-source");
    root.appendChild(controls);

    /* token strip */
    var strip = IV.el("div", { class: "iv-attn-tokens", style: "margin: 2px 0 8px; line-height: 1.9" });
    var spans = tokens.map(function (tok, i) {
      return IV.el("span", { class: "iv-token iv-attn-token", "data-pos": i, title: "position " + i,
        style: "border: 1px solid #ddd",
        on: { mouseenter: function () { shade(i); }, mouseleave: clearShade } }, IV.token(tok));
    });
    spans.forEach(function (s) { strip.appendChild(s); });
    var readout = IV.el("div", { class: "iv-note iv-attn-readout" }, "hover a token to shade the others");
    root.appendChild(IV.el("div", null, strip, readout));

    function shade(i) {
      spans.forEach(function (s, j) {
        var v = state.source ? w(j, i) : w(i, j);
        s.style.background = IV.color(v, 1);
        s.style.color = IV.textColor(v, 1);
        s.setAttribute("data-weight", String(v));
        s.classList.toggle("iv-selected", j === i);
      });
      readout.textContent = headName() + ": " + (state.source
        ? "how much each token attends to " + IV.token(tokens[i]) + " (" + i + ")"
        : "how much " + IV.token(tokens[i]) + " (" + i + ") attends to each token");
    }
    function clearShade() {
      spans.forEach(function (s) {
        s.style.background = ""; s.style.color = ""; s.removeAttribute("data-weight"); s.classList.remove("iv-selected");
      });
      readout.textContent = "hover a token to shade the others";
    }

    /* thumbnails and the large pattern */
    var layout = IV.el("div", { class: "iv-grid", style: "align-items: flex-start" });
    var thumbs = IV.el("div", { class: "iv-attn-thumbs", style: "display: grid; grid-template-columns: repeat(" +
      Math.min(H, 4) + ", auto); gap: 6px; align-content: start" });
    var large = IV.el("canvas", { class: "iv-attn-large" });
    var largeTitle = IV.el("h4", { class: "iv-attn-head" });
    layout.appendChild(thumbs);
    layout.appendChild(IV.el("div", { class: "iv-panel" }, largeTitle, large));
    root.appendChild(layout);

    function select(h) { state.head = h; drawThumbs(); drawLarge(); clearShade(); }
    function drawThumbs() {
      thumbs.innerHTML = "";
      var px = N <= 72 ? N * Math.ceil(72 / N) : 72;
      for (var h = 0; h < H; h++) {
        var c = IV.el("canvas", { width: px, height: px, style: "display: block" });
        var ctx = c.getContext("2d");
        ctx.imageSmoothingEnabled = N > px;
        ctx.drawImage(image(state.group, h), 0, 0, px, px);
        var name = (heads[state.group] || [])[h] || ("H" + h), on = h === state.head;
        thumbs.appendChild(IV.el("div", {
          class: "iv-attn-thumb" + (on ? " iv-selected" : ""), "data-head": name, "data-index": h,
          "data-selected": on ? "1" : null, tabindex: 0, role: "button", "aria-pressed": on ? "true" : "false",
          style: "cursor: pointer; padding: 2px; text-align: center; font-size: 11px; border: 2px solid " +
            (on ? "#333" : "transparent"),
          on: {
            click: (function (k) { return function () { select(k); }; })(h),
            keydown: (function (k) { return function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(k); } }; })(h)
          }
        }, c, name));
      }
    }

    var geom = { cell: 0, x0: 0, y0: 0 };
    function drawLarge(hi) {
      var cell = Math.max(3, Math.min(26, Math.floor(440 / Math.max(N, 1))));
      var ctx = large.getContext("2d");
      ctx.font = FONT;
      var labels = cell >= 9, margin = 4;
      if (labels) tokens.forEach(function (t) { margin = Math.max(margin, ctx.measureText(short(t)).width + 8); });
      geom = { cell: cell, x0: Math.ceil(margin), y0: Math.ceil(margin) };
      large.width = geom.x0 + N * cell + 2;
      large.height = geom.y0 + N * cell + 2;
      large.setAttribute("data-head", headName());
      large.setAttribute("data-cell", cell);
      large.setAttribute("data-x0", geom.x0);
      large.setAttribute("data-y0", geom.y0);
      largeTitle.textContent = headName() + " (rows: destination, columns: source)";
      ctx = large.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(image(state.group, state.head), geom.x0, geom.y0, N * cell, N * cell);
      if (labels) {
        ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
        tokens.forEach(function (t, i) {
          ctx.textAlign = "right";
          ctx.fillText(short(t), geom.x0 - 4, geom.y0 + (i + 0.5) * cell);
          ctx.save();
          ctx.translate(geom.x0 + (i + 0.5) * cell, geom.y0 - 4);
          ctx.rotate(-Math.PI / 2);
          ctx.textAlign = "left";
          ctx.fillText(short(t), 0, 0);
          ctx.restore();
        });
      }
      ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1;
      ctx.strokeRect(geom.x0 - 0.5, geom.y0 - 0.5, N * cell + 1, N * cell + 1);
      if (hi) { ctx.strokeStyle = "#111"; ctx.lineWidth = 2; ctx.strokeRect(geom.x0 + hi[1] * cell, geom.y0 + hi[0] * cell, cell, cell); }
    }

    function leaveLarge() {
      ["data-dst", "data-src", "data-weight"].forEach(function (a) { large.removeAttribute(a); });
      tip.hide();
      if (state.hover) { state.hover = null; drawLarge(); }
    }
    large.addEventListener("mousemove", function (e) {
      var box = large.getBoundingClientRect();
      var x = (e.clientX - box.left) * large.width / box.width, y = (e.clientY - box.top) * large.height / box.height;
      var j = Math.floor((x - geom.x0) / geom.cell), i = Math.floor((y - geom.y0) / geom.cell);
      if (i < 0 || j < 0 || i >= N || j >= N) { leaveLarge(); return; }
      var v = w(i, j);
      large.setAttribute("data-dst", i);
      large.setAttribute("data-src", j);
      large.setAttribute("data-weight", String(v));
      if (!state.hover || state.hover[0] !== i || state.hover[1] !== j) { state.hover = [i, j]; drawLarge(state.hover); }
      tip.show(e, headName() + "  " + IV.token(tokens[i]) + " (" + i + ") -> " + IV.token(tokens[j]) + " (" + j + "): " + IV.fmt(v));
      var n = tip.node, rect = root.getBoundingClientRect();  /* flip left where it would overflow */
      if (n.offsetLeft + n.offsetWidth > root.clientWidth) n.style.left = Math.max(0, e.clientX - rect.left - n.offsetWidth - 8) + "px";
    });
    large.addEventListener("mouseleave", leaveLarge);

    drawThumbs();
    drawLarge();
  });
})();
