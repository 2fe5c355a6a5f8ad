/* kind "edit": one edit prompt by prompt (probes.edit.evaluate.EditComparison.to_view). data:
   {request: {prompt, subject, new_target}, old, method, layer, scores: {name: percent},
   groups: [name...], shares: {group: {before, after}}, rows: [{group, role ("new" | "keep"), prompt,
   expected, top_before, p_top_before, top_after, p_top_after, p_new_before, p_new_after,
   p_old_before, p_old_after, p_expected_before, p_expected_after, right_before, right_after,
   status ("intended" | "missed" | "changed" | "kept")}]}.
   The scores on top (.iv-edit-score[data-score]), a group filter (.iv-edit-filter), and a table
   whose column headers sort (th[data-col]); cells carry data-col and data-value, rows data-row,
   data-group and data-status: green where a prompt now gives the new target, red where a
   prompt that should keep its answer changed its top token. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var GREEN = "rgba(27,120,55,0.16)", RED = "rgba(178,24,43,0.16)", AMBER = "rgba(224,130,20,0.14)";
  var STATUS = { intended: GREEN, changed: RED, missed: AMBER, kept: null };
  var SCORE_NAMES = [
    ["efficacy", "efficacy", "the edited prompt: P(new) > P(old)"],
    ["efficacy_top1", "efficacy top-1", "the edited prompt: the new target is top-1"],
    ["paraphrase", "paraphrase", "paraphrases: P(new) > P(old)"],
    ["paraphrase_top1", "paraphrase top-1", "paraphrases: the new target is top-1"],
    ["neighbourhood", "neighbourhood", "prompts that keep their answer: P(answer) > P(new)"],
    ["specificity", "specificity", "prompts that keep their answer (right before): still right"],
    ["loss_increase", "fluency loss", "relative increase of the next-token loss"]
  ];

  function pct(v, name) {
    if (v === null || v === undefined || isNaN(v)) return "n/a";
    return (name === "loss_increase" && v >= 0 ? "+" : "") + (+v.toFixed(1)) + " %";
  }

  IV.register("edit", function (root, data) {
    var rows = data.rows || [], groups = data.groups || [], scores = data.scores || {};
    if (!Array.isArray(rows)) throw new Error("edit view needs rows");
    var req = data.request || {}, newT = req.new_target, old = data.old;

    // the scores
    var cards = IV.el("div", { class: "iv-grid iv-edit-scores" });
    SCORE_NAMES.forEach(function (s) {
      if (!(s[0] in scores)) return;
      var v = scores[s[0]];
      cards.appendChild(IV.el("div", { class: "iv-panel iv-edit-score", "data-score": s[0],
        "data-value": v === null ? "" : v, title: s[2], style: "min-width:110px" },
        IV.el("div", { class: "iv-muted", style: "font-size:11px" }, s[1]),
        IV.el("div", { style: "font-size:18px;font-weight:600" }, pct(v, s[0]))));
    });
    root.appendChild(cards);

    // the columns: [key, header, numeric, cell text]
    var cols = [
      ["group", "group", false],
      ["prompt", "prompt", false],
      ["expected", "should give", false],
      ["top_before", "top before", false],
      ["p_top_before", "P", true],
      ["top_after", "top after", false],
      ["p_top_after", "P", true],
      ["p_new_before", "P(" + newT + ") before", true],
      ["p_new_after", "P(" + newT + ") after", true],
      ["p_old_before", "P(" + old + ") before", true],
      ["p_old_after", "P(" + old + ") after", true],
      ["status", "change", false]
    ];
    var group = "", sortCol = null, sortDesc = false;
    var order = rows.map(function (_, i) { return i; });

    var controls = IV.el("div", { class: "iv-controls" });
    var filter = IV.select("group", [{ value: "", label: "all groups (" + rows.length + ")" }].concat(groups.map(function (g) {
      var n = rows.filter(function (r) { return r.group === g; }).length;
      return { value: g, label: g + " (" + n + ")" };
    })), "", function (v) { group = v; draw(); });
    filter.classList.add("iv-edit-filter");
    controls.appendChild(filter);
    var count = IV.el("span", { class: "iv-muted iv-edit-count" });
    controls.appendChild(count);
    root.appendChild(controls);

    var shares = data.shares || {};
    if (groups.length) {
      root.appendChild(IV.el("table", { class: "iv-table iv-edit-shares" },
        IV.el("thead", null, IV.el("tr", null, IV.el("th", null, "group"), IV.el("th", null, "prompts"),
          IV.el("th", null, "right before (top-1)"), IV.el("th", null, "right after"))),
        IV.el("tbody", null, groups.map(function (g) {
          var s = shares[g] || {}, n = rows.filter(function (r) { return r.group === g; }).length;
          return IV.el("tr", { "data-group": g }, IV.el("td", null, g), IV.el("td", { class: "iv-num" }, String(n)),
            IV.el("td", { class: "iv-num" }, IV.fmt(s.before, 3)), IV.el("td", { class: "iv-num" }, IV.fmt(s.after, 3)));
        }))));
    }

    var table = IV.el("table", { class: "iv-table iv-edit-table" });
    root.appendChild(table);

    function value(r, key) { return r[key]; }
    function resort() {
      order = rows.map(function (_, i) { return i; });
      if (sortCol !== null) {
        var numeric = cols.filter(function (c) { return c[0] === sortCol; })[0][2];
        order.sort(function (a, b) {
          var x = value(rows[a], sortCol), y = value(rows[b], sortCol), cmp;
          if (numeric) {
            x = x === null || isNaN(x) ? -Infinity : x; y = y === null || isNaN(y) ? -Infinity : y;
            cmp = x - y;
          } else cmp = String(x).localeCompare(String(y));
          return (sortDesc ? -cmp : cmp) || a - b;
        });
      }
      draw();
    }

    function cellFor(r, c) {
      var key = c[0], v = r[key], attrs = { "data-col": key, class: c[2] ? "iv-num" : null };
      if (c[2]) {
        attrs["data-value"] = v === null ? "" : v;
        return IV.el("td", attrs, IV.fmt(v, 4));
      }
      attrs["data-value"] = v;
      if (key === "prompt" || key === "group") attrs.style = "white-space:nowrap";
      if (key === "prompt") {
        var text = String(v), subj = req.subject, at = subj ? text.indexOf(subj) : -1;
        if (at >= 0) return IV.el("td", attrs, text.slice(0, at), IV.el("b", null, subj), text.slice(at + subj.length));
        return IV.el("td", attrs, text);
      }
      if (key === "top_after" && r.top_after !== r.top_before) {
        attrs.style = "font-weight:600";
      }
      if (key === "status") {
        var label = { intended: "now " + r.expected, missed: "not moved", changed: r.top_before + " \u2192 " + r.top_after,
          kept: "kept" }[v] || v;
        return IV.el("td", attrs, label);
      }
      return IV.el("td", attrs, IV.token(v === null || v === undefined ? "" : v));
    }

    function draw() {
      table.innerHTML = "";
      table.appendChild(IV.el("thead", null, IV.el("tr", null, cols.map(function (c) {
        return IV.el("th", { "data-col": c[0], style: "cursor:pointer", title: "sort",
          on: { click: function () { sortDesc = sortCol === c[0] ? !sortDesc : c[2]; sortCol = c[0]; resort(); } } },
          c[1] + (sortCol === c[0] ? (sortDesc ? " \u25bc" : " \u25b2") : ""));
      }))));
      var shown = 0;
      table.appendChild(IV.el("tbody", null, order.map(function (i) {
        var r = rows[i], hide = group && r.group !== group;
        if (!hide) shown++;
        var bg = STATUS[r.status];
        return IV.el("tr", { "data-row": i, "data-group": r.group, "data-status": r.status, "data-role": r.role,
          class: "iv-edit-row iv-edit-" + r.status,
          style: (bg ? "background:" + bg + ";" : "") + (hide ? "display:none" : "") },
          cols.map(function (c) { return cellFor(r, c); }));
      })));
      count.textContent = shown + " of " + rows.length + " prompts";
    }
    draw();
  });
})();
