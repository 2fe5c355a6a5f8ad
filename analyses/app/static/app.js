/* The explorer page: talks to the app's JSON API and draws every result with the package's
   views (InterpViews.mount). Each tab is its own session (X-Interp-Session header), so an edit
   made here is applied only around this tab's computations.
   DOM hooks for tests: body[data-ready], body[data-busy] while the prompt's views compute; #iv-top[data-top-token][data-top-prob];
   #iv-error[data-error]; #iv-job[data-status][data-job]; #iv-job-result[data-values][data-kind];
   #iv-edits[data-count]; #iv-dashboard[data-unit][data-layer][data-index];
   #iv-graph[data-status][data-job]; #iv-graph-result[data-kind=graph][data-features][data-errors][data-tokens]
   [data-targets][data-nodes-kept][data-edges-kept][data-target-prob][data-replacement][data-completeness]. */
(function () {
  "use strict";
  var IV = window.InterpViews;
  var $ = function (id) { return document.getElementById(id); };
  var SESSION = newSessionId();

  function newSessionId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID().replace(/-/g, "");
    var s = "";
    for (var i = 0; i < 32; i++) s += Math.floor(Math.random() * 16).toString(16);
    return s;
  }

  /* fetch JSON; rejects with the server's {"error": message} for any non-2xx answer. */
  function api(method, path, body) {
    var opts = { method: method, headers: { "X-Interp-Session": SESSION } };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { var e = new Error(data.error || ("HTTP " + r.status)); e.status = r.status; throw e; }
        return data;
      });
    });
  }

  function showError(err) {
    var box = $("iv-error");
    box.textContent = err.message || String(err);
    box.setAttribute("data-error", box.textContent);
    box.hidden = false;
  }
  function clearError() { var box = $("iv-error"); box.hidden = true; box.textContent = ""; box.removeAttribute("data-error"); }

  /* Mount every payload of result.views into `el`, one after the other. */
  function show(el, result) {
    el.innerHTML = "";
    (result.views || []).forEach(function (payload) {
      var holder = IV.el("div", { class: "iv-app-view" });
      el.appendChild(holder);
      IV.mount(holder, payload);
    });
  }

  function prompt() { return $("iv-prompt").value; }

  /* ---------------------------------------------------------------- the prompt */
  function runPrompt() {
    clearError();
    var text = prompt();
    $("iv-busy").textContent = "computing...";
    document.body.setAttribute("data-busy", "1");
    return api("POST", "/api/predict", { prompt: text, k: 10 }).then(function (r) {
      $("iv-tokens").textContent = "tokens: " + r.tokens.map(IV.token).join(" | ");
      show($("iv-top"), r);
      $("iv-top").setAttribute("data-top-token", r.top[0].token);
      $("iv-top").setAttribute("data-top-prob", String(r.top[0].prob));
      return api("POST", "/api/logit_lens", { prompt: text });
    }).then(function (r) {
      show($("iv-lens"), r);
      return api("POST", "/api/attention", { prompt: text });
    }).then(function (r) {
      show($("iv-attention"), r);
      return runDla();
    }).catch(showError).then(function () { $("iv-busy").textContent = ""; document.body.removeAttribute("data-busy"); });
  }

  function runDla() {
    var body = { prompt: prompt(), answer: $("iv-dla-answer").value || null,
                 counterfactual: $("iv-dla-counterfactual").value || null };
    return api("POST", "/api/dla", body).then(function (r) { show($("iv-dla"), r); });
  }

  /* ---------------------------------------------------------------- dashboards */
  function openDashboard(unit, layer, index) {
    clearError();
    $("iv-dash-unit").value = unit; $("iv-dash-layer").value = layer; $("iv-dash-index").value = index;
    var el = $("iv-dashboard");
    el.removeAttribute("data-unit");
    var body = { unit: unit, layer: layer, index: index };
    if (unit !== "feature") body.prompt = prompt();
    return api("POST", "/api/dashboard", body).then(function (r) {
      show(el, r);
      el.setAttribute("data-unit", unit); el.setAttribute("data-layer", layer); el.setAttribute("data-index", index);
      el.scrollIntoView({ block: "nearest" });
    }).catch(showError);
  }

  /* "L1H3", "L0N42 @ Jordan (2)", "L2F7": the site a label names, or null. */
  function siteOf(label) {
    var m = /\bL(\d+)([HNF])(\d+)\b/.exec(label || "");
    if (!m) return null;
    return { unit: { H: "head", N: "neuron", F: "feature" }[m[2]], layer: +m[1], index: +m[3] };
  }

  /* A click inside a result: the label of what was clicked (a bar, an attention thumbnail, a
     heatmap cell via its status line, a table row), opened as a dashboard when it names a site. */
  function onResultClick(event) {
    var t = event.target, label = null;
    var tagged = t.closest ? t.closest("[data-head],[data-label]") : null;
    if (tagged) label = tagged.getAttribute("data-head") || tagged.getAttribute("data-label");
    if (!label && t.tagName === "CANVAS") {
      var view = t.closest(".interp-view");
      var status = view && view.querySelector("[class$='-status'][data-label]");
      if (status) label = status.getAttribute("data-label");
    }
    if (!label) {
      var row = t.closest ? t.closest("tr") : null;
      if (row && row.cells && row.cells.length) label = row.cells[0].textContent;
    }
    var site = siteOf(label);
    if (site) openDashboard(site.unit, site.layer, site.index);
  }

  /* ---------------------------------------------------------------- jobs */
  function fieldsetOf(kind) { return document.querySelector("#iv-job-form fieldset[data-kind='" + kind + "']"); }

  function chooseKind(kind) {
    document.querySelectorAll("#iv-job-form fieldset").forEach(function (fs) { fs.hidden = fs.getAttribute("data-kind") !== kind; });
    fieldsetOf(kind).querySelectorAll("[data-follow=prompt]").forEach(function (inp) { if (!inp.value) inp.value = prompt(); });
  }

  function params(kind) {
    var out = {};
    fieldsetOf(kind).querySelectorAll("input, select, textarea").forEach(function (inp) {
      var v = inp.value;
      if (v === "") return;
      if (inp.type === "number") v = +v;
      if (inp.name === "check") v = v.split("\n").filter(function (s) { return s.trim(); });
      out[inp.name] = v;
    });
    return out;
  }

  /* A job's controls: the panel (#ID[data-status][data-job]), its progress bar, status line,
     cancel button and result box (#ID-progress, -status, -cancel, -result); `done(s)` draws a
     finished job's result. The experiments and the attribution graph each have one. */
  function jobPanel(id, done) {
    return { box: $(id), progress: $(id + "-progress"), status: $(id + "-status"), cancel: $(id + "-cancel"),
             result: $(id + "-result"), done: done, current: null };
  }
  var EXPERIMENT = jobPanel("iv-job", experimentDone), GRAPH = jobPanel("iv-graph", graphDone);

  function setJobStatus(panel, s) {
    panel.box.setAttribute("data-status", s.status);
    panel.box.setAttribute("data-job", s.id || "");
    var total = s.total || 0;
    panel.progress.max = total || 1;
    panel.progress.value = total ? s.done : (s.status === "done" ? 1 : 0);
    // once done, the counts and name of the last progress bar (a sub-step) would only confuse
    panel.status.textContent = s.status === "done" ? "done" :
      s.status + (total ? " " + s.done + "/" + total : "") + (s.desc ? " (" + s.desc + ")" : "");
    panel.cancel.disabled = !(s.status === "queued" || s.status === "running");
  }

  /* Submit a job of `kind` and follow it until it ends. */
  function runJob(panel, kind, body) {
    clearError();
    var result = panel.result;
    result.innerHTML = ""; result.removeAttribute("data-values"); result.removeAttribute("data-kind");
    setJobStatus(panel, { status: "submitting", done: 0, total: 0 });
    return api("POST", "/api/jobs", { kind: kind, params: body }).then(function (s) {
      panel.current = s.id;
      return follow(panel, s);
    }).catch(function (err) { setJobStatus(panel, { status: "error", done: 0, total: 0 }); showError(err); });
  }

  function startJob() {
    var kind = $("iv-job-kind").value;
    return runJob(EXPERIMENT, kind, params(kind));
  }

  function follow(panel, s) {
    setJobStatus(panel, s);
    if (s.status === "done") return panel.done(panel.result, s);
    if (s.status === "error") { showError(new Error(s.error)); return null; }
    if (s.status === "cancelled") return null;
    return new Promise(function (resolve) { setTimeout(resolve, 150); }).then(function () {
      return api("GET", "/api/jobs/" + s.id);
    }).then(function (next) { return follow(panel, next); });
  }

  function experimentDone(el, s) {
    var r = s.result;
    show(el, r);
    if (r.values !== undefined) el.setAttribute("data-values", JSON.stringify(r.values));
    el.setAttribute("data-kind", s.kind);
    if (s.kind === "edit") return refreshEdits();
    return null;
  }

  function cancelJob(panel) {
    if (!panel.current) return null;
    return api("DELETE", "/api/jobs/" + panel.current).then(function (s) { setJobStatus(panel, s); }).catch(showError);
  }

  /* ---------------------------------------------------------------- the attribution graph */
  function graphParams() {
    var out = {};
    $("iv-graph-form").querySelectorAll("input").forEach(function (inp) {
      if (inp.value === "") return;
      out[inp.name] = inp.type === "number" ? +inp.value : inp.value;
    });
    if (!out.prompt) out.prompt = prompt();  // default: the page's prompt
    return out;
  }

  /* The graph's view, and its numbers on #iv-graph-result: data-kind="graph", data-features,
     data-errors, data-tokens, data-targets, data-nodes-kept, data-edges-kept, data-target-prob
     (the first target's probability), data-replacement, data-completeness. */
  function graphDone(el, s) {
    var r = s.result, c = r.counts, t = r.targets[0] || {};
    show(el, r);
    var attrs = { "data-features": c.features, "data-errors": c.errors, "data-tokens": c.tokens, "data-targets": c.targets,
                  "data-nodes-kept": r.pruned.nodes, "data-edges-kept": r.pruned.edges, "data-target-prob": t.prob,
                  "data-replacement": r.scores.replacement, "data-completeness": r.scores.completeness };
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    el.setAttribute("data-kind", s.kind);
    $("iv-graph-summary").textContent = c.features + " active features, " + c.errors + " error nodes, " + c.tokens +
      " tokens, " + c.targets + " target(s) (" + r.targets.map(function (x) { return x.label + " " + IV.fmt(x.prob); }).join(", ") +
      "); kept " + r.pruned.nodes + " nodes and " + r.pruned.edges + " edges; replacement score " +
      IV.fmt(r.scores.replacement) + ", completeness " + IV.fmt(r.scores.completeness);
    return null;
  }

  /* ---------------------------------------------------------------- edits */
  function refreshEdits() {
    return api("GET", "/api/edits").then(function (r) {
      var list = $("iv-edits");
      list.innerHTML = "";
      list.setAttribute("data-count", String(r.edits.length));
      r.edits.forEach(function (e) {
        var q = e.request || {};
        list.appendChild(IV.el("li", { "data-index": e.index }, e.method + " at layer " + e.layer + ": " +
          (q.prompt || "") + " -> " + (q.new_target || "")));
      });
    });
  }

  function compareEdits() {
    clearError();
    return api("POST", "/api/edits/compare", { prompts: [prompt()] }).then(function (r) { show($("iv-compare"), r); }).catch(showError);
  }

  function revertEdits() {
    clearError();
    return api("POST", "/api/edits/revert", {}).then(function () { $("iv-compare").innerHTML = ""; return refreshEdits(); })
      .catch(showError);
  }

  /* ---------------------------------------------------------------- start */
  function fill(info) {
    var d = info.defaults;
    $("iv-model").textContent = "model: " + info.model + " (" + info.n_layers + " layers, " + info.n_heads + " heads, " +
      info.d_mlp + " neurons per layer" + (info.transcoders ? ", transcoders" : "") + ")";
    $("iv-session").textContent = "tab session " + SESSION.slice(0, 8);
    $("iv-prompt").value = d.clean;
    var sites = $("iv-sweep-site");
    info.sites.forEach(function (s) { sites.appendChild(IV.el("option", { value: s }, s)); });
    var set = function (kind, name, v) { var inp = fieldsetOf(kind).querySelector("[name=" + name + "]"); if (inp) inp.value = v; };
    set("sweep", "clean", d.clean); set("sweep", "corrupted", d.corrupted);
    set("sweep", "answer", d.answer); set("sweep", "counterfactual", d.counterfactual);
    ["trace", "localise", "edit"].forEach(function (k) { set(k, "prompt", d.clean); set(k, "subject", d.subject); });
    set("localise", "target", d.answer);
    if (!info.transcoders) {
      $("iv-graph-start").disabled = true;
      $("iv-graph-status").textContent = "this model has no transcoders: no attribution graph";
    }
  }

  function start() {
    $("iv-prompt-form").addEventListener("submit", function (e) { e.preventDefault(); runPrompt(); });
    $("iv-dla-form").addEventListener("submit", function (e) { e.preventDefault(); clearError(); runDla().catch(showError); });
    $("iv-dash-form").addEventListener("submit", function (e) {
      e.preventDefault();
      openDashboard($("iv-dash-unit").value, +$("iv-dash-layer").value, +$("iv-dash-index").value);
    });
    $("iv-job-kind").addEventListener("change", function () { chooseKind($("iv-job-kind").value); });
    $("iv-job-form").addEventListener("submit", function (e) { e.preventDefault(); startJob(); });
    $("iv-job-cancel").addEventListener("click", function () { cancelJob(EXPERIMENT); });
    $("iv-graph-form").addEventListener("submit", function (e) {
      e.preventDefault();
      $("iv-graph-summary").textContent = "";
      runJob(GRAPH, "graph", graphParams());
    });
    $("iv-graph-cancel").addEventListener("click", function () { cancelJob(GRAPH); });
    $("iv-edit-compare").addEventListener("click", compareEdits);
    $("iv-edit-revert").addEventListener("click", revertEdits);
    document.querySelectorAll(".iv-app-clickable").forEach(function (el) { el.addEventListener("click", onResultClick); });
    api("GET", "/api/info").then(function (info) {
      fill(info);
      chooseKind($("iv-job-kind").value);
      document.body.setAttribute("data-ready", "1");
    }).catch(showError);
  }

  window.InterpApp = { api: api, session: function () { return SESSION; }, siteOf: siteOf };
  start();
})();
