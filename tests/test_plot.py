"""interp.plot: figures carry the data, labels and colour limits they are given."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from interp import plot


def tick_texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def main_axes(fig: Figure):
    """The first axes of a figure (the data panel; colorbars come after it)."""
    return fig.axes[0]


@dataclass
class FakeResult:
    values: torch.Tensor
    axes: tuple
    labels: dict = field(default_factory=dict)
    title: str = ""
    metric_name: str = ""


# --------------------------------------------------------------------------- heatmap

def test_heatmap_image_limits_and_labels():
    values = torch.tensor([[1.0, -3.0, 0.5], [2.0, 0.0, -1.0]])
    fig = plot.heatmap(values, row_labels=["a", "b"], col_labels=["x", "y", "z"], title="T",
                       xlabel="cols", ylabel="rows", colorbar_label="effect")
    ax = main_axes(fig)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), values.numpy())
    assert ax.images[0].get_clim() == (-3.0, 3.0)
    assert tick_texts(ax.get_yticklabels()) == ["a", "b"]
    assert tick_texts(ax.get_xticklabels()) == ["x", "y", "z"]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("T", "cols", "rows")
    assert fig.axes[1].get_ylabel() == "effect"  # the colorbar
    bottom, top = ax.get_ylim()
    assert bottom > top  # row 0 at the top


def test_heatmap_centre_and_degenerate_limits():
    fig = plot.heatmap(np.array([[1.0, 4.0], [2.0, 1.5]]), row_labels=["a", "b"], col_labels=["c", "d"],
                       center=1.0)
    assert main_axes(fig).images[0].get_clim() == (-2.0, 4.0)  # 1 +- max|v - 1| = 1 +- 3
    fig = plot.heatmap(torch.zeros(2, 2), row_labels=["a", "b"], col_labels=["c", "d"])
    assert main_axes(fig).images[0].get_clim() == (-1.0, 1.0)
    fig = plot.heatmap(torch.full((2, 2), float("nan")), row_labels=["a", "b"], col_labels=["c", "d"])
    assert main_axes(fig).images[0].get_clim() == (-1.0, 1.0)


def test_heatmap_accepts_grad_float64_and_bfloat16_tensors():
    x = torch.tensor([[0.25, -0.5]], dtype=torch.float64, requires_grad=True)
    fig = plot.heatmap(x * 2, row_labels=["r"], col_labels=["a", "b"])
    np.testing.assert_array_equal(np.asarray(main_axes(fig).images[0].get_array()), [[0.5, -1.0]])
    fig = plot.heatmap(x.detach().to(torch.bfloat16), row_labels=["r"], col_labels=["a", "b"])
    np.testing.assert_array_equal(np.asarray(main_axes(fig).images[0].get_array()), [[0.25, -0.5]])


def test_heatmap_label_mismatch_names_lengths():
    with pytest.raises(ValueError, match=r"expected 3 labels.*got 2"):
        plot.heatmap(torch.ones(2, 3), row_labels=["a", "b"], col_labels=["x", "y"])
    with pytest.raises(ValueError, match=r"expected 2 labels.*got 1"):
        plot.heatmap(torch.ones(2, 3), row_labels=["a"], col_labels=["x", "y", "z"])
    with pytest.raises(ValueError, match="2-D"):
        plot.heatmap(torch.ones(3), row_labels=["a"], col_labels=["x", "y", "z"])


def test_heatmap_ticks_all_up_to_40_thinned_beyond():
    labels40 = [f"c{i}" for i in range(40)]
    fig = plot.heatmap(torch.randn(2, 40), row_labels=["a", "b"], col_labels=labels40)
    assert tick_texts(main_axes(fig).get_xticklabels()) == labels40
    labels100 = [f"c{i}" for i in range(100)]
    fig = plot.heatmap(torch.randn(2, 100), row_labels=["a", "b"], col_labels=labels100)
    shown = tick_texts(main_axes(fig).get_xticklabels())
    assert 10 <= len(shown) <= 40 and shown[0] == "c0" and set(shown) <= set(labels100)


def test_heatmap_figsize_grows_with_grid():
    small = plot.heatmap(torch.randn(2, 3), row_labels=list("ab"), col_labels=list("xyz"))
    big = plot.heatmap(torch.randn(24, 30), row_labels=[str(i) for i in range(24)],
                       col_labels=[str(i) for i in range(30)])
    w0, h0 = small.get_size_inches()
    w1, h1 = big.get_size_inches()
    assert w1 > w0 and h1 > h0 and w1 <= 22 and h1 <= 16


def test_heatmap_into_given_axes():
    host = Figure()
    ax = host.add_subplot(1, 2, 2)
    assert plot.heatmap(torch.eye(2), row_labels=["a", "b"], col_labels=["c", "d"], ax=ax) is host
    assert len(ax.images) == 1


def test_layer_head_and_layer_pos_heatmaps():
    values = torch.arange(6.0).reshape(2, 3)
    ax = main_axes(plot.layer_head_heatmap(values, title="heads", colorbar_label="m"))
    assert tick_texts(ax.get_yticklabels()) == ["L0", "L1"]
    assert tick_texts(ax.get_xticklabels()) == ["H0", "H1", "H2"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("head", "layer", "heads")

    ax = main_axes(plot.layer_pos_heatmap(values, tokens=["the", "cat", "the"], title="resid"))
    cols = tick_texts(ax.get_xticklabels())
    assert len(set(cols)) == 3 and all(tok in c and f"({i})" in c for i, (tok, c) in
                                       enumerate(zip(["the", "cat", "the"], cols)))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("position", "layer")
    with pytest.raises(ValueError, match=r"expected 3 labels.*got 2"):
        plot.layer_pos_heatmap(values, tokens=["a", "b"])
    # Labels that already carry their position (a sweep over positions 4 and 9) are kept as they are.
    ax = main_axes(plot.layer_pos_heatmap(values[:, :2], tokens=["Jordan (4)", "of (9)"]))
    assert tick_texts(ax.get_xticklabels()) == ["Jordan (4)", "of (9)"]


# --------------------------------------------------------------------------- bars

def bars_of(fig: Figure) -> tuple[list[str], list[float]]:
    ax = main_axes(fig)
    return tick_texts(ax.get_yticklabels()), [p.get_width() for p in ax.containers[0].patches]


def test_top_k_bar_by_abs_order_colours_and_values():
    values = torch.tensor([0.1, -5.0, 3.0, 0.0, 4.0, -0.2])
    labels = ["a", "b", "c", "d", "e", "f"]
    fig = plot.top_k_bar(values, labels, k=3, title="top")
    names, widths = bars_of(fig)
    assert names == ["b", "e", "c"] and widths == [-5.0, 4.0, 3.0]
    ax = main_axes(fig)
    ys = [p.get_y() for p in ax.containers[0].patches]
    assert ax.get_ylim()[0] > ax.get_ylim()[1] and ys == sorted(ys)  # first bar drawn at the top
    colours = [p.get_facecolor() for p in ax.containers[0].patches]
    assert colours[0] != colours[1] and colours[1] == colours[2]
    assert [t.get_text() for t in ax.texts] == ["-5", "4", "3"]


def test_top_k_bar_signed_and_k_larger_than_n():
    names, widths = bars_of(plot.top_k_bar(np.array([0.1, -5.0, 3.0]), ["a", "b", "c"], k=10, by_abs=False))
    assert names == ["c", "a", "b"] and widths == pytest.approx([3.0, 0.1, -5.0])
    with pytest.raises(ValueError, match=r"expected 3 labels.*got 2"):
        plot.top_k_bar(torch.ones(3), ["a", "b"])


# --------------------------------------------------------------------------- attention

def test_attention_patterns_one_panel_per_head():
    patterns = torch.softmax(torch.randn(3, 4, 4), dim=-1)
    tokens = ["A", "B", "A", "C"]
    fig = plot.attention_patterns(patterns, tokens=tokens, titles=["L0H1", "L1H0", "L1H3"])
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["L0H1", "L1H0", "L1H3"]
    for ax, p in zip(panels, patterns):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), p.numpy(), rtol=1e-6)
        assert ax.images[0].get_clim() == (0.0, 1.0)
        assert len(tick_texts(ax.get_xticklabels())) == 4 == len(set(tick_texts(ax.get_yticklabels())))
    with pytest.raises(ValueError, match=r"expected 3 labels.*got 2"):
        plot.attention_patterns(patterns, tokens=tokens, titles=["a", "b"])
    with pytest.raises(ValueError, match=r"expected 4 labels.*got 3"):
        plot.attention_patterns(patterns, tokens=tokens[:3], titles=["a", "b", "c"])


# --------------------------------------------------------------------------- plot_result

def test_plot_result_layer_head():
    r = FakeResult(torch.tensor([[1.0, 2.0], [3.0, -4.0]]), ("layer", "head"),
                   {"layer": ["0", "1"], "head": ["0", "1"]}, title="head_z", metric_name="logit diff")
    fig = plot.plot_result(r)
    ax = main_axes(fig)
    assert tick_texts(ax.get_yticklabels()) == ["L0", "L1"] and ax.get_title() == "head_z"
    assert fig.axes[1].get_ylabel() == "logit diff"
    assert main_axes(plot.plot_result(r, title="other")).get_title() == "other"


def test_plot_result_layer_pos_uses_pos_labels_and_token_override():
    r = FakeResult(torch.randn(2, 3), ("layer", "pos"), {"pos": ["Michael", "Jordan", "plays"]})
    ax = main_axes(plot.plot_result(r))
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), r.values.numpy(), rtol=1e-6)
    assert [c.split(" ")[0] for c in tick_texts(ax.get_xticklabels())] == ["Michael", "Jordan", "plays"]
    ax = main_axes(plot.plot_result(r, tokens=["x", "y", "z"]))
    assert [c.split(" ")[0] for c in tick_texts(ax.get_xticklabels())] == ["x", "y", "z"]


def test_plot_result_layer_pos_head_rows_per_layer_head():
    values = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [layer, pos, head]
    r = FakeResult(values, ("layer", "pos", "head"), {"layer": ["0", "1"], "head": ["0", "1"],
                                                      "pos": ["a", "b", "c"]})
    ax = main_axes(plot.plot_result(r))
    assert tick_texts(ax.get_yticklabels()) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    image = np.asarray(ax.images[0].get_array())
    assert image.shape == (4, 3)
    np.testing.assert_array_equal(image[3], values[1, :, 1].numpy())  # row L1H1 across positions


def test_plot_result_neurons_top_k_with_joined_labels():
    values = torch.zeros(2, 3, 500)  # [layer, pos, neuron]
    values[1, 2, 42] = -9.0
    values[0, 0, 7] = 5.0
    r = FakeResult(values, ("layer", "pos", "neuron"), {"pos": ["Michael", "Jordan", "plays"]})
    names, widths = bars_of(plot.plot_result(r))
    assert len(names) == 20
    assert names[:2] == ["L1N42@2 'plays'", "L0N7@0 'Michael'"] and widths[:2] == [-9.0, 5.0]
    r2 = FakeResult(torch.tensor([[0.0, 1.0], [-2.0, 0.5]]), ("layer", "neuron"))
    names, widths = bars_of(plot.plot_result(r2))
    assert names == ["L1N0", "L0N1", "L1N1", "L0N0"] and widths == [-2.0, 1.0, 0.5, 0.0]


def test_plot_result_generic_shapes_and_errors():
    names, widths = bars_of(plot.plot_result(FakeResult(torch.tensor([1.0, -2.0, 3.0]), ("layer",))))
    assert names == ["L0", "L1", "L2"] and widths == [1.0, -2.0, 3.0]  # kept in order
    ax = main_axes(plot.plot_result(FakeResult(torch.ones(2, 3), ("component", "pos"),
                                               {"component": ["embed", "attn0"]})))
    assert tick_texts(ax.get_yticklabels()) == ["embed", "attn0"] and ax.get_ylabel() == "component"
    with pytest.raises(ValueError, match=r"\('a', 'b', 'c'\)"):
        plot.plot_result(FakeResult(torch.ones(2, 2, 2), ("a", "b", "c")))
    with pytest.raises(ValueError, match=r"expected 2 labels.*got 3"):
        plot.plot_result(FakeResult(torch.ones(2, 2), ("layer", "head"), {"layer": ["0", "1", "2"]}))
    with pytest.raises(ValueError, match="axes"):
        plot.plot_result(FakeResult(torch.ones(2, 2), ("layer",)))


# --------------------------------------------------------------------------- save

def test_save_writes_png_and_svg(tmp_path):
    fig = plot.layer_head_heatmap(torch.randn(2, 2), title="t")
    paths = plot.save(fig, tmp_path / "sub" / "dir" / "heads.png", dpi=40)
    assert paths == [tmp_path / "sub" / "dir" / "heads.png", tmp_path / "sub" / "dir" / "heads.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = paths[1].read_text()
    assert "<svg" in svg and len(svg) > 1000
    dotted = plot.save(plot.top_k_bar(torch.ones(2), ["a", "b"]), tmp_path / "L1.5", formats=("svg",))
    assert dotted == [tmp_path / "L1.5.svg"] and dotted[0].stat().st_size > 0


def test_svg_files_are_byte_identical_across_saves(tmp_path):
    """Saving the same figure twice writes the same SVG (no date, fixed element ids), so
    re-running the demo leaves committed results unchanged."""
    def draw(name):
        fig = plot.heatmap(torch.arange(12.0).reshape(3, 4), row_labels=["a", "b", "c"], col_labels=list("wxyz"))
        return plot.save(fig, tmp_path / name, formats=("svg",))[0].read_bytes()

    assert draw("one") == draw("two")
