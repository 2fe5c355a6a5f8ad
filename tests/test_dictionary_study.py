"""analyses.dictionary_study's measuring functions, on hand-worked examples and on a tiny random
float64 model with a random TopK transcoder (checked against a plain hooked forward and an
encoding written out here), and the training options it passes to train_layer."""

import argparse

import pytest
import torch

from analyses import dictionary_study as ds
from analyses.train_transcoders import add_arguments, train_layer
from models import Transformer, TransformerConfig
from models.tokenizer import WordTokenizer
from probes.sae import SparseDictionary

TEXTS = ["Ann Lee plays the sport of", "Bob Lee plays the sport of", "Ann Kim Lee plays the sport of"]


@pytest.fixture(scope="module")
def tiny():
    """(model, transcoder of layer 1): a random float64 word-level model and a random TopK k=3 transcoder."""
    tok = WordTokenizer.from_texts(TEXTS)
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=len(tok.vocab), n_ctx=16, dtype="float64",
                            seed=3)
    model = Transformer(cfg, tok).eval()
    tc = SparseDictionary.transcoder(model, 1, 12, activation="topk", k=3, seed=4)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in (tc.W_enc, tc.b_enc, tc.b_pre):
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model, tc.eval()


def test_subject_feature_acts_match_a_plain_forward_and_a_hand_written_topk(tiny):
    model, tc = tiny
    ends = [model.to_str_tokens(t).index("plays") - 1 for t in TEXTS]  # the last name token
    got = ds.subject_feature_acts(model, tc, TEXTS, ends)
    assert got.shape == (3, 12)
    for i, (text, end) in enumerate(zip(TEXTS, ends)):  # one text at a time: no padding involved
        _, cache = model.run_with_cache(text, names_filter=["blocks.1.ln2.hook_normalized"])
        x = cache["blocks.1.ln2.hook_normalized"][0, end].double()
        pre = torch.relu((x - tc.b_pre.detach()) @ tc.W_enc.detach() + tc.b_enc.detach())
        keep = sorted(range(12), key=lambda j: -float(pre[j]))[:3]
        want = torch.zeros(12, dtype=torch.float64)
        want[keep] = pre[keep]
        assert torch.allclose(got[i].double(), want, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="3 texts but 2 positions"):
        ds.subject_feature_acts(model, tc, TEXTS, ends[:2])


def test_dedicated_flags_and_summary_on_a_hand_worked_example():
    # 3 people, 3 units; people 0 and 1 share a name token, 2 is alone.
    acts = torch.tensor([[1.0, 0.5, 0.0],    # unit 0: person 1 has 0.05 < 0.1 -> dedicated
                         [0.05, 0.5, 0.0],   # unit 1: person 0 has 0.5, not < 0.05; unit 0: 1.0 -> none
                         [0.0, 0.0, 0.0]])   # fires nowhere -> none
    flags = ds.has_dedicated(acts, [[1], [0], []])
    assert flags == [True, False, False]
    summary = ds.dedicated_summary({0: flags, 1: [False, True, False], 2: [True, False, False]})
    assert summary["per_layer"] == {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}
    assert summary["best_layer"] == [0, 1 / 3]  # ties go to the earliest layer
    assert summary["any_layer"] == pytest.approx(2 / 3, abs=1e-12)
    with pytest.raises(ValueError, match="one flag per subject"):
        ds.dedicated_summary({0: [True], 1: [True, False]})
    with pytest.raises(ValueError, match="no layers"):
        ds.dedicated_summary({})


def test_transcoder_set_uses_the_trained_layers_and_the_shipped_ones_elsewhere(tiny):
    model, tc = tiny
    shipped = ["s0", "s1"]
    assert ds.transcoder_set(shipped, {1: tc}) == ["s0", tc]
    with pytest.raises(ValueError, match=r"trained layers \[2\]"):
        ds.transcoder_set(shipped, {2: tc})


def test_trained_layers_train_with_the_setting_and_are_found_again(tiny, tmp_path):
    model, _ = tiny
    g = torch.Generator().manual_seed(0)
    data = {0: (torch.randn(1100, 16, generator=g, dtype=torch.float64),
                torch.randn(1100, 16, generator=g, dtype=torch.float64))}
    setting = ds.Setting(features=20, k=4, activation="batchtopk", skip=True, steps=3, layers=(0,))
    first = ds.trained_layers(model, "s", setting, tmp_path, data, texts=[], progress=False)
    tc, seconds = first[0]
    assert (tc.cfg.n_features, tc.cfg.k, tc.cfg.activation, tc.cfg.skip) == (20, 4, "batchtopk", True)
    assert tc.W_skip is not None and float(tc.W_skip.detach().abs().sum()) > 0  # trained, not the zero start
    again = ds.trained_layers(model, "s", setting, tmp_path, {}, texts=[], progress=False)  # loaded: no data needed
    assert again[0][1] == seconds
    for name, t in tc.state_dict().items():
        assert torch.equal(again[0][0].state_dict()[name], t)
    other = ds.Setting(features=20, k=4, activation="batchtopk", skip=True, steps=4, layers=(0,))
    retrained = ds.trained_layers(model, "s", other, tmp_path, data, texts=[], progress=False)  # options differ
    assert not torch.equal(retrained[0][0].W_enc, tc.W_enc)


def test_train_layer_and_the_command_line_options(tiny):
    model, _ = tiny
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(1024, 16, generator=g, dtype=torch.float64), torch.randn(1024, 16, generator=g, dtype=torch.float64))
    tc, record = train_layer(model, 1, data, features=8, activation="relu", l1=1e-2, steps=2, progress=False)
    assert (tc.cfg.activation, tc.cfg.n_features, tc.in_hook, record.steps) == ("relu", 8, "blocks.1.ln2.hook_normalized", 2)
    assert not tc.training
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", "x", "--activation", "batchtopk", "--skip", "--l1", "0.01"])
    assert (args.activation, args.skip, args.l1, args.features, args.k) == ("batchtopk", True, 0.01, 512, 32)
    assert p.parse_args(["--out", "x"]).skip is False


def test_graph_facts_spread_over_the_athletes_with_michael_jordan():
    from analyses.graph_study import athlete_facts

    every = athlete_facts()
    facts = ds.graph_facts(40)
    assert facts[0] == every[0] and every[-1] in facts
    assert len({f[0] for f in facts}) == len(facts) and sum(f[0] == ds.MICHAEL_JORDAN for f in facts) == 1
    assert len(facts) in (40, 41)


def test_unknown_setting_is_refused_before_any_work():
    with pytest.raises(ValueError, match="unknown settings"):
        ds.dictionary_study(model="no-such-model", settings=["nope"])


def test_error_shares_add_up_to_one_minus_the_replacement_score(tiny):
    from probes.graph import attribution_graph

    model, tc1 = tiny
    tc0 = SparseDictionary.transcoder(model, 0, 12, activation="topk", k=3, seed=6)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in (tc0.W_enc, tc0.b_enc, tc0.b_pre, tc0.b_dec):
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    graph = attribution_graph(model, TEXTS[2], [tc0.eval(), tc1], progress=False)
    shares = ds.error_share_by_layer(graph)
    influence = graph.influence()
    by_node = [sum(float(influence[graph.error_node(l, p)]) for p in range(graph.n_pos)) for l in range(2)]
    reached = float(influence[graph.token_nodes].sum()) + sum(by_node)
    assert shares == pytest.approx([b / reached for b in by_node], abs=1e-12)
    assert 0 < sum(shares) < 1
    assert sum(shares) == pytest.approx(1 - graph.scores()["replacement"], abs=1e-9)


def test_the_wide_set_loads_by_name_and_has_the_documented_dedicated_share():
    from models import load
    from models.checkpoint import shipped_dictionaries
    from probes.sae import load_dictionary, load_transcoders

    wide = load_transcoders("factworld-wide")
    assert [(tc.cfg.n_features, tc.cfg.k, tc.cfg.activation, tc.in_hook, tc.out_hook) for tc in wide] == [
        (2048, 32, "topk", f"blocks.{l}.ln2.hook_normalized", f"blocks.{l}.hook_mlp_out") for l in range(4)]
    folder = shipped_dictionaries("factworld").parent / "transcoders-wide"
    assert torch.equal(load_dictionary(folder / "L2").W_enc, wide[2].W_enc)
    model = load("factworld")
    flags = ds.People(model).dedicated(model, wide[0])
    assert len(flags) == 474 and round(100 * sum(flags) / len(flags), 1) == 80.4  # docs/sae.md
