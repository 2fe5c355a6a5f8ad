"""The public API's vocabulary: every analysis is a Python function behind its command, the
commands added for what exists in Python, the package tops, and progress bars that
TQDM_DISABLE=1 silences."""

import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
import torch

import interp
import probes
from analyses.cli import COMMANDS, main
from analyses.common import AnalysisResult
from interp.checks import IndexRangeError
from models import load

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


# ------------------------------------------------------------ package tops
@pytest.mark.parametrize("package", [interp, probes], ids=["interp", "probes"])
def test_every_export_is_its_modules_object(package):
    assert package._EXPORTS
    for name, module in package._EXPORTS.items():
        assert getattr(package, name) is getattr(import_module(module), name), name
        # a name that is also a submodule would be the module once that is imported
        with pytest.raises(ModuleNotFoundError):
            import_module(f"{package.__name__}.{name}")
    assert set(package.__all__) == set(package._EXPORTS)
    with pytest.raises(AttributeError, match="no attribute"):
        getattr(package, "no_such_name")


def test_main_entry_points_from_the_tops():
    from interp import (FromRun, Patch, agreement, attribution_patch, direct_logit_attribution,  # noqa: F401
                        feature_logit_attribution, logit_diff, run_patched, sweep)
    from probes import (attached, evaluate_edits, fact_neurons, fine_tune, load_transcoders, localise,  # noqa: F401
                        memit, rome, trace, trace_with_patch)
    from interp.patching import sweep as sweep_itself
    from probes.edit import rome as rome_itself

    assert sweep is sweep_itself and rome is rome_itself


def test_package_tops_stay_light():
    code = "import sys, interp, probes\nassert 'torch' not in sys.modules\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ------------------------------------------------------------ analyses as functions
def test_analysis_function_returns_its_numbers_and_writes_only_when_asked(fw, tmp_path, monkeypatch):
    from analyses.patch import patch_pair
    from interp.metrics import logit_diff
    from interp.patching import sweep

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory either
    result = patch_pair(fw, sites=["resid_pre"], progress=False)
    assert isinstance(result, AnalysisResult) and result.files == [] and list(tmp_path.iterdir()) == []
    direct = sweep(fw, result["clean"], result["corrupted"], logit_diff(fw, "basketball", "swimming"), "resid_pre",
                   progress=False)
    assert torch.equal(result.results["resid_pre"].values, direct.values)
    written = patch_pair(fw, sites=["resid_pre"], progress=False, out=tmp_path / "out")
    assert {p.name for p in written.files} == {"resid_pre.png", "resid_pre.svg", "resid_pre.html", "resid_pre.json",
                                            "summary.json"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == json.loads(json.dumps(written.report))
    with pytest.raises(ValueError, match="no sites"):
        patch_pair(fw, sites=[])


def test_layer_out_of_range_is_one_error(fw):
    from analyses.features import layer_features

    with pytest.raises(IndexRangeError, match="9"):
        layer_features(fw, 9, limit=1, progress=False)


def test_every_command_module_has_a_thin_run():
    for name, (module, add, run, _) in COMMANDS.items():
        if module.startswith("analyses."):
            mod = import_module(module)
            assert callable(getattr(mod, add)) and callable(getattr(mod, run)), name


# ------------------------------------------------------------ the new commands
def test_train_sae_on_any_hook(tmp_path, capsys):
    with pytest.raises(SystemExit):  # --out is required
        main(["train-sae", "--hook", "blocks.1.hook_resid_post"])
    out = tmp_path / "sae"
    args = ["train-sae", "--hook", "blocks.1.hook_resid_post", "--features", "32", "--k", "4", "--steps", "5",
            "--tokens", "600", "--batch-size", "128", "--quiet", "--out", str(out)]
    assert main(args) == 0
    meta = json.loads((out / "cfg.json").read_text())
    assert meta["in_hook"] == meta["out_hook"] == "blocks.1.hook_resid_post" and meta["kind"] == "sae"
    assert meta["extra"]["scores"]["l0"] == pytest.approx(4, abs=1e-6)
    assert "SAE on blocks.1.hook_resid_post" in capsys.readouterr().out
    before = (out / "sae_weights.safetensors").read_bytes()
    with pytest.raises(SystemExit, match="not empty"):  # nothing overwritten without --force
        main(args)
    assert (out / "sae_weights.safetensors").read_bytes() == before
    from probes.sae import load_dictionary

    assert load_dictionary(out).cfg.n_features == 32


def test_train_sae_needs_a_corpus_for_other_models(tmp_path):
    from analyses.train_sae import train_sae

    from conftest import make_model

    with pytest.raises(ValueError, match="corpus"):
        train_sae(make_model("gpt2"), hook="blocks.0.hook_resid_post", out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_feature_logit_attribution_command(tmp_path, fw):
    path = tmp_path / "fa.json"
    assert main(["feature-logit-attribution", "--top", "3", "--quiet", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["answer"] == "basketball" and data["counterfactual"] == "swimming"
    # features + error + rest is the MLP output's direct attribution, layer by layer
    from interp.attribution import direct_logit_attribution

    dla = direct_logit_attribution(fw, "Michael Jordan plays the sport of", "basketball", "swimming")
    assert data["mlp"] == pytest.approx(dla.mlp.tolist(), abs=1e-3)
    assert not any("transcoder" in n for n in fw.hook_names) and not any(hp._hooks["fwd"] for hp in fw.hook_dict.values())


def test_knowledge_neurons_command(tmp_path):
    path = tmp_path / "kn.json"
    assert main(["knowledge-neurons", "--layer", "-1", "--steps", "2", "-k", "3", "--quiet", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["layers"] == [3] and data["steps"] == 2 and len(data["top"]) == 20
    c = data["completeness"]["3"]
    assert c["gap"] == pytest.approx(c["sum"] - c["expected"], abs=1e-9)


def test_process_weights_command(tmp_path, fw):
    with pytest.raises(SystemExit):  # the value-bias choice has no default
        main(["process-weights", "factworld", "--out", str(tmp_path / "p")])
    assert main(["process-weights", "factworld", "--out", str(tmp_path / "p"), "--keep-value-biases"]) == 0
    processed = load(str(tmp_path / "p"))
    tokens = fw.to_tokens("Michael Jordan plays the sport of")
    with torch.no_grad():
        a, b = fw(tokens).log_softmax(-1), processed(tokens).log_softmax(-1)
    assert (a - b).abs().max() < 1e-4
    assert not torch.equal(fw.blocks[0].attn.W_Q, processed.blocks[0].attn.W_Q)  # folded, and fw untouched
    with pytest.raises(SystemExit, match="not empty"):
        main(["process-weights", "factworld", "--out", str(tmp_path / "p"), "--keep-value-biases"])


# ------------------------------------------------------------ progress bars
def test_tqdm_disable_silences_every_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert main(["patch", "--sites", "resid_pre", "--out", str(tmp_path / "a")]) == 0
    assert "sites: 100%" in capsys.readouterr().err  # the bars are there by default
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert main(["patch", "--sites", "resid_pre", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err.strip() == ""


# ------------------------------------------------------------ test_prompt reads answers by the one policy
def test_test_prompt_answer_words(fw, capsys):
    from interp.explore import answer_ids, test_prompt
    from interp.words import answer_token

    assert answer_ids(fw, "basketball").tolist() == [answer_token(fw, "basketball")]
    assert answer_ids(fw, "basketball", prepend_space_to_answer=False).tolist() == [fw.to_single_token("basketball")]
    ranks = test_prompt("Michael Jordan plays the sport of", "basketball", fw, print_details=False)
    assert ranks == [[("basketball", 0)]]
