"""Our frontend JSON (`probes.graph.io.circuit_tracer_json`) against circuit-tracer 0.5.0's own
(`create_graph_files`) for the same graph, and both opened in circuit-tracer's frontend (issue 23).

Runs in .venv (our code). Steps:
  1. the fact-world model as an HF directory and its shipped transcoders in circuit-tracer's
     per-layer files (a temporary folder, as benchmarks/graph.py does);
  2. benchmarks/peers/circuit_tracer_json.py in .venv-ct: circuit-tracer's attribute +
     create_graph_files (ReLU-then-top-k, our TopK's rule) -> theirs/<slug>.json;
  3. ours: attribution_graph + circuit_tracer_json, the same prompt, thresholds 0.8 / 0.98 ->
     ours/<slug>.json;
  4. a structural and numerical comparison: metadata and qParams, the keys of every node, node
     ids, features, layers, positions, activations, influences, logit fields, and the links
     (matched by their end nodes: counts, the links only one side has, max |weight difference|);
  5. with --render DIR: circuit-tracer's own local server (`circuit_tracer.frontend.local_server.serve`,
     in .venv-ct) serving each folder, its index.html opened in the system Chromium (Playwright,
     no browser download). The page loads six scripts from the network (transformer-circuits.pub:
     hotserver-client-ws.js, d3.js, jetpack_2024-07-20.js, npy_v0.js; unpkg: dagre 0.8.5, pako
     2.1.0); they are answered from npm packages fetched once with `npm pack` into --libs
     (d3.js: d3-jetpack 2.3.0's build/d3v7+jetpack.js, d3 7 with jetpack's helpers, one line
     added, see JETPACK_FIX; dagre 0.8.5; pako 2.1.0), jetpack_2024-07-20.js by a 10-line stand-in
     (JETPACK_SHIM: conventions' c.drawAxis), the hot-reload client and the .npy reader by empty
     scripts (nothing on this page uses them). Every other request off the local server is
     refused and reported. Counts the nodes drawn (`.link-graph text.node`) and the links, and saves
     DIR/<which>.png.

    .venv/bin/python benchmarks/peers/check_circuit_tracer_json.py --json benchmarks/results/circuit_tracer_json.json \
        --render benchmarks/results/circuit_tracer_frontend

Exit status 1 if the two JSON files differ beyond --tol (other than the documented error-node id
scheme) or a page fails to draw its nodes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PEER = ROOT / "benchmarks" / "peers" / "circuit_tracer_json.py"
PROMPT, SLUG, SCAN = "Michael Jordan plays the sport of", "jordan", "factworld"
NPM = {"d3-jetpack@2.3.0": "build/d3v7+jetpack.js", "dagre@0.8.5": "dist/dagre.min.js",
       "pako@2.1.0": "dist/pako.min.js"}
CDN = {  # URL the page asks for -> npm package (file above), or None for an empty script
    "https://transformer-circuits.pub/2025/attribution-graphs/static_js/lib/hotserver-client-ws.js": None,
    "https://transformer-circuits.pub/2025/attribution-graphs/static_js/lib/d3.js": "d3-jetpack@2.3.0",
    "https://transformer-circuits.pub/2025/attribution-graphs/static_js/lib/jetpack_2024-07-20.js": "jetpack-shim",
    "https://transformer-circuits.pub/2025/attribution-graphs/static_js/lib/npy_v0.js": None,
    "https://unpkg.com/dagre@0.8.5/dist/dagre.min.js": "dagre@0.8.5",
    "https://unpkg.com/pako@2.1.0/dist/pako.min.js": "pako@2.1.0",
}


# ---------------------------------------------------------------- the two files
def build_both(peer_python: str, folder: Path) -> tuple[Path, Path]:
    import torch

    from benchmarks.graph import _export
    from models import load
    from probes.graph import attribution_graph
    from probes.graph.io import circuit_tracer_json
    from probes.sae import load_transcoders
    from probes.sae.circuit_tracer_format import save_circuit_tracer_transcoders

    torch.set_num_threads(2)
    model = load("factworld").eval()
    transcoders = load_transcoders("factworld")
    _export(model, folder / "hf")
    save_circuit_tracer_transcoders(transcoders, folder / "ct", model_name=SCAN)
    subprocess.run([peer_python, str(PEER), "--model", str(folder / "hf"), "--transcoders", str(folder / "ct"),
                    "--prompt", PROMPT, "--out-dir", str(folder / "theirs"), "--slug", SLUG, "--scan", SCAN,
                    "--relu-before-topk"], check=True, cwd=str(ROOT), env=os.environ | {"HF_HUB_OFFLINE": "1"})
    graph = attribution_graph(model, PROMPT, transcoders, progress=False)
    ours = circuit_tracer_json(graph, folder / "ours", SLUG, scan=SCAN)
    return folder / "theirs" / f"{SLUG}.json", ours


def _key(node: dict) -> tuple:
    """What a node is, whatever its id: (feature_type, layer, position, feature number)."""
    return node["feature_type"], node["layer"], node["ctx_idx"], node["feature"]


def _max_diff(pairs) -> float:
    diffs = [abs(a - b) for a, b in pairs if a is not None and b is not None]
    return max(diffs, default=0.0)


def compare(theirs: dict, ours: dict) -> dict:
    """Structural and numerical differences between two frontend files."""
    t_nodes = {_key(n): n for n in theirs["nodes"]}
    o_nodes = {_key(n): n for n in ours["nodes"]}
    common = sorted(set(t_nodes) & set(o_nodes), key=str)
    node_fields = ("node_id", "jsNodeId", "feature", "layer", "ctx_idx", "feature_type", "is_target_logit",
                   "run_idx", "reverse_ctx_idx", "clerp")
    field_mismatch = {}
    for field in node_fields:
        bad = [k for k in common if t_nodes[k][field] != o_nodes[k][field]]
        if bad:
            field_mismatch[field] = {"count": len(bad), "example": {"theirs": t_nodes[bad[0]][field],
                                                                     "ours": o_nodes[bad[0]][field]},
                                     "feature_types": sorted({k[0] for k in bad})}
    t_id = {n["node_id"]: _key(n) for n in theirs["nodes"]}
    o_id = {n["node_id"]: _key(n) for n in ours["nodes"]}
    t_links = {(t_id[lk["source"]], t_id[lk["target"]]): lk["weight"] for lk in theirs["links"]}
    o_links = {(o_id[lk["source"]], o_id[lk["target"]]): lk["weight"] for lk in ours["links"]}
    both = set(t_links) & set(o_links)
    return {
        "metadata_keys_equal": set(theirs["metadata"]) == set(ours["metadata"]),
        "metadata_differs": {k: {"theirs": theirs["metadata"][k], "ours": ours["metadata"].get(k)}
                             for k in theirs["metadata"] if theirs["metadata"][k] != ours["metadata"].get(k)},
        "qParams_equal": theirs["qParams"] == ours["qParams"],
        "top_level_keys_equal": set(theirs) == set(ours),
        "node_key_sets_equal": {frozenset(n) for n in theirs["nodes"]} == {frozenset(n) for n in ours["nodes"]},
        "nodes": {"theirs": len(t_nodes), "ours": len(o_nodes), "common": len(common),
                  "only_theirs": [list(k) for k in sorted(set(t_nodes) - set(o_nodes), key=str)],
                  "only_ours": [list(k) for k in sorted(set(o_nodes) - set(t_nodes), key=str)]},
        "node_field_mismatches": field_mismatch,
        "max_abs_activation_diff": _max_diff((t_nodes[k]["activation"], o_nodes[k]["activation"]) for k in common),
        "max_abs_influence_diff": _max_diff((t_nodes[k]["influence"], o_nodes[k]["influence"]) for k in common),
        "max_abs_token_prob_diff": _max_diff((t_nodes[k]["token_prob"], o_nodes[k]["token_prob"]) for k in common),
        "links": {"theirs": len(t_links), "ours": len(o_links), "common": len(both),
                  "only_theirs": len(set(t_links) - set(o_links)), "only_ours": len(set(o_links) - set(t_links)),
                  "max_abs_weight_diff": _max_diff((t_links[k], o_links[k]) for k in both),
                  "max_abs_weight": max((abs(w) for w in t_links.values()), default=0.0)},
    }


def verdict(diff: dict, tol: float) -> list[str]:
    """The problems in a comparison. Two known differences are not: an error node's id (ours
    "{layer}_-1_{pos}" / jsNodeId "{layer}_-1-{pos}"; circuit-tracer 0.5.0's "0_{layer}_{pos}" /
    "{layer}_{pos}-0", which can equal a layer-0 feature's id "0_{feat}_{pos}"), and metadata.prompt."""
    problems = [name for name in ("metadata_keys_equal", "qParams_equal", "top_level_keys_equal",
                                  "node_key_sets_equal") if not diff[name]]
    # metadata.prompt: circuit-tracer writes tokenizer.decode(all token ids), BOS text included
    # ("<bos> Michael ..."); ours is the prompt as given
    problems += [f"metadata {k}" for k, v in diff["metadata_differs"].items()
                 if not (k == "prompt" and v["theirs"].endswith(v["ours"]))]
    problems += [f"nodes differ {diff['nodes']['only_theirs']} / {diff['nodes']['only_ours']}"
                 for _ in [0] if diff["nodes"]["only_theirs"] or diff["nodes"]["only_ours"]]
    for field, info in diff["node_field_mismatches"].items():
        if not (field in ("node_id", "jsNodeId") and info["feature_types"] == ["mlp reconstruction error"]):
            problems.append(f"node field {field}: {info}")
    for name in ("max_abs_activation_diff", "max_abs_influence_diff", "max_abs_token_prob_diff"):
        if diff[name] > tol:
            problems.append(f"{name} {diff[name]:.3g}")
    links = diff["links"]
    scale = max(1.0, links["max_abs_weight"])
    if links["only_theirs"] or links["only_ours"] or links["max_abs_weight_diff"] > tol * scale:
        problems.append(f"links {links}")
    return problems


def fingerprint() -> dict:
    """sha256 of the shipped fact-world weights and transcoders the reference was made from."""
    from models.checkpoint import shipped_dictionaries
    from models.factworld import checkpoint_dir

    files = [checkpoint_dir() / "model.safetensors"] + sorted(shipped_dictionaries("factworld").rglob("*.safetensors"))
    return {str(f.relative_to(ROOT)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def write_reference(theirs: dict, folder: Path) -> None:
    """circuit-tracer's <slug>.json (gzipped, compact) + what it was made from."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(theirs, separators=(",", ":"), ensure_ascii=False)
    with gzip.GzipFile(folder / f"{SLUG}.json.gz", "wb", mtime=0) as f:
        f.write(text.encode("utf-8"))
    made = {"made_by": "circuit-tracer 0.5.0 attribute (ReLU-then-top-k) + create_graph_files, "
                       "benchmarks/peers/check_circuit_tracer_json.py --write-reference",
            "prompt": PROMPT, "slug": SLUG, "scan": SCAN, "node_threshold": 0.8, "edge_threshold": 0.98,
            "max_n_logits": 10, "desired_logit_prob": 0.95, "weights_sha256": fingerprint()}
    (folder / "made_from.json").write_text(json.dumps(made, indent=1) + "\n")


# ---------------------------------------------------------------- circuit-tracer's frontend
# d3-jetpack 2.3.0's build/d3v7+jetpack.js bundles d3-selection and d3-transition twice and puts
# jetpack's methods (append('div.class'), appendMany, at, st, translate, ...) on the copy that
# d3.select does NOT return. One line, inserted before its exports, puts them on the exported copy too.
JETPACK_METHODS = ("translate", "append", "insert", "parent", "selectAppend", "tspans", "appendMany", "at", "st")
JETPACK_FIX = ("  " + " ".join(f"selection$1.prototype.{m} = selection.prototype.{m};" for m in JETPACK_METHODS)
               + " transition$1.prototype.at = at; transition$1.prototype.st = st;"
               + " transition$1.prototype.translate = translateSelection;"
               + " selection$1.prototype.prop = selection$1.prototype.property;\n")
JETPACK_ANCHOR = "  exports.Adder = Adder;\n"
# transformer-circuits.pub's jetpack_2024-07-20.js is not on npm; the one thing the page uses that
# d3-jetpack 2.3.0 lacks is conventions' `c.drawAxis(svg = c.svg)` (2.3.0 has d3.drawAxis(c)).
JETPACK_SHIM = """(function () {
  var conventions = d3.conventions;
  d3.conventions = function (c) {
    c = conventions(c);
    c.drawAxis = function (svg) {
      svg = svg || c.svg;
      var xAxisSel = svg.append('g').attr('class', 'x axis')
        .attr('transform', 'translate(0,' + c.height + ')').call(c.xAxis);
      var yAxisSel = svg.append('g').attr('class', 'y axis').call(c.yAxis);
      return {xAxisSel: xAxisSel, yAxisSel: yAxisSel};
    };
    return c;
  };
})();
"""


def npm_libs(libs: Path) -> dict[str, Path]:
    """The npm files the page's CDN scripts are answered with (`npm pack` once into `libs`)."""
    out = {}
    for spec, file in NPM.items():
        folder = libs / spec.replace("@", "-")
        if not (folder / "package" / file).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tgz = subprocess.run(["npm", "pack", spec, "--silent"], cwd=str(folder), check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            subprocess.run(["tar", "xzf", tgz], cwd=str(folder), check=True)
        out[spec] = folder / "package" / file
    text = out["d3-jetpack@2.3.0"].read_text(encoding="utf-8")
    if text.count(JETPACK_ANCHOR) != 1 or "function selection$1()" not in text:
        raise RuntimeError(f"{out['d3-jetpack@2.3.0']} is not the d3-jetpack 2.3.0 build this check patches")
    fixed = out["d3-jetpack@2.3.0"].with_name("d3v7+jetpack.fixed.js")
    fixed.write_text(text.replace(JETPACK_ANCHOR, JETPACK_FIX + JETPACK_ANCHOR), encoding="utf-8")
    out["d3-jetpack@2.3.0"] = fixed
    shim = libs / "jetpack-shim.js"
    shim.write_text(JETPACK_SHIM, encoding="utf-8")
    out["jetpack-shim"] = shim
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(peer_python: str, data_dir: Path, png: Path, libs: dict[str, Path]) -> dict:
    """Open circuit-tracer's frontend (its own server) on `data_dir` with the target logit clicked;
    count what it draws."""
    written = json.loads((data_dir / f"{SLUG}.json").read_text())
    clicked = next(n["node_id"] for n in written["nodes"] if n["is_target_logit"])
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from interp.views.browser import CHROMIUM_ARGS, chromium_path

    port = _free_port()
    code = ("import sys, time; from circuit_tracer.frontend.local_server import serve; "
            "s = serve(data_dir=sys.argv[1], port=int(sys.argv[2])); print('ready', flush=True); time.sleep(600)")
    server = subprocess.Popen([peer_python, "-c", code, str(data_dir), str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    refused, errors, answered = [], [], []
    try:
        assert server.stdout.readline().strip() == "ready", "circuit-tracer's server did not start"
        base = f"http://localhost:{port}"

        def route(r):
            url = r.request.url
            if url.startswith(base):
                return r.continue_()
            if url in CDN:
                answered.append(url)
                lib = CDN[url]
                return r.fulfill(status=200, content_type="application/javascript",
                                 body=libs[lib].read_bytes() if lib else b"")
            refused.append(url)
            return r.abort()

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1600, "height": 1100})
            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            # the target logit clicked: the page lists its input links (.node-connections .feature-row)
            page.goto(f"{base}/index.html?slug={SLUG}&clickedId={clicked}", wait_until="load", timeout=60_000)
            try:
                page.wait_for_selector(".link-graph text.node", state="attached", timeout=30_000)
                page.wait_for_selector(".node-connections .input .feature-row", state="attached", timeout=30_000)
                time.sleep(2)  # the force layout settles
            except PlaywrightTimeout:
                errors.append("no node or no input link of the clicked logit drawn within 30 s")
            counts = page.evaluate("""() => ({
                nodes_drawn: document.querySelectorAll('.link-graph text.node').length,
                clicked_nodes: document.querySelectorAll('.link-graph text.node.clicked').length,
                clicked_input_rows: document.querySelectorAll('.node-connections .input .feature-row').length,
                prompt_ticks: document.querySelectorAll('.link-graph g.prompt-token').length,
                title: document.title})""")
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), clip={"x": 0, "y": 0, "width": 1600, "height": 560})  # graph + links
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    shown = png.resolve().relative_to(ROOT) if png.resolve().is_relative_to(ROOT) else png
    return counts | {"nodes_in_file": len(written["nodes"]), "clicked": clicked, "screenshot": str(shown),
                     "cdn_answered_locally": answered, "refused_requests": refused, "errors": errors}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=str(ROOT / ".venv-ct" / "bin" / "python"))
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--keep", type=Path, default=None, help="copy theirs/ and ours/ here")
    p.add_argument("--write-reference", type=Path, default=None,
                   help="write circuit-tracer's file (gzipped) and the weights' fingerprint here "
                        "(tests/data/circuit_tracer/frontend, read by tests/test_circuit_tracer_files.py)")
    p.add_argument("--render", type=Path, default=None, help="open both in circuit-tracer's frontend; PNGs here")
    p.add_argument("--libs", type=Path, default=Path(tempfile.gettempdir()) / "circuit_tracer_frontend_libs")
    p.add_argument("--tol", type=float, default=1e-4)
    args = p.parse_args(argv)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"{args.peer_python} not found: bash benchmarks/peers/setup_circuit_tracer.sh builds it")
    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory(prefix="ct_json_") as tmp:
        folder = Path(tmp)
        theirs_path, ours_path = build_both(args.peer_python, folder)
        theirs, ours = json.loads(theirs_path.read_text()), json.loads(ours_path.read_text())
        diff = compare(theirs, ours)
        problems = verdict(diff, args.tol)
        report = {"prompt": PROMPT, "slug": SLUG, "comparison": diff, "problems": problems}
        if args.render:
            libs = npm_libs(args.libs)
            report["frontend"] = {which: render(args.peer_python, folder / which, args.render / f"{which}.png", libs)
                                  for which in ("theirs", "ours")}
            for which, r in report["frontend"].items():
                if r["nodes_drawn"] == 0 or r["clicked_input_rows"] == 0 or r["errors"] or r["refused_requests"]:
                    problems.append(f"frontend {which}: {r['nodes_drawn']} nodes, errors {r['errors']}, "
                                    f"refused {r['refused_requests']}")
        if args.write_reference:
            write_reference(theirs, args.write_reference)
        if args.keep:
            for which in ("theirs", "ours"):
                shutil.copytree(folder / which, args.keep / which, dirs_exist_ok=True)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print("as expected" if not problems else f"problems: {problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
