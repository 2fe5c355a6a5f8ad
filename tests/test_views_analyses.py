"""The interactive pages beside the figures of `interp probe-relation`, `interp recall` and
`interp transcoders`: written, rendered in the real browser without problems, and showing the
numbers the command wrote to its JSON (read back from the DOM: table cells, heatmap hover)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from analyses.cli import main
from analyses.figure_views import Grid, table_view


def table_rows(page) -> dict[str, list[str]]:
    """{first cell: [the row's cells' text]} of the page's table."""
    rows = page.locator("table.iv-table tbody tr").evaluate_all(
        "trs => trs.map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))")
    return {r[0]: r for r in rows}


def table_columns(page) -> list[str]:
    return page.locator("table.iv-table thead th").evaluate_all("ths => ths.map(th => th.textContent)")


def hover_cell(page, row: int, col: int) -> dict:
    """Move the real pointer to the centre of heatmap cell (row, col); the status line's data."""
    canvas = page.locator("canvas.iv-heatmap-cells")
    cw, ch = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-cell-height"))
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + (col + 0.5) * cw, box["y"] + (row + 0.5) * ch)
    return page.locator(".iv-heatmap-status").evaluate(
        "el => ({row: el.dataset.row, col: el.dataset.col, label: el.dataset.label, value: el.dataset.value})")


def opened(browser, path):
    assert path.exists() and path.stat().st_size > 0, path
    page = browser.open(path)
    assert browser.problems(page) == []
    return page


def test_probe_relation_pages(browser, tmp_path):
    assert main(["probe-relation", "sport", "--limit", "2", "--methods", "direct,greedy", "--out", str(tmp_path),
                 "--quiet"]) == 0
    data = json.loads((tmp_path / "sport_greedy.json").read_text())
    # The sites heatmap [layer, role], counted here from the JSON's site labels and roles.
    roles = data["roles_order"]
    counts: dict[tuple[int, int], int] = {}
    for subject, k in data["localised"].items():
        if k is None:
            continue
        for label, role in zip(data["sites"][subject], data["roles"][subject]):
            key = (int(re.match(r"L(\d+)N", label).group(1)), roles.index(role))
            counts[key] = counts.get(key, 0) + 1
    assert counts, "no fact localised"
    (layer, role), n = max(counts.items(), key=lambda kv: kv[1])
    page = opened(browser, tmp_path / "sport_greedy.html")
    st = hover_cell(page, layer, role)
    assert (int(st["row"]), int(st["col"])) == (layer, role)
    assert float(st["value"]) == n and st["label"] == f"L{layer} {roles[role]}"
    empty = next((l, r) for l in range(4) for r in range(len(roles)) if (l, r) not in counts)
    assert float(hover_cell(page, *empty)["value"]) == 0
    page.context.close()
    # The localised-per-k bars as a table.
    page = opened(browser, tmp_path / "sport_greedy_within.html")
    rows = table_rows(page)
    assert set(rows) == {f"<= {b}" for b in data["within"]}
    for b, want in data["within"].items():
        assert int(rows[f"<= {b}"][1]) == want
        assert float(rows[f"<= {b}"][2]) == pytest.approx(want / data["n_facts"], rel=1e-3)
    page.context.close()
    # methods.json as a table.
    methods = json.loads((tmp_path / "methods.json").read_text())
    page = opened(browser, tmp_path / "methods.html")
    cols = table_columns(page)
    rows = page.locator("table.iv-table tbody tr").evaluate_all(
        "trs => trs.map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))")
    assert sorted(r[0] for r in rows) == ["direct", "greedy"]
    for r in rows:
        entry = methods[r[0]][r[1]]
        assert int(r[cols.index("localised")]) == entry["n_localised"]
        assert int(r[cols.index("facts")]) == entry["n_facts"]
        assert float(r[cols.index("seconds")]) == pytest.approx(entry["seconds"], rel=1e-3)
    page.context.close()


def test_recall_pages(browser, tmp_path):
    assert main(["recall", "sport", "--limit", "6", "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads((tmp_path / "sport.json").read_text())
    rate = np.array(data["extraction_rate_among_relation_objects"], dtype=np.float32)
    layer, head = np.unravel_index(int(rate.argmax()), rate.shape)
    page = opened(browser, tmp_path / "sport.html")
    st = hover_cell(page, int(layer), int(head))
    assert st["label"] == f"L{layer}H{head}"
    assert float(st["value"]) == pytest.approx(float(rate[layer, head]), abs=1e-6) and rate.max() > 0
    page.context.close()
    page = opened(browser, tmp_path / "sport_curves.html")
    cols, rows = table_columns(page), table_rows(page)
    assert cols[2:] == data["points"]
    name = "held-out templates, last token"
    probe = rows[f"linear probe, {name} (test accuracy)"]
    for j, point in enumerate(data["points"]):
        assert float(probe[cols.index(point)]) == pytest.approx(data["probes"][name]["test_accuracy"][j], rel=1e-3)
    assert float(probe[1]) == pytest.approx(data["probes"][name]["chance"], rel=1e-3)
    vocab = rows["logit-lens attribute rate (vocabulary)"]
    assert float(vocab[cols.index("L1")]) == pytest.approx(data["enrichment_logit_lens_rate"][2], rel=1e-3, abs=1e-9)
    page.context.close()
    page = opened(browser, tmp_path / "sport_sites.html")
    rows = table_rows(page)
    assert {k: int(v[1]) for k, v in rows.items()} == data["top_moved_site"]
    page.context.close()


def test_transcoders_page(browser, tmp_path):
    assert main(["transcoders", "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads((tmp_path / "transcoders.json").read_text())
    page = opened(browser, tmp_path / "transcoders.html")
    rows = table_rows(page)
    assert set(rows) == {f"layer {l}" for l in data["subject_features"]}
    for l, entry in data["subject_features"].items():
        row = rows[f"layer {l}"]
        assert float(row[1]) == pytest.approx(entry["features"], rel=1e-3)
        assert float(row[2]) == pytest.approx(entry["neurons"], rel=1e-3)
        assert int(row[3]) == entry["athletes_with_feature"]
        if entry["value_promotes_sport"] is None:
            assert row[4] == ""
        else:
            assert float(row[4]) == pytest.approx(entry["value_promotes_sport"], rel=1e-3)
    page.context.close()


def test_page_builders_refuse_bad_input():
    with pytest.raises(ValueError, match="labels\\['layer'\\] has 3 entries"):
        Grid(np.zeros((2, 2)), ("layer", "head"), {"layer": ["0", "1", "2"]})
    with pytest.raises(ValueError, match="need 2 axis names"):
        Grid(np.zeros((2, 2)), ("layer",))
    with pytest.raises(ValueError, match="row 1 has 1 cells"):
        table_view("t", ["a", "b"], [[1, 2], [3]])
    view = table_view("t", ["a", "b"], [["x", float("nan")]])
    assert view.data["rows"] == [["x", None]] and view.data["numeric"] == [False, True]
