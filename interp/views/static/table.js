/* kind "table": {columns: [name...], rows: [[cell...]...], numeric: [bool per column] (optional),
   highlight: [row indices] (optional)}. Numbers are formatted; a column header click sorts. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  IV.register("table", function (root, data) {
    var cols = data.columns || [], rows = (data.rows || []).slice(), numeric = data.numeric || [];
    var highlight = {};
    (data.highlight || []).forEach(function (i) { highlight[i] = true; });
    var order = rows.map(function (_, i) { return i; }), sortCol = -1, sortDesc = false;
    var table = IV.el("table", { class: "iv-table" });
    root.appendChild(table);
    function cell(v, c) {
      var isNum = numeric[c] || typeof v === "number";
      return IV.el("td", { class: isNum ? "iv-num" : null }, typeof v === "number" ? IV.fmt(v) : (v === null ? "" : String(v)));
    }
    function draw() {
      table.innerHTML = "";
      table.appendChild(IV.el("thead", null, IV.el("tr", null, cols.map(function (c, j) {
        return IV.el("th", { on: { click: function () { sortDesc = sortCol === j ? !sortDesc : true; sortCol = j; resort(); } } },
          c + (sortCol === j ? (sortDesc ? " \u25bc" : " \u25b2") : ""));
      }))));
      table.appendChild(IV.el("tbody", null, order.map(function (i) {
        return IV.el("tr", { class: highlight[i] ? "iv-highlight" : null, "data-row": i },
          rows[i].map(function (v, c) { return cell(v, c); }));
      })));
    }
    function resort() {
      order.sort(function (a, b) {
        var x = rows[a][sortCol], y = rows[b][sortCol];
        var cmp = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return sortDesc ? -cmp : cmp;
      });
      draw();
    }
    draw();
  });
})();
