/* kind "lens" (the logit lens): {labels: [row label], tokens: [prompt str tokens], pos,
   top_tokens: [[str] per row], top_logits / top_probs / top_ranks: [row, k] (encoded),
   target: null | {token, logits, probs, ranks: [row]}}.
   A row per layer ("embed", "L0", ...: the residual after that block), the top-k tokens shaded
   by probability (white 0 -> blue 1), the target's probability and rank per row when tracked.
   Hover a cell: token, logit, probability, rank (0 = top). Hooks: td.iv-lens-cell[data-row]
   [data-col][data-token][data-logit][data-prob][data-rank]; td.iv-lens-target likewise. */
(function () {
  "use strict";
  var IV = window.InterpViews;

  IV.register("lens", function (root, data) {
    var labels = data.labels || [], tokens = data.tokens || [], tops = data.top_tokens || [];
    var logits = IV.array(data.top_logits), probs = IV.array(data.top_probs), ranks = IV.array(data.top_ranks);
    var R = labels.length, K = logits.shape[1] || 0, target = data.target;
    if (logits.shape[0] !== R || probs.shape[0] !== R || tops.length !== R) throw new Error("lens: rows do not match the labels");
    var tgt = target ? { logits: IV.array(target.logits), probs: IV.array(target.probs), ranks: IV.array(target.ranks) } : null;
    var tip = IV.tooltip(root);
    function keepInside(t, box, e) {  /* flip the tooltip to the pointer's left where it would overflow */
      var n = t.node, rect = box.getBoundingClientRect();
      if (n.offsetLeft + n.offsetWidth > box.clientWidth) n.style.left = Math.max(0, e.clientX - rect.left - n.offsetWidth - 8) + "px";
    }
    root.style.paddingBottom = "44px";  /* room for the tooltip under the last row */
    function short(p) { return isNaN(p) ? "n/a" : p >= 0.995 ? "1" : p >= 0.01 ? p.toFixed(2).replace(/^0/, "") : "<.01"; }

    if (tokens.length) {
      root.appendChild(IV.el("div", { class: "iv-lens-prompt", style: "margin: 0 0 6px" },
        IV.el("span", { class: "iv-muted" }, "prompt: "),
        tokens.map(function (t, i) {
          return IV.el("span", { class: "iv-token" + (i === data.pos ? " iv-selected" : ""), "data-pos": i,
            title: i === data.pos ? "the lens reads this position" : "position " + i }, IV.token(t));
        })));
    }

    function describe(row, tok, logit, prob, rank) {
      return IV.token(tok) + "   (" + labels[row] + ")\nlogit " + IV.fmt(logit) + "   prob " + IV.fmt(prob) + "   rank " + rank;
    }
    function cell(cls, row, col, tok, logit, prob, rank, text) {
      var td = IV.el("td", {
        class: cls, "data-row": row, "data-col": col, "data-token": tok, "data-logit": String(logit),
        "data-prob": String(prob), "data-rank": rank,
        style: "background:" + IV.color(prob, 1) + ";color:" + IV.textColor(prob, 1) + ";white-space:pre;padding:2px 5px",
        on: {
          mousemove: function (e) { tip.show(e, describe(row, tok, logit, prob, rank)); keepInside(tip, root, e); },
          mouseleave: function () { tip.hide(); }
        }
      }, text);
      return td;
    }

    var head = [IV.el("th", { title: "the residual stream entering block 0 (embed) or after block l (Ll)" }, "after")];
    if (tgt) head.push(IV.el("th", { class: "iv-lens-target-head" }, "target " + IV.token(target.token)));
    for (var c = 0; c < K; c++) head.push(IV.el("th", null, "#" + c));
    var body = [];
    for (var r = 0; r < R; r++) {
      var tds = [IV.el("th", { class: "iv-lens-label" }, labels[r])];
      if (tgt) {
        var tp = tgt.probs.at(r), rank = tgt.ranks.at(r);
        tds.push(cell("iv-lens-target", r, "target", target.token, tgt.logits.at(r), tp, rank,
          IV.fmt(tp, 3) + "\nrank " + rank));
      }
      for (var k = 0; k < K; k++) {
        var tok = tops[r][k], p = probs.at(r, k), td = cell("iv-lens-cell", r, k, tok, logits.at(r, k), p, ranks.at(r, k),
          [IV.el("span", { class: "iv-lens-tok", style: "font-family: ui-monospace, 'DejaVu Sans Mono', monospace" },
            IV.token(tok)), " ", IV.el("span", { style: "font-size: 10px; opacity: 0.8" }, short(p))]);
        if (tgt && tok === target.token) { td.classList.add("iv-lens-is-target"); td.style.outline = "2px solid #e08214"; }
        tds.push(td);
      }
      body.push(IV.el("tr", { "data-row": r }, tds));
    }
    root.appendChild(IV.el("table", { class: "iv-table iv-lens" }, IV.el("thead", null, IV.el("tr", null, head)),
      IV.el("tbody", null, body)));
    root.appendChild(IV.el("div", { class: "iv-note" },
      "cells: top tokens of each row, shaded by probability; rank 0 = the row's top token"));
  });
})();
