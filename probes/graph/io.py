"""Files for attribution graphs: our own `.pt` (exact round trip), and circuit-tracer's two
formats (its `Graph.to_pt` dict, and the frontend's `<slug>.json` + `graph-metadata.json`).

    path = save_graph(graph, "graphs/jordan.pt")          # refuses an existing file unless overwrite=True
    graph = load_graph("graphs/jordan.pt")                # == the saved graph (torch.equal on every tensor)
    to_circuit_tracer_pt(graph, "graphs/jordan_ct.pt", vocab_size=model.cfg.d_vocab)
    circuit_tracer_json(graph, "graph_files", "jordan")   # the frontend's files, pruned at 0.8 / 0.98

Our file is a dict of tensors, strings, numbers, None and lists/tuples/dicts of them only, so
`torch.load(path, weights_only=True)` reads it (no pickled classes; loading runs no code):

    {"format": "probes.graph.AttributionGraph", "version": 1, "prompt", "token_ids", "tokens",
     "n_layers", "features", "activations", "targets": [{"label", "token", "prob", "vector"}],
     "adjacency", "values", "zero_positions", "transcoders", "settings"}

Every file is written to a temporary file in the same folder and then renamed over the target,
so a crash never leaves half a file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from probes.graph.graph import AttributionGraph, Target

FORMAT = "probes.graph.AttributionGraph"
VERSION = 1
FIELDS = ("prompt", "token_ids", "tokens", "n_layers", "features", "activations", "targets", "adjacency", "values",
          "zero_positions", "transcoders", "settings")
TARGET_FIELDS = ("label", "token", "prob", "vector")
METADATA_FILE = "graph-metadata.json"
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

PathLike = Union[str, Path]


# ============================================================ atomic writes
def _check_target_path(path: PathLike, overwrite: bool) -> Path:
    """`path` as a Path if it may be written: not a folder, and new unless `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: give a new path, or overwrite=True to replace it")
    return path


def _atomic_write(path: Path, write: Callable[[Any], None]) -> Path:
    """Call `write(binary file)` on a temporary file next to `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file's mode (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ============================================================ what a file may hold
def _check_plain(value: Any, where: str) -> None:
    """A clear error unless `value` is a tensor, str, int, float, bool, None, or a list / tuple /
    dict (str or int keys) of those: what torch.load(weights_only=True) reads back as it was."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has key {key!r} of type {type(key).__name__}: keys must be str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}: a graph file holds only tensors, strings, numbers, "
                    "None, and lists / tuples / dicts of them")


def _plain_copy(value: Any) -> Any:
    """`value` with every tensor detached, on the CPU and compact (a view would save its whole storage)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone().contiguous()
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    return value


# ============================================================ consistency checks
def _tensor(value: Any, name: str, shape: Sequence[Optional[int]], kind: str) -> torch.Tensor:
    """`value` if it is a tensor of `kind` ("int" or "float") with `shape` (None = any size)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    if value.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, value.shape)):
        raise ValueError(f"{name} has shape {list(value.shape)}, expected {want}")
    if kind == "int" and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must hold integers, got {value.dtype}")
    if kind == "float" and not value.is_floating_point():
        raise TypeError(f"{name} must hold floats, got {value.dtype}")
    return value


def _check_features(graph: AttributionGraph) -> None:
    feats = _tensor(graph.features, "features", (None, 3), "int")
    if feats.shape[0] == 0:
        return
    layer, pos, index = feats.unbind(1)
    if layer.min() < 0 or layer.max() >= graph.n_layers:
        raise ValueError(f"features has layers {layer.min()}..{layer.max()}: allowed 0..{graph.n_layers - 1}")
    if pos.min() < 0 or pos.max() >= graph.n_pos:
        raise ValueError(f"features has positions {pos.min()}..{pos.max()}: allowed 0..{graph.n_pos - 1}")
    if index.min() < 0:
        raise ValueError("features has a negative feature index")
    rows = [tuple(r) for r in feats.tolist()]
    if any(a >= b for a, b in zip(rows, rows[1:])):
        raise ValueError("features must be sorted by (layer, position, index) without repeats (the node order)")


def _check_targets(targets: Any) -> None:
    if not isinstance(targets, list) or not all(isinstance(t, Target) for t in targets):
        raise TypeError("targets must be a list of Target")
    dims = set()
    for i, t in enumerate(targets):
        if not isinstance(t.label, str):
            raise TypeError(f"targets[{i}].label must be a str, got {type(t.label).__name__}")
        if t.token is not None and (isinstance(t.token, bool) or not isinstance(t.token, int) or t.token < 0):
            raise ValueError(f"targets[{i}].token must be a vocabulary id (int >= 0) or None, got {t.token!r}")
        if isinstance(t.prob, bool) or not isinstance(t.prob, (int, float)) or not math.isfinite(t.prob):
            raise ValueError(f"targets[{i}].prob must be a finite number, got {t.prob!r}")
        dims.add(_tensor(t.vector, f"targets[{i}].vector", (None,), "float").shape[0])
    if len(dims) > 1:
        raise ValueError(f"the targets' vectors have different sizes {sorted(dims)}")


def check_graph(graph: AttributionGraph) -> None:
    """A clear error (which field, what is allowed) unless every field of `graph` has the type and
    shape the node order implies; nothing is changed."""
    if not isinstance(graph, AttributionGraph):
        raise TypeError(f"expected an AttributionGraph, got {type(graph).__name__}")
    if not isinstance(graph.prompt, str):
        raise TypeError(f"prompt must be a str, got {type(graph.prompt).__name__}")
    n_pos = _tensor(graph.token_ids, "token_ids", (None,), "int").shape[0]
    if not isinstance(graph.tokens, list) or not all(isinstance(s, str) for s in graph.tokens) or len(graph.tokens) != n_pos:
        raise ValueError(f"tokens must be a list of {n_pos} strings (one per token id)")
    if isinstance(graph.n_layers, bool) or not isinstance(graph.n_layers, int) or graph.n_layers < 1:
        raise ValueError(f"n_layers must be an int >= 1, got {graph.n_layers!r}")
    _check_features(graph)
    _tensor(graph.activations, "activations", (graph.n_features,), "float")
    _check_targets(graph.targets)
    n = graph.n_nodes
    _tensor(graph.adjacency, "adjacency", (n, n), "float")
    _tensor(graph.values, "values", (n,), "float")
    zp = graph.zero_positions
    if isinstance(zp, bool) or not isinstance(zp, int) or not 0 <= zp <= n_pos:
        raise ValueError(f"zero_positions must be an int in 0..{n_pos}, got {zp!r}")
    if not isinstance(graph.transcoders, list) or not all(isinstance(s, str) for s in graph.transcoders):
        raise TypeError("transcoders must be a list of strings")
    if not isinstance(graph.settings, dict):
        raise TypeError(f"settings must be a dict, got {type(graph.settings).__name__}")
    _check_plain(graph.settings, "settings")


# ============================================================ our own file
def _payload(graph: AttributionGraph) -> dict:
    targets = [{"label": t.label, "token": None if t.token is None else int(t.token), "prob": float(t.prob),
                "vector": t.vector} for t in graph.targets]
    fields = {name: getattr(graph, name) for name in FIELDS} | {"targets": targets}
    return {"format": FORMAT, "version": VERSION} | _plain_copy(fields)


def save_graph(graph: AttributionGraph, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write `graph` to `path` (a .pt file readable with torch.load(weights_only=True)); an existing
    file is refused unless `overwrite`. The graph is checked first (check_graph): a bad graph
    writes nothing. Returns the path."""
    check_graph(graph)
    path = _check_target_path(path, overwrite)
    payload = _payload(graph)
    return _atomic_write(path, lambda f: torch.save(payload, f))


def _read_payload(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one holding pickled classes
        raise ValueError(f"{path} is not an attribution graph file (torch.load(weights_only=True) failed: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = ("; it looks like circuit-tracer's Graph.to_pt file, which we write but do not read"
                if isinstance(payload, dict) and "adjacency_matrix" in payload else "")
        raise ValueError(f"{path} is not an attribution graph file written by probes.graph.io.save_graph{hint}")
    if not isinstance(payload.get("version"), int) or payload["version"] > VERSION:
        raise ValueError(f"{path} has graph file version {payload.get('version')!r}; this code reads up to {VERSION}")
    missing = [name for name in FIELDS if name not in payload]
    if missing:
        raise ValueError(f"{path} lacks the graph fields {missing}")
    return payload


def _targets_from(records: Any, path: Path) -> list[Target]:
    if not isinstance(records, list) or not all(isinstance(r, dict) and set(r) == set(TARGET_FIELDS) for r in records):
        raise ValueError(f"{path}: targets must be a list of dicts with keys {list(TARGET_FIELDS)}")
    return [Target(label=r["label"], token=r["token"], prob=r["prob"], vector=r["vector"]) for r in records]


def load_graph(path: PathLike) -> AttributionGraph:
    """The graph that save_graph wrote to `path`, checked (shapes, node counts, feature order)."""
    path = Path(path)
    payload = _read_payload(path)
    fields = {name: payload[name] for name in FIELDS} | {"targets": _targets_from(payload["targets"], path)}
    graph = AttributionGraph(**fields)
    try:
        check_graph(graph)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} holds an inconsistent graph: {err}") from None
    return graph


# ============================================================ circuit-tracer: Graph.to_pt
def _model_cfg(graph: AttributionGraph) -> dict:
    cfg = graph.settings.get("model_cfg", graph.settings.get("cfg", {}))
    return dict(cfg) if isinstance(cfg, dict) else {}


def _vocab_size(graph: AttributionGraph, vocab_size: Optional[int], cfg: dict) -> int:
    """vocab_size, else the model config's d_vocab, else settings["vocab_size" | "d_vocab"]."""
    for found in (vocab_size, cfg.get("d_vocab"), graph.settings.get("vocab_size"), graph.settings.get("d_vocab")):
        if found is not None:
            break
    if found is None:
        raise ValueError("circuit-tracer's files need the vocabulary size: pass vocab_size=model.cfg.d_vocab "
                         "(or put 'vocab_size' in graph.settings)")
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise ValueError(f"vocab_size must be a positive int, got {found!r}")
    tokens = [t.token for t in graph.targets if t.token is not None] + graph.token_ids.tolist()
    if tokens and max(tokens) >= found:
        raise ValueError(f"vocab_size {found} is too small for token id {max(tokens)} of this graph")
    return found


def _vocab_ids(graph: AttributionGraph, vocab_size: int) -> list[int]:
    """Each target's vocabulary id; a custom direction i gets circuit-tracer's virtual id vocab_size + i."""
    return [t.token if t.token is not None else vocab_size + i for i, t in enumerate(graph.targets)]


def _default_scan(graph: AttributionGraph) -> Union[str, list[str], None]:
    """settings["scan"], else the transcoders' name (one) or list of names (several), else None."""
    if graph.settings.get("scan") is not None:
        return graph.settings["scan"]
    if len(graph.transcoders) == 1:
        return graph.transcoders[0]
    return list(graph.transcoders) or None


def _check_scan(scan: Any) -> None:
    if scan is not None and not isinstance(scan, str) and not (
            isinstance(scan, list) and scan and all(isinstance(s, str) for s in scan)):
        raise TypeError(f"scan must be a str, a non-empty list of str, or None; got {scan!r}")


def to_circuit_tracer_pt(graph: AttributionGraph, path: PathLike, *, scan: Union[str, list[str], None] = None,
                         cfg: Optional[dict] = None, vocab_size: Optional[int] = None, overwrite: bool = False) -> Path:
    """Write the dict that circuit-tracer's `Graph.to_pt` saves (its node order is ours):

        input_string, input_tokens [n_pos] long, adjacency_matrix [n_nodes, n_nodes] float32,
        active_features [n_features, 3] long (layer, pos, feat), selected_features = arange(n_features)
        (every active feature is a node), activation_values [n_features] float32,
        logit_probabilities [n_targets] float32, logit_tokens [n_targets] long (v0.1) and
        logit_targets [(token_str, vocab_idx), ...] plain tuples (newer; LogitTarget's fields),
        vocab_size, cfg, scan.

    A custom-direction target gets circuit-tracer's virtual id vocab_size + i. `scan` defaults to
    settings["scan"] or the graph's transcoder names. `cfg` is a PLAIN DICT (n_layers, d_vocab,
    and `cfg=` / settings["model_cfg"] merged in), not the HookedTransformerConfig circuit-tracer
    pickles: we have no TransformerLens config to pickle, and a dict keeps the file loadable with
    weights_only=True. So circuit-tracer's `Graph.from_pt` gives a graph whose `.cfg` is a dict;
    its `create_graph_files` reads `graph.cfg.n_layers` / `.tokenizer_name` as attributes and
    would need them wrapped (e.g. in a SimpleNamespace). v0.1's `Graph(**d)` also rejects the
    newer keys (logit_targets, vocab_size); drop them for v0.1."""
    check_graph(graph)
    model_cfg = _model_cfg(graph) | dict(cfg or {})
    size = _vocab_size(graph, vocab_size, model_cfg)
    model_cfg |= {"n_layers": graph.n_layers, "d_vocab": size}
    _check_plain(model_cfg, "cfg")
    scan = _default_scan(graph) if scan is None else scan
    _check_scan(scan)
    path = _check_target_path(path, overwrite)
    ids = _vocab_ids(graph, size)
    payload = _plain_copy({
        "input_string": graph.prompt,
        "input_tokens": graph.token_ids.long(),
        "adjacency_matrix": graph.adjacency.float(),
        "active_features": graph.features.long(),
        "selected_features": torch.arange(graph.n_features),
        "activation_values": graph.activations.float(),
        "logit_probabilities": torch.tensor([float(t.prob) for t in graph.targets], dtype=torch.float32),
        "logit_tokens": torch.tensor(ids, dtype=torch.long),
        "logit_targets": [(t.label, i) for t, i in zip(graph.targets, ids)],
        "vocab_size": size,
        "cfg": model_cfg,
        "scan": scan,
    })
    return _atomic_write(path, lambda f: torch.save(payload, f))


# ============================================================ circuit-tracer: frontend JSON
def process_token(token: str) -> str:
    """circuit-tracer's display form of a token: newline ⏎, tab →, carriage return ↵."""
    return token.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


def cantor_pairing(layer: int, feature: int) -> int:
    """The newer frontend's `feature` number of a transcoder feature: (l+f)(l+f+1)/2 + f."""
    return (layer + feature) * (layer + feature + 1) // 2 + feature


def _node(node_id: str, feature: int, layer: str, ctx_idx: int, feature_type: str, js: str, **extra: Any) -> dict:
    """One frontend node with every field circuit-tracer's Node model writes (None -> null)."""
    node = {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": ctx_idx, "feature_type": feature_type,
            "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": js,
            "clerp": "", "influence": None, "activation": None}
    return node | extra


def _frontend_node(graph: AttributionGraph, i: int, cumulative: torch.Tensor, ids: list[int]) -> dict:
    kind, layer, pos, index = graph.node_site(i)
    influence = float(cumulative[i])
    if kind == "feature":
        return _node(f"{layer}_{index}_{pos}", cantor_pairing(layer, index), str(layer), pos, "cross layer transcoder",
                     f"{layer}_{index}-0", influence=influence, activation=float(graph.activations[i]))
    if kind == "error":
        return _node(f"{layer}_-1_{pos}", -1, str(layer), pos, "mlp reconstruction error", f"{layer}_-1-{pos}",
                     influence=influence)
    if kind == "token":
        return _node(f"E_{index}_{pos}", pos, "E", pos, "embedding", f"E_{index}-{pos}", influence=influence)
    t = i - graph.target_nodes.start
    target, vocab, top = graph.targets[t], ids[t], str(graph.n_layers + 1)
    prob = float(target.prob)
    return _node(f"{top}_{vocab}_{pos}", vocab, top, pos, "logit", f"L_{vocab}-{pos}", token_prob=prob,
                 is_target_logit=t == 0, clerp=f'Output "{process_token(target.label)}" (p={prob:.3f})')


def _check_pruned(pruned: Any, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(node_mask [n] bool, edge_mask [n, n] bool, cumulative [n]) of a prune result."""
    try:
        parts = pruned.node_mask, pruned.edge_mask, pruned.cumulative
    except AttributeError:
        raise TypeError(f"pruned must have node_mask, edge_mask and cumulative (probes.graph.prune), "
                        f"got {type(pruned).__name__}") from None
    for name, value, shape in zip(("node_mask", "edge_mask", "cumulative"), parts, ((n,), (n, n), (n,))):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            raise ValueError(f"pruned.{name} must be a tensor of shape {list(shape)} for this graph's {n} nodes, "
                             f"got {getattr(value, 'shape', type(value).__name__)}")
    if parts[0].dtype != torch.bool or parts[1].dtype != torch.bool:
        raise TypeError("pruned.node_mask and pruned.edge_mask must be bool tensors")
    if not torch.isfinite(parts[2].double()).all():
        raise ValueError("pruned.cumulative holds a NaN or infinity")
    return parts[0].cpu(), parts[1].cpu(), parts[2].detach().cpu()


def _nodes_and_links(graph: AttributionGraph, pruned: Any, ids: list[int]) -> tuple[list[dict], list[dict]]:
    """Kept nodes (node_mask, plus every token and target) that a kept link touches, or that are a
    token or a target; links = edge_mask edges between kept nodes, weight = adjacency[target, source]."""
    node_mask, edge_mask, cumulative = _check_pruned(pruned, graph.n_nodes)
    keep = node_mask.clone()
    keep[graph.token_nodes.start:] = True
    nodes = {i: _frontend_node(graph, i, cumulative, ids) for i in keep.nonzero().flatten().tolist()}
    adjacency = graph.adjacency.detach().cpu()
    links, touched = [], set()
    for dst, src in edge_mask.nonzero().tolist():
        if src in nodes and dst in nodes:
            links.append({"source": nodes[src]["node_id"], "target": nodes[dst]["node_id"],
                          "weight": float(adjacency[dst, src])})
            touched.update((src, dst))
    first_token = graph.token_nodes.start
    used = [node for i, node in nodes.items() if i in touched or i >= first_token]
    return used, links


def _scan_metadata(scan: Union[str, list[str], None]) -> tuple[str, list[str]]:
    """(scan, transcoder_list): a list of transcoder ids becomes "custom-<hash>" (a stable sha256
    prefix; circuit-tracer uses Python's hash(), which changes from run to run)."""
    if scan is None:
        raise ValueError("the frontend needs a scan name: pass scan= (a str, or a list of transcoder ids), or "
                         "set graph.settings['scan'] or graph.transcoders")
    _check_scan(scan)
    if isinstance(scan, str):
        return scan, []
    digest = hashlib.sha256("-".join(scan).encode("utf-8")).hexdigest()[:16]
    return f"custom-{digest}", list(scan)


def _read_metadata(path: Path) -> dict:
    if not path.exists():
        return {"graphs": []}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); move it away or fix it") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("graphs"), list) or not all(
            isinstance(g, dict) for g in metadata["graphs"]):
        raise ValueError(f'{path} is not a graph-metadata file ({{"graphs": [metadata, ...]}})')
    return metadata


def circuit_tracer_json(graph: AttributionGraph, out_dir: PathLike, slug: str, *, node_threshold: float = 0.8,
                        edge_threshold: float = 0.98, pruned: Any = None, scan: Union[str, list[str], None] = None,
                        vocab_size: Optional[int] = None, overwrite: bool = False) -> Path:
    """Write circuit-tracer's frontend files into `out_dir`: `<slug>.json` = {metadata, qParams,
    nodes, links} and `graph-metadata.json` = {"graphs": [metadata, ...]} (this slug's entry
    replaced, the others kept). Returns the path of `<slug>.json`; an existing one is refused
    unless `overwrite` (everything is checked before anything is written).

    Nodes and links come from `pruned` (anything with node_mask [n_nodes] bool, edge_mask
    [n_nodes, n_nodes] bool, cumulative [n_nodes]), by default graph.prune(node_threshold,
    edge_threshold). Ids follow the newer circuit-tracer (schema_version 1): feature
    "{layer}_{feat}_{pos}" with `feature` = cantor_pairing(layer, feat) (not v0.1's
    feat + 10**ceil(log10(d_transcoder)) * layer), error "{layer}_-1_{pos}" / jsNodeId
    "{layer}_-1-{pos}" (circuit-tracer's since 0.5.1; 0.5.0 wrote "0_{layer}_{pos}" /
    "{layer}_{pos}-0", which can equal a layer-0 feature's id), token "E_{vocab}_{pos}", logit
    "{n_layers+1}_{vocab}_{n_pos-1}". `influence` is the node's cumulative score (null for
    logits and `activation` null except for features, as circuit-tracer writes them). Tokens and
    targets are always written. metadata.prompt is graph.prompt (circuit-tracer writes the
    decoded token ids, BOS text included). Checked against circuit-tracer 0.5.0's own
    create_graph_files (same nodes, fields and links) and opened in its frontend by
    benchmarks/peers/check_circuit_tracer_json.py."""
    check_graph(graph)
    if not isinstance(slug, str) or not SLUG.fullmatch(slug) or slug == Path(METADATA_FILE).stem:
        raise ValueError(f"slug must be letters, digits, '.', '_' or '-' (not starting with one of the last "
                         f"three) and not {Path(METADATA_FILE).stem!r}; got {slug!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file; give a directory")
    graph_path = _check_target_path(out_dir / f"{slug}.json", overwrite)
    metadata_path = out_dir / METADATA_FILE
    index = _read_metadata(metadata_path)
    scan_name, transcoder_list = _scan_metadata(_default_scan(graph) if scan is None else scan)
    has_custom = any(t.token is None for t in graph.targets)
    ids = _vocab_ids(graph, _vocab_size(graph, vocab_size, _model_cfg(graph)) if has_custom else 0)
    pruned = graph.prune(node_threshold, edge_threshold) if pruned is None else pruned
    nodes, links = _nodes_and_links(graph, pruned, ids)
    metadata = {"slug": slug, "scan": scan_name, "transcoder_list": transcoder_list,
                "prompt_tokens": [process_token(s) for s in graph.tokens], "prompt": graph.prompt,
                "node_threshold": float(node_threshold), "schema_version": 1}
    q_params = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    _write_json(graph_path, {"metadata": metadata, "qParams": q_params, "nodes": nodes, "links": links})
    index["graphs"] = [g for g in index["graphs"] if g.get("slug") != slug] + [metadata]
    _write_json(metadata_path, index)
    return graph_path


__all__ = ["save_graph", "load_graph", "check_graph", "to_circuit_tracer_pt", "circuit_tracer_json", "cantor_pairing",
           "process_token", "FORMAT", "VERSION"]
