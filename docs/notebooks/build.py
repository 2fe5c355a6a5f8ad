"""The tutorial notebooks, written as Python source: this file makes every `.ipynb` beside it.

    .venv/bin/python docs/notebooks/build.py           # (re)write the notebooks
    .venv/bin/python docs/notebooks/build.py --check   # exit 1 if a committed notebook differs

Each notebook is a list of cells: `md(...)` for text, `code(...)` for Python. They are saved
without outputs, with fixed cell ids, so the committed files are exactly what this script
writes (`tests/test_notebooks.py` checks that, and runs every notebook top to bottom).
Every notebook runs on the shipped fact-world model (`models.load("factworld")`) on a CPU in
seconds; a cell that ends with a result object shows its interactive view inline.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str) -> tuple[str, str]:
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", textwrap.dedent(text).strip("\n"))


SETUP = code("""
    import torch
    import models

    torch.set_grad_enabled(False)   # nothing here trains; the functions that need gradients turn them on themselves
    model = models.load("factworld")
    prompt = "Michael Jordan plays the sport of"
    other = "Michael Phelps plays the sport of"
    print(model.cfg.n_layers, "layers,", model.cfg.n_heads, "heads,", model.cfg.d_mlp, "neurons per MLP")
    print(model.to_str_tokens(prompt))
""")

# ====================================================================================== 1
MICHAEL_JORDAN = [
    md("""
        # Michael Jordan, end to end

        How does a transformer know that *"Michael Jordan plays the sport of"* is followed by
        *"basketball"*? This notebook follows the fact through the shipped **fact-world model**
        (4 layers, d_model 128, 4 heads, 512 ReLU neurons per MLP, trained from scratch on a
        knowledge base we wrote), so every answer can be checked against facts we know:

        1. the **prediction**, and when it appears (logit lens);
        2. **where the information flows** (activation patching);
        3. the **heads** that move it to the last position;
        4. **where the fact is stored** (MLP neurons as keys and values, localisation);
        5. **editing** it (ROME), and reverting the edit exactly;
        6. its **features** (the shipped transcoders);
        7. its **circuit** (edge attribution and faithfulness).

        Everything runs on a CPU in a few seconds. A cell that ends with a result shows its
        interactive view.
    """),
    SETUP,
    md("""
        ## 1. The prediction

        `test_prompt` is TransformerLens' first look at a prompt: the answer's rank and
        probability, and the top tokens. Michael Phelps swims; Alexis Jordan is a singer with
        no sport ("none"). Nobody else called Michael or Jordan plays basketball, so the model
        can only know the answer from the *pair* of name tokens.
    """),
    code("""
        from interp.explore import test_prompt

        test_prompt(prompt, "basketball", model, top_k=3)
    """),
    code("""
        for subject in ["Michael Jordan", "Michael Phelps", "Alexis Jordan"]:
            probs = model(f"{subject} plays the sport of")[0, -1].softmax(-1)
            top = int(probs.argmax())
            print(f"{subject} -> {model.to_string(top)} (p = {float(probs[top]):.3f})")
    """),
    md("""
        The **logit lens** reads the residual stream at the last position ("of") through the
        final norm and the unembedding, entering each layer and after the last: at which depth
        does "basketball" become the answer?
    """),
    code("""
        from probes.logit_lens import logit_lens

        lens = logit_lens(model, prompt)
        labels, logits = lens                      # [n_layers + 1, d_vocab]
        basketball = model.to_single_token("basketball")
        for label, row in zip(labels, logits.softmax(-1)):
            print(f"{label:>5}: P(basketball) = {float(row[basketball]):.3f}, top = {model.to_string(int(row.argmax()))}")
        lens.to_view()
    """),
    md("""
        ## 2. Where the information flows: activation patching

        Run *"Michael Phelps plays the sport of"* (corrupted) and copy one activation from the
        Michael Jordan run (clean) into it. The metric is the logit difference basketball −
        swimming at the last position; `normalized()` rescales it so that 0 is the corrupted
        run and 1 the clean one. Patching each MLP's output at each position:
    """),
    code("""
        from interp import metrics
        from interp.patching import sweep

        ld = metrics.logit_diff(model, "basketball", "swimming")
        mlp = sweep(model, prompt, other, ld, site="mlp_out").normalized()
        print(f"MLP 0 at 'Jordan' restores {float(mlp.values[0, 2]):.2f}")
        mlp
    """),
    code("""
        attn = sweep(model, prompt, other, ld, site="attn_out").normalized()
        print(f"attention 1 at 'of' restores {float(attn.values[1, 6]):.2f}")
        attn
    """),
    md("""
        The fact is looked up by layer 0's MLP at the last subject token ("Jordan"), and
        layer 1's attention moves it to "of".

        ## 3. The heads that move it

        Patch each head's output (`hook_z`) at every position at once, then look at where
        the layer-1 heads attend.
    """),
    code("""
        heads = sweep(model, prompt, other, ld, site="head_z").normalized()
        for label, value in heads.top(3):
            print(f"{label}: restores {value:.2f}")
        heads
    """),
    code("""
        from interp.views.attention import attention_patterns

        _, cache = model.run_with_cache(prompt)
        print(f"L1H3 attends {float(cache['pattern', 1][0, 3, -1, 2]):.2f} from 'of' to 'Jordan'")
        attention_patterns(model, prompt)
    """),
    md("""
        The **recall chain** (Geva et al. 2023) asks what each head writes at "of" *from the
        subject's positions*, read through the final norm and the unembedding.
    """),
    code("""
        from models import factworld
        from probes.recall import attribute_extraction

        ext = attribute_extraction(model, prompt, "Michael Jordan", "basketball", candidates=factworld.objects("sport"))
        print(f"L1H3: attention to the subject {float(ext.attention[1, 3]):.2f}, "
              f"writes {float(ext.from_subject[1, 3]):+.2f} to logit(basketball) from there")
    """),
    md("""
        ## 4. Where the fact is stored: MLP neurons as keys and values

        Neuron *n* of layer *l* has a **key** (`W_in[:, n]` and its bias, then the ReLU) and a
        **value** (`W_out[n]`, the direction it writes). `fact_neurons` ranks neurons by their
        direct contribution to logit(basketball); `and_detection` asks whether a key fires for
        "Michael Jordan" but not for "Michael Phelps" or "Alexis Jordan".
    """),
    code("""
        from probes.ffn import fact_neurons, and_detection

        ranked = fact_neurons(model, prompt, "basketball", k=5)
        for n in ranked:
            print(f"{n.site.label}: activation {n.activation:.2f}, contribution {n.contribution:+.2f}, writes {n.top_tokens[:3]}")
        rows = and_detection(model, prompt, other, "Alexis Jordan plays the sport of", pos=2, k=3)
        for row in rows:
            print(f"AND key at 'Jordan' {row.neuron.label}: {row.full:.2f} / {row.first_only:.2f} / {row.last_only:.2f}"
                  " (Michael Jordan / Michael Phelps / Alexis Jordan)")
    """),
    md("""
        **Localisation**: the fewest (layer, position, neuron) sites whose zero ablation moves
        "basketball" off the top, while the other facts keep at least 95% of their accuracy
        (with the same sites ablated at the corresponding positions), against random sites at
        the same layers and positions.
    """),
    code("""
        from probes.ffn import localise
        from analyses.factworld_facts import other_facts

        loc = localise(model, prompt, "basketball", subject="Michael Jordan", other_facts=other_facts("Michael Jordan", "sport"))
        print(f"localised with {loc.k} sites: {[s.label for s in loc.sites]}")
        v = loc.validation
        print(f"margin {v.margin_before:+.2f} -> {v.margin_after:+.2f}; random sites leave "
              f"{min(v.random_margins):+.2f} to {max(v.random_margins):+.2f}")
    """),
    md("""
        A neuron's **dashboard** shows where it fires over the fact world's prompts, what its
        value promotes, and what its key reads at the top context. Here the layer-3 writer
        L3N494:
    """),
    code("""
        from probes.ffn.dashboard import neuron_dashboard
        from analyses.features import corpus

        texts = corpus(limit=60)          # every fact prompt of the first 60 people
        dash = neuron_dashboard(model, 3, 494, texts, progress=False)
        print(f"{dash.label} fires on {dash.frequency:.1%} of tokens; its value promotes {[t for t, _ in dash.value_top[:3]]}")
        dash.to_view()
    """),
    md("""
        ## 5. Editing the fact (ROME), then reverting it

        If layer 0's MLP stores the fact, a rank-one change to its `W_out` at Michael Jordan's
        key should change the answer everywhere he is mentioned, and nowhere else. `rome` picks
        the layer by a causal trace and uses key statistics over the model's own corpus.
        `edit.applied(model)` applies the edit for the body of a `with` and restores the
        weights bit for bit on exit.
    """),
    code("""
        from probes.edit import rome

        def answer(text):
            return model.to_string(int(model(text)[0, -1].argmax()))

        before = {name: p.clone() for name, p in model.named_parameters()}
        edit = rome(model, prompt, "Michael Jordan", "soccer", progress=False)
        print("edited layer:", edit.info["layer"])
        with edit.applied(model):
            print("after the edit:", answer(prompt))
            print("a held-out paraphrase:", answer("Michael Jordan is famous for the sport of"))
            print("Michael Phelps:", answer(other))
        print("after the revert:", answer(prompt))
        print("weights bit-identical:", all(torch.equal(p, before[name]) for name, p in model.named_parameters()))
    """),
    md("""
        ## 6. Features: the shipped transcoders

        A transcoder replaces an MLP by a sparse dictionary (512 features per layer, 32 active
        per token). Attached to the model, its features are hook points and sites like neurons.
        Which features write "basketball" − "swimming" directly?
    """),
    code("""
        from interp.attribution import feature_logit_attribution
        from probes.sae import attached, load_transcoders, feature_dashboard

        transcoders = load_transcoders("factworld")
        with attached(model, transcoders):
            fla = feature_logit_attribution(model, prompt, "basketball", "swimming")
        for label, value in fla.top(3):
            print(f"{label}: {value:+.2f}")
        fla
    """),
    md("""
        At "Jordan", layer 0's feature 258 fires for Michael Jordan but not for Michael Phelps
        or Alexis Jordan: a candidate "Michael Jordan" feature. Its dashboard says otherwise: it
        fires on a few percent of all tokens, most strongly in other people's sentences, and its
        value promotes surnames (Edwards, Darwin, Newton), not a sport.
    """),
    code("""
        acts = transcoders[0].encode(cache[transcoders[0].in_hook])[0, 2]
        print(f"L0F258 at 'Jordan': {float(acts[258]):.2f}")
        feature_dashboard(model, transcoders[0], 258, texts, progress=False).to_view()
    """),
    md("""
        ## 7. The circuit

        The model as a graph: the embedding, every head (with its q / k / v inputs) and every
        MLP, joined by edges through the residual stream. Exact path patching scores each edge
        by how much the metric drops when only that edge carries the corrupted run; the top
        edges form a circuit, and its faithfulness says how much of the behaviour it carries
        (1 = the whole model).
    """),
    code("""
        from interp.circuits import attribute_edges, faithfulness, top_edges
        from interp.circuits.view import circuit_view

        edge_scores = attribute_edges(model, prompt, other, ld, method="exact", progress=False)
        for u, d, s in edge_scores.top(3):
            print(f"{u} -> {d}: {s:+.2f}")
        circuit = top_edges(edge_scores, 36)
        print(f"faithfulness of the top 36 edges: {faithfulness(model, prompt, other, ld, circuit).value:.2f}")
        circuit_view(edge_scores.graph, edge_scores, circuit)
    """),
    md("""
        ## Summary

        Layer 0's MLP combines "Michael" and "Jordan" at the last subject token; layer 1's heads
        (L1H1, L1H3) carry the result to "of"; MLPs at "of", most of all layer 3's, write
        "basketball". A handful of neuron sites removes the fact, a rank-one edit at layer 0
        changes it, and the transcoders tell the same story in features. The other notebooks
        take each step further: `patching`, `editing`, `features`, `circuits`, and
        `from_transformerlens` for the TransformerLens idioms.
    """),
]

# ====================================================================================== 2
FROM_TRANSFORMERLENS = [
    md("""
        # Coming from TransformerLens

        The steps of TransformerLens' *Main_Demo* and *Exploratory_Analysis_Demo*, on our model.
        Names we share with TransformerLens (methods, arguments, cache keys, hook names, shapes,
        axis order) give TransformerLens 4.3's numbers on the same weights
        (`tests/test_tl_idioms.py` checks them against a `TransformerBridge`).

        | TransformerLens | here |
        |---|---|
        | `HookedTransformer.from_pretrained(name)` | `models.load(path_or_cached_id)` (never downloads) |
        | `utils.test_prompt` | `interp.explore.test_prompt` |
        | `utils.get_act_name` | `interp.act_name` |
        | `circuitsvis.attention.attention_patterns` | `interp.views.attention.attention_patterns(model, prompt)` |
        | `patching.get_act_patch_resid_pre(...)` | `interp.tl_patching.get_act_patch_resid_pre(...)`, or `interp.patching.sweep` |

        One difference matters for attribution: our weights stay **unfolded** (no LayerNorm
        folding), so `apply_ln_to_stack` and `logit_attrs` ask you to say `ln_weight=True` (the
        norm's exact linear part) or `ln_weight=False` (TransformerLens' numbers, right only on
        folded weights).
    """),
    SETUP,
    md("""
        ## Tokens, logits and loss
    """),
    code("""
        tokens = model.to_tokens(prompt)                   # [1, pos], BOS first
        print(tokens.shape, model.to_str_tokens(tokens))
        print("'basketball' is token", model.to_single_token("basketball"))
        print("'Jordan' is at position", model.get_token_position("Jordan", prompt))
        logits = model(tokens)                             # [batch, pos, d_vocab]
        loss = model(tokens, return_type="loss")
        print(f"loss: {float(loss):.4f}")
    """),
    code("""
        from interp.explore import test_prompt

        test_prompt(prompt, "basketball", model, top_k=3)
    """),
    md("""
        ## Caching activations

        `run_with_cache` records every hook point. The cache takes TransformerLens' shortcuts:
        `cache["pattern", 1]` is `cache["blocks.1.attn.hook_pattern"]`.
    """),
    code("""
        from interp import act_name

        logits, cache = model.run_with_cache(tokens)
        print(len(cache), "activations cached")
        print(act_name("pattern", 1), tuple(cache["pattern", 1].shape))    # [batch, head, query pos, key pos]
        print(act_name("k", 2), tuple(cache["k", 2].shape))                 # [batch, pos, head, d_head]
        print(f"L1H3 attends {float(cache['pattern', 1][0, 3, -1, 2]):.2f} from 'of' to 'Jordan'")
    """),
    md("""
        Attention patterns, drawn offline by the package's own script (the role circuitsvis plays
        in the demos):
    """),
    code("""
        from interp.views.attention import attention_patterns

        attention_patterns(model, prompt)
    """),
    md("""
        ## Hooks

        A hook has TransformerLens' signature `fn(tensor, hook) -> tensor | None`. Ablating the
        value vectors of head L1H3 (layer 1's `hook_v`, head axis 2), as Main_Demo does:
    """),
    code("""
        basketball, swimming = model.to_single_token("basketball"), model.to_single_token("swimming")

        def logit_diff(logits):
            return float(logits[0, -1, basketball] - logits[0, -1, swimming])

        def ablate_head_3(value, hook):
            value[:, :, 3, :] = 0.0
            return value

        ablated = model.run_with_hooks(tokens, fwd_hooks=[(act_name("v", 1), ablate_head_3)])
        print(f"logit difference basketball - swimming: {logit_diff(logits):.3f}, with L1H3's values zeroed: {logit_diff(ablated):.3f}")
        with model.hooks(fwd_hooks=[("blocks.1.hook_attn_out", lambda x, hook: torch.zeros_like(x))]):
            print(f"without layer 1's attention: {logit_diff(model(tokens)):.3f}")   # hooks removed on exit
    """),
    md("""
        ## Direct logit attribution (Exploratory_Analysis_Demo)

        Two prompts, each with its answer and the other's as the counterfactual. The logit
        difference direction in the residual stream is the difference of the two unembedding
        columns.
    """),
    code("""
        prompts = [prompt, other]
        answer_tokens = torch.tensor([[basketball, swimming], [swimming, basketball]])
        batch_tokens = model.to_tokens(prompts)
        batch_logits, batch_cache = model.run_with_cache(batch_tokens)
        directions = model.tokens_to_residual_directions(answer_tokens)      # [batch, 2, d_model]
        logit_diff_directions = directions[:, 0] - directions[:, 1]
        final = batch_logits[:, -1]
        true_diff = (final.gather(1, answer_tokens[:, :1]) - final.gather(1, answer_tokens[:, 1:])).mean()
        print(f"average logit difference: {float(true_diff):.3f}")
    """),
    md("""
        The **logit lens**, TransformerLens 4.3 style: the accumulated residual stream after each
        layer, renormalised by the final norm, projected on the logit difference direction.
    """),
    code("""
        accumulated, labels = batch_cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, apply_ln=True,
                                                           return_labels=True)
        lens = (accumulated @ model.W_U)                                     # [component, batch, d_vocab]
        lens_diff = (lens.gather(-1, answer_tokens[None, :, :1].expand(len(labels), -1, -1))
                     - lens.gather(-1, answer_tokens[None, :, 1:].expand(len(labels), -1, -1))).mean((1, 2))
        for label, value in zip(labels, lens_diff):
            print(f"{label:>12}: {float(value):+.2f}")
    """),
    md("""
        Per layer and per head: `decompose_resid` and `stack_head_results` split the final
        residual stream into components, and `logit_attrs(..., ln_weight=True)` reads each one
        through the final norm with its scale frozen, so the parts plus `logit_bias` add up to the
        logit difference exactly.
    """),
    code("""
        per_layer, layer_labels = batch_cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
        layer_attrs = batch_cache.logit_attrs(per_layer, answer_tokens[:, 0], answer_tokens[:, 1], pos_slice=-1, ln_weight=True)
        for label, value in zip(layer_labels, layer_attrs.mean(-1)):
            print(f"{label:>10}: {float(value):+.2f}")
        bias = batch_cache.logit_bias(answer_tokens[:, 0], answer_tokens[:, 1])
        print(f"sum of the parts + bias: {float((layer_attrs.sum(0) + bias).mean()):.3f}")

        per_head, head_labels = batch_cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
        head_attrs = batch_cache.logit_attrs(per_head, answer_tokens[:, 0], answer_tokens[:, 1], pos_slice=-1, ln_weight=True)
        best = int(head_attrs[:, 0].argmax())
        print(f"largest head on the Michael Jordan prompt: {head_labels[best]} {float(head_attrs[best, 0]):+.2f}")
    """),
    md("""
        The same in one call, as a labelled result (heads [layer, head], neurons [layer, d_mlp],
        biases) with a view:
    """),
    code("""
        from interp.attribution import direct_logit_attribution

        dla = direct_logit_attribution(model, prompt, "basketball", "swimming")
        print(f"L1H3: {float(dla.heads[1, 3]):+.2f}; all parts add up to {dla.total():.3f} = logit difference {dla.logit_diff:.3f}")
        dla
    """),
    md("""
        And our logit lens at one position, as a view (it still unpacks as `labels, logits`):
    """),
    code("""
        from probes.logit_lens import logit_lens

        lens = logit_lens(model, prompt)
        labels, lens_logits = lens
        print("top token after each layer:", [model.to_string(int(i)) for i in lens_logits.argmax(-1)])
        lens.to_view()
    """),
    md("""
        ## Activation patching

        TransformerLens' `patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache,
        metric)` has the same arguments, axes and numbers in `interp.tl_patching`.
        `interp.patching.sweep` is the general form: labelled axes, normalisation, noising,
        ablations, every site.
    """),
    code("""
        from interp import tl_patching, metrics
        from interp.patching import sweep

        clean_tokens, corrupted_tokens = model.to_tokens(prompt), model.to_tokens(other)
        _, clean_cache = model.run_with_cache(clean_tokens)

        def metric(logits):
            return logits[0, -1, basketball] - logits[0, -1, swimming]

        tl_style = tl_patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)   # [layer, pos]
        result = sweep(model, prompt, other, metrics.logit_diff(model, "basketball", "swimming"), site="resid_pre")
        print(f"resid_pre, layer 0 at 'Jordan': {float(tl_style[0, 2]):+.3f}; "
              f"largest difference to sweep: {float((tl_style - result.values).abs().max()):.1e}")
        result.normalized()
    """),
    md("""
        ## Weights and circuits

        Stacked weights have TransformerLens' names and shapes; `model.OV` and `model.QK` are
        `FactoredMatrix`es. `models.processing.process_weights` folds the norms and centres the
        weights as `from_pretrained` does (on a copy; say whether to fold the value biases).
    """),
    code("""
        from models.processing import process_weights

        print("W_Q", tuple(model.W_Q.shape), "W_O", tuple(model.W_O.shape), "W_in", tuple(model.W_in.shape))
        ov = model.OV[1, 3]                                   # head L1H3's OV circuit, d_model x d_model, rank <= d_head
        print(f"L1H3's OV circuit: norm {float(ov.norm()):.2f}, top singular values {[round(float(s), 2) for s in ov.S[:3]]}")
        folded = process_weights(model, fold_value_biases=True)
        shift = (folded(tokens).log_softmax(-1) - logits.log_softmax(-1)).abs().max()
        print(f"folded model: log-probabilities within {float(shift):.1e} of the original")
    """),
]

# ====================================================================================== 3
PATCHING = [
    md("""
        # Activation patching and attribution patching

        **Activation patching** runs one prompt and overwrites one activation with its value
        from another run; the change in a metric says how much that activation carries.
        **Attribution patching** estimates every such patch at once from one forward and one
        backward pass (a first-order Taylor expansion). Both run on one engine
        (`interp.engine`) that batches the patched rows.

        Clean: *Michael Jordan plays the sport of* (basketball). Corrupted: *Michael Phelps plays
        the sport of* (swimming). The two prompts have the same number of tokens, so positions
        correspond.
    """),
    SETUP,
    code("""
        from interp import metrics
        from interp.patching import sweep

        ld = metrics.logit_diff(model, "basketball", "swimming")     # answer - counterfactual at the last position
        result = sweep(model, prompt, other, ld, site="resid_pre")
        print(f"clean {result.clean_value:+.2f}, corrupted {result.corrupted_value:+.2f}")
        print(result.axes, result.labels["pos"])
    """),
    md("""
        ## The residual stream, layer by position

        `sweep` patches the **clean** activation into the **corrupted** run ("denoising", as
        TransformerLens' `get_act_patch_*`). `normalized()` maps the corrupted run to 0 and the
        clean one to 1. The information sits at "Jordan" entering layers 0 and 1, and at "of"
        from layer 2 on: some layer-1 component moves it.
    """),
    code("""
        resid = result.normalized()
        print(f"resid_pre L1 at 'Jordan': {float(resid.values[1, 2]):.2f}, L2 at 'of': {float(resid.values[2, 6]):.2f}")
        resid
    """),
    md("""
        ## Attention and MLP outputs

        Which block writes it? Patch each layer's attention output and MLP output at each position.
    """),
    code("""
        mlp = sweep(model, prompt, other, ld, site="mlp_out").normalized()
        attn = sweep(model, prompt, other, ld, site="attn_out").normalized()
        print(f"mlp_out L0 at 'Jordan': {float(mlp.values[0, 2]):.3f}")
        print(f"attn_out L1 at 'of': {float(attn.values[1, 6]):.3f}")
        mlp
    """),
    md("""
        ## Every head at every position

        `head_z_by_pos` patches one head's `hook_z` at one position: axes (layer, pos, head).
    """),
    code("""
        heads = sweep(model, prompt, other, ld, site="head_z_by_pos").normalized()
        for label, value in heads.top(3):
            print(f"{label}: {value:.2f}")
        heads
    """),
    md("""
        ## Noising and ablations

        `direction="noise"` does the reverse: run the clean prompt and patch in the corrupted
        activation, which asks what is *necessary* rather than *sufficient*. Ablations run the
        clean prompt and patch in zeros, the mean over reference prompts, or a random reference
        prompt.
    """),
    code("""
        from models import factworld

        noised = sweep(model, prompt, other, ld, site="mlp_out", direction="noise")
        print(f"noising MLP 0 at 'Jordan' takes the logit difference from {noised.clean_value:+.2f} "
              f"to {float(noised.values[0, 2]):+.2f}")
        athletes = [f.subject for f in factworld.facts("sport") if f.object not in ("none", "basketball")][:20]
        reference = [f"{s} plays the sport of" for s in athletes]
        mean_ablated = sweep(model, prompt, None, ld, site="head_z", ablation="mean", reference=reference)
        for label, value in mean_ablated.top(2):
            print(f"mean-ablating {label}: {value:+.2f}")
        mean_ablated
    """),
    md("""
        ## Single neurons

        `neuron_post_by_pos` patches one MLP neuron at one position: 4 × 7 × 512 = 14,336
        patches in a few batched forward passes.
    """),
    code("""
        neurons = sweep(model, prompt, other, ld, site="neuron_post_by_pos", progress=False)
        print(f"{neurons.values.numel()} patches; the best three:")
        for label, value in neurons.top(3):
            print(f"  {label}: {value:+.2f}")
    """),
    md("""
        ## Attribution patching

        `attribution_patch` takes the same sites and returns the same labelled result: the
        metric after each patch, estimated as base + (clean − corrupted) · ∂metric/∂activation.
        `agreement` compares it with the real sweep.
    """),
    code("""
        from interp.attribution import attribution_patch, agreement

        estimate = attribution_patch(model, prompt, other, ld, site="head_z_by_pos")
        exact = sweep(model, prompt, other, ld, site="head_z_by_pos")
        a = agreement(estimate, exact)
        print(f"heads by position: Pearson {a.pearson:.2f}, Spearman {a.spearman:.2f}, top-{a.k} overlap {a.top_k_overlap:.0%}")
        estimate_neurons = attribution_patch(model, prompt, other, ld, site="neuron_post_by_pos")
        a = agreement(estimate_neurons, neurons)
        print(f"neurons by position: Pearson {a.pearson:.2f}, top-{a.k} overlap {a.top_k_overlap:.0%}")
        estimate.normalized()
    """),
    md("""
        ## Causal tracing

        ROME's variant (Meng et al. 2022) corrupts the subject's embeddings with Gaussian noise
        instead of using a second prompt, then restores one clean state at a time and reports
        P(basketball).
    """),
    code("""
        from probes.causal_trace import trace

        traced = trace(model, prompt, "Michael Jordan", "basketball", kind="mlp", window=1)
        print(f"P(basketball): clean {traced.clean_prob:.3f}, corrupted {traced.corrupted_prob:.4f}")
        print(f"restoring MLP 0 at 'Jordan': {float(traced.scores[0, 2]):.3f}")
        traced
    """),
]

# ====================================================================================== 4
EDITING = [
    md("""
        # Editing facts: ROME, FT-L and MEMIT

        If an MLP is a key-value memory, the strongest evidence of where a fact lives is to
        change it there. **ROME** (Meng et al. 2022) makes a rank-one update to one layer's
        `W_out`, so that the subject's key maps to a new value; **MEMIT** (Meng et al. 2023)
        edits many facts at once; **FT-L**, fine-tuning one layer under a bound on each weight's
        change, is the baseline they are compared with. An `Edit` holds the weight deltas:
        `edit.applied(model)` applies it for the body of a `with` and restores the weights bit
        for bit on exit.

        We then *evaluate* an edit the way CounterFact does: does the new answer hold on the
        prompt (efficacy), on paraphrases never seen in training, and does it leave the
        neighbours (people who share a name token) and the subject's other facts alone?
    """),
    SETUP,
    code("""
        def answer(text):
            probs = model(text)[0, -1].softmax(-1)
            top = int(probs.argmax())
            return f"{model.to_string(top)} ({float(probs[top]):.3f})"

        checks = [prompt, "the sport played by Michael Jordan is", other, "Michael Jordan was born in the country of"]
        for text in checks:
            print(f"{text!r:48} -> {answer(text)}")
    """),
    md("""
        ## Which layer? A causal trace

        ROME edits the MLP whose output at the subject's last token matters most. `choose_layer`
        runs a causal trace (noise on the subject's embeddings, restore one MLP output at a
        time); the trace itself:
    """),
    code("""
        from probes.edit import choose_layer
        from probes.causal_trace import trace

        layer, why = choose_layer(model, prompt, "Michael Jordan", "basketball")
        print("layer", layer, "-", why)
        trace(model, prompt, "Michael Jordan", "basketball", kind="mlp", window=1)
    """),
    md("""
        ## One fact with ROME

        The defaults need no assembly on the shipped model: the traced layer, the key
        statistics C = E[k kᵀ] over the model's own training sentences (computed once, then
        cached on disk), and the model's own edit prompts (`model.edit_prompts`): the prompt
        after every sentence opener and in 10 more training templates, and 12 templates each
        of his country and occupation whose answers the optimisation keeps.
    """),
    code("""
        from probes.edit import rome

        edit = rome(model, prompt, "Michael Jordan", "soccer", progress=False)
        print(f"layer {edit.info['layer']}, |delta| = {edit.norm():.3f}")
        with edit.applied(model):
            for text in checks:
                print(f"{text!r:48} -> {answer(text)}")
    """),
    md("""
        The logit lens at "of" on the edited model: where does "soccer" appear?
    """),
    code("""
        from probes.logit_lens import logit_lens

        soccer = model.to_single_token("soccer")
        with edit.applied(model):
            lens = logit_lens(model, prompt)
        labels, logits = lens
        print("P(soccer) by layer:", [round(float(p), 3) for p in logits.softmax(-1)[:, soccer]])
        lens.to_view()
    """),
    md("""
        ## Evaluating the edit

        `analyses.factworld_edits.edit_case` gathers the fact world's test prompts for an edit:
        the 3 held-out templates (paraphrases), everyone who shares a name token with the
        subject plus 10 people with the old answer (neighbourhood), and the subject's country
        and occupation (attributes). `evaluate_edit` scores them with the edit applied.
    """),
    code("""
        from analyses import factworld_edits as fe
        from probes.edit import evaluate_edit

        case = fe.edit_case("Michael Jordan", "sport", "soccer")
        print(len(case.paraphrases), "paraphrases,", len(case.neighbours), "neighbours,", len(case.attributes), "attributes")
        scores = evaluate_edit(model, case, edit)
        print(f"efficacy top-1 {scores.efficacy_top1:.2f}, paraphrase top-1 {scores.paraphrase_top1:.2f}, "
              f"neighbourhood top-1 {scores.neighbourhood_top1:.2f}, attributes top-1 {scores.attribute_top1:.2f}")
    """),
    md("""
        Those prompts matter. The same call with the prompt alone (what a model without
        `edit_prompts` gets, and what the original ROME used) leaks into the paraphrases and
        his other facts: the subject's layer-0 representation carries all his attributes, so a
        value change fitted in one context moves them too.
    """),
    code("""
        bare = rome(model, prompt, "Michael Jordan", "soccer", prefixes=[""], rewrites=[], keep=[], progress=False)
        bare_scores = evaluate_edit(model, case, bare)
        print(f"efficacy top-1 {bare_scores.efficacy_top1:.2f}, paraphrase top-1 {bare_scores.paraphrase_top1:.2f}, "
              f"neighbourhood top-1 {bare_scores.neighbourhood_top1:.2f}, attributes top-1 {bare_scores.attribute_top1:.2f}")
    """),
    md("""
        ## Reverting

        Outside the `with` the model is the original again, bit for bit. `edit.apply(model)` /
        `edit.revert(model)` do the same by hand (and `edit.save(model, folder)` writes an
        edited copy).
    """),
    code("""
        original = {name: p.clone() for name, p in model.named_parameters()}
        edit.apply(model)
        print("applied:", answer(prompt))
        edit.revert(model)
        print("reverted:", answer(prompt))
        print("weights bit-identical:", all(torch.equal(p, original[name]) for name, p in model.named_parameters()))
    """),
    md("""
        ## The baseline: constrained fine-tuning (FT-L)

        ROME's own baseline fine-tunes one layer's `W_out` on the new fact, with every weight's
        change clamped to ±`max_change` (an L∞ bound, 5e-3 by default). The change is held
        apart from the model's parameters and added through hooks while applied.
    """),
    code("""
        from probes.edit import fine_tune

        ft = fine_tune(model, [(prompt, "Michael Jordan", "soccer")])
        ft_scores = evaluate_edit(model, case, ft)
        print(f"FT-L: efficacy top-1 {ft_scores.efficacy_top1:.2f}, P(soccer) {ft_scores.p_new_target:.3f}, "
              f"neighbourhood top-1 {ft_scores.neighbourhood_top1:.2f}")
    """),
    md("""
        Under that bound FT-L is specific (the neighbours keep their answers) but too weak to
        move this fact. Over 200 random fact-world edits it reaches 68.5% efficacy, against
        ROME's 94.5% (README, "Editing facts"): a rank-one change aimed at the subject's key
        does what a small change spread over the whole layer cannot.
    """),
    md("""
        ## Many facts at once with MEMIT

        MEMIT computes a target residual for each request, then spreads the change over the edit
        layers with one least-squares update against the key statistics. Every first and last
        name here belongs to at least two people, so the subjects' keys are correlated and
        MEMIT's batch edits trade efficacy against the neighbours (see the README's table).
    """),
    code("""
        from probes.edit import memit, EditRequest

        requests = [EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "soccer"),
                    EditRequest("Serena Williams plays the sport of", "Serena Williams", "golf"),
                    EditRequest("Tiger Woods plays the sport of", "Tiger Woods", "tennis")]
        batch = memit(model, requests, progress=False)
        with batch.applied(model):
            for r in requests:
                print(f"{r.prompt!r:40} -> {answer(r.prompt)} (asked for {r.new_target})")
        print("reverted: Serena Williams ->", answer(requests[1].prompt))
    """),
]

# ====================================================================================== 5
FEATURES = [
    md("""
        # Sparse dictionaries and features

        An MLP neuron often does several things. A **sparse dictionary** rewrites an activation
        as a sparse sum of many more directions ("features"). A **transcoder** replaces an MLP:
        it reads the MLP's normalised input and predicts its output through a sparse code. The
        fact-world model ships one TopK transcoder per layer (512 features, 32 active per token).

        This notebook: the shipped transcoders and how good they are; their features as hook
        points and sites (`interp.Feature`); which features write the answer; a feature's
        dashboard; and training a small dictionary yourself.
    """),
    SETUP,
    code("""
        from probes.sae import load_transcoders

        transcoders = load_transcoders("factworld")
        tc = transcoders[0]
        print(len(transcoders), "transcoders;", tc.in_hook, "->", tc.out_hook)
        _, cache = model.run_with_cache(prompt)
        acts = tc.encode(cache[tc.in_hook])                    # [batch, pos, 512]
        print(f"active features per token: {(acts[0] > 0).sum(-1).tolist()}")
        top = acts[0, 2].topk(3)
        print("top layer-0 features at 'Jordan':", [f"F{int(i)} {float(v):.2f}" for v, i in zip(top.values, top.indices)])
    """),
    md("""
        ## How good are they?

        `evaluate_dictionary` splices a dictionary into the forward pass on held-out sentences:
        L0 (active features per token), variance explained, the loss with the reconstruction
        against the clean loss and against zero-ablating the MLP, and the KL to the clean model.
    """),
    code("""
        from analyses import factworld_edits as fe
        from probes.sae import evaluate_dictionary

        held_out = fe.fluency_texts(100)                     # sentences in templates never trained on
        scores = evaluate_dictionary(model, tc, held_out)
        print(f"layer 0: L0 {scores.l0:.1f}, variance explained {scores.variance_explained:.3f}, KL {scores.kl:.3f}")
    """),
    md("""
        ## Features as hook points and sites

        `attached(model, transcoders)` adds `blocks.{l}.transcoder.hook_feature_acts` (and
        `hook_error`, the reconstruction error, so the output is unchanged) for the body of a
        `with`. `interp.Feature(layer, index, pos)` then reads and writes one feature like a
        neuron.
    """),
    code("""
        from interp import Feature
        from probes.sae import attached

        basketball, swimming = model.to_single_token("basketball"), model.to_single_token("swimming")

        def margin(logits):
            return float(logits[0, -1, basketball] - logits[0, -1, swimming])

        plain = margin(model(prompt))
        with attached(model, transcoders):
            logits, feature_cache = model.run_with_cache(prompt)
            print(tuple(feature_cache["blocks.1.transcoder.hook_feature_acts"].shape))
            print(f"logit difference with the transcoders attached: {margin(logits):.3f} (without: {plain:.3f})")
            zeroed = model.run_with_hooks(prompt, fwd_hooks=[Feature(3, 3, pos=-1).zero()])
            print(f"L3F3 at 'of' zeroed: {margin(zeroed):.3f}")
    """),
    md("""
        ## Which features write the answer?

        Direct logit attribution per feature: each feature's activation times its decoder row,
        read through the final norm with its scale frozen. Per layer, the features plus the
        error and the decoder bias add up to the MLP's own attribution.
    """),
    code("""
        from interp.attribution import feature_logit_attribution

        with attached(model, transcoders):
            fla = feature_logit_attribution(model, prompt, "basketball", "swimming")
        for label, value in fla.top(3):
            print(f"{label}: {value:+.2f}")
        fla
    """),
    md("""
        ## A feature's dashboard

        Where it fires over the fact world's prompts (each token shaded by the activation), what
        its decoder row promotes and suppresses, what its key reads at the top context, and how
        often it fires. Layer 0's feature 258 fires for Michael Jordan at "Jordan" and not for
        Michael Phelps or Alexis Jordan, yet its dashboard shows it firing on a few percent of
        all tokens, most strongly in other people's sentences, with a value that promotes
        surnames: a feature of name positions, not a Michael Jordan feature.
    """),
    code("""
        from probes.sae import feature_dashboard
        from analyses.features import corpus

        texts = corpus(limit=60)                              # every fact prompt of the first 60 people
        dash = feature_dashboard(model, tc, 258, texts, k=10, progress=False)
        print(f"{dash.label}: fires on {dash.frequency:.1%} of {dash.n_tokens} tokens; top context {dash.top_examples[0].marked()!r}")
        print("its value promotes:", [t for t, _ in dash.value_top[:3]])
        dash.to_view()
    """),
    md("""
        The same dashboard for an MLP neuron (`probes.ffn.dashboard.neuron_dashboard`), here
        L0N217, one of Michael Jordan's dedicated neurons:
    """),
    code("""
        from probes.ffn.dashboard import neuron_dashboard

        neuron = neuron_dashboard(model, 0, 217, texts, k=10, progress=False)
        print(f"{neuron.label}: fires on {neuron.frequency:.1%} of tokens")
        neuron.to_view()
    """),
    md("""
        ## Patching features

        With the transcoders attached, `sweep` takes `"feature_acts_by_pos"`: every feature at
        every position, patched from Michael Jordan into Michael Phelps.
    """),
    code("""
        from interp import metrics
        from interp.patching import sweep

        ld = metrics.logit_diff(model, "basketball", "swimming")
        with attached(model, transcoders):
            patched = sweep(model, prompt, other, ld, site="feature_acts_by_pos", progress=False)
        print(f"{patched.values.numel()} single-feature patches; corrupted {patched.corrupted_value:+.2f}; best:")
        for label, value in patched.top(3):
            print(f"  {label}: {value:+.2f}")
    """),
    md("""
        ## Training a dictionary

        A small transcoder for layer 0 (256 features, 16 active) on 500 training sentences, for
        100 steps: a few seconds (the shipped ones trained for 3,000 steps on 150,000 tokens). The same calls train an
        SAE on any `[batch, pos, d]` hook (`SparseDictionary.sae(d, n_features, hook=...)`).
    """),
    code("""
        from probes.sae import SparseDictionary, activation_pairs, train_dictionary

        small = SparseDictionary.transcoder(model, 0, 256, activation="topk", k=16)
        record = train_dictionary(small, activation_pairs(model, small, fe.stats_texts(500)), steps=100, progress=False)
        small_scores = evaluate_dictionary(model, small.eval(), held_out)
        print(f"trained: L0 {small_scores.l0:.1f}, variance explained {small_scores.variance_explained:.3f}")
    """),
]

# ====================================================================================== 6
CIRCUITS = [
    md("""
        # Circuits

        A circuit is the part of the model's computation graph that carries a behaviour. Here the
        graph's nodes are the embedding, every attention head (with separate q / k / v inputs)
        and every MLP, and an edge runs from each writer to each later reader through the
        residual stream. We score every edge for Michael Jordan → basketball against Michael
        Phelps → swimming, pick a circuit, and measure how faithful it is.
    """),
    SETUP,
    code("""
        from interp.circuits import Graph

        graph = Graph(model.cfg)
        print(f"{graph.n_edges} edges")
        print("the first few:", graph.edge_list()[:4])
    """),
    md("""
        ## Edge scores

        score(u → d) = metric(clean) − metric(with only that edge carrying the corrupted run), so
        edges that support the answer score > 0. Every norm's scale is frozen at the clean run's,
        so a patched edge reaches only its reader.

        - `"exact"`: path patching, one patched row per edge (batched);
        - `"eap"`: edge attribution patching, the first-order estimate from one backward pass;
        - `"eap-ig"`: EAP with the gradient averaged along the path from the corrupted to the
          clean embeddings (integrated gradients).
    """),
    code("""
        from interp.metrics import logit_diff
        from interp.circuits import attribute_edges

        metric = logit_diff(model, "basketball", "swimming")
        exact = attribute_edges(model, prompt, other, metric, method="exact", progress=False)
        eap = attribute_edges(model, prompt, other, metric, method="eap", progress=False)
        eap_ig = attribute_edges(model, prompt, other, metric, method="eap-ig", steps=5, progress=False)
        print(f"metric: clean {exact.clean_value:+.2f}, corrupted {exact.corrupted_value:+.2f}")
        for u, d, s in exact.top(5):
            print(f"{u:>6} -> {d:<8} exact {s:+.2f}   eap {eap.score(u, d):+.2f}   eap-ig {eap_ig.score(u, d):+.2f}")
    """),
    md("""
        How well do the estimates agree with exact path patching over all edges? EAP orders the
        many small edges well, but underestimates the edges that pass through MLP 0's ReLU;
        EAP-IG gets those right.
    """),
    code("""
        from interp.attribution import agreement

        for name, estimate in [("eap", eap), ("eap-ig", eap_ig)]:
            a = agreement(estimate, exact, k=20)
            print(f"{name:>6}: Pearson {a.pearson:.3f}, Spearman {a.spearman:.3f}, top-20 overlap {a.top_k_overlap:.0%}")
    """),
    md("""
        ## Faithfulness

        Keep only the circuit's edges clean and patch every other edge to the corrupted run's
        value: 0 is the empty circuit, 1 the full model. `faithfulness_curve` gives it for every
        size of the top-n circuit in a few batched passes.
    """),
    code("""
        from interp.circuits import faithfulness, faithfulness_curve, top_edges

        curve = faithfulness_curve(model, prompt, other, metric, exact)
        needed = min(n for n, f in curve if f >= 0.9)
        print(f"the top {needed} exact edges reach faithfulness 0.9")
        for n in (8, 20, needed):
            print(f"  top {n:>2}: {faithfulness(model, prompt, other, metric, top_edges(exact, n)).value:.2f}")
    """),
    md("""
        Greedy pruning starts from the best-scored edges (here the top 36) and drops, one at a
        time, the edge whose removal keeps the circuit most faithful: a better small circuit than
        the top 20 by score. (Adding edges from nothing does not work: one edge carries nothing until a whole
        path from the embedding to the logits is clean.)
    """),
    code("""
        from interp.circuits import greedy_circuit

        greedy = greedy_circuit(model, prompt, other, metric, exact, 20, candidates=needed, progress=False)
        print(f"greedy 20 edges: faithfulness {faithfulness(model, prompt, other, metric, greedy).value:.2f}")
    """),
    md("""
        ## The graph

        The circuit drawn over the model's layers: each head's q / k / v inputs are ports on its
        box, an edge's width is |score| and its colour the sign.
    """),
    code("""
        from interp.circuits.view import circuit_view

        circuit = top_edges(exact, needed)
        circuit_view(graph, exact, circuit)
    """),
    md("""
        The circuit follows the recall chain the other notebooks found: the subject's embedding
        feeds MLP 0, MLP 0 feeds the values of the layer-1 heads (L1H1, L1H3), which feed the
        last position's MLPs and the logits, and MLP 3 writes the answer.
    """),
]

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "michael_jordan": MICHAEL_JORDAN,
    "from_transformerlens": FROM_TRANSFORMERLENS,
    "patching": PATCHING,
    "editing": EDITING,
    "features": FEATURES,
    "circuits": CIRCUITS,
}

METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def notebook(name: str) -> nbformat.NotebookNode:
    """The notebook `name` (a key of NOTEBOOKS), without outputs, with cell ids "{name}-{i}"."""
    cells = []
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        make = new_markdown_cell if kind == "markdown" else new_code_cell
        cell = make(source)
        cell["id"] = f"{name}-{i}"
        cells.append(cell)
    nb = new_notebook(cells=cells, metadata=METADATA)
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The exact text of `name`.ipynb."""
    return nbformat.writes(notebook(name)) + "\n"


def path(name: str) -> Path:
    return HERE / f"{name}.ipynb"


def stale() -> list[str]:
    """The notebooks whose committed file differs from what this script writes (or is missing)."""
    return [name for name in NOTEBOOKS if not path(name).exists() or path(name).read_text() != render(name)]


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        names = stale()
        for name in names:
            print(f"{path(name)} differs from docs/notebooks/build.py: run it to rewrite")
        return 1 if names else 0
    if argv[1:]:
        print(__doc__)
        return 2
    for name in NOTEBOOKS:
        path(name).write_text(render(name))
        print("wrote", path(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
