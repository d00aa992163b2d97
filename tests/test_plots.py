"""Plots: no empty plot is written (skipped with why), and ROC curves can be told apart."""
from __future__ import annotations

import numpy as np

from occbench.bench.plots import LINESTYLES, _curve_styles, make_plots, plot_roc
from occbench.bench.results import EvalResult, VariantResult


def _result(variants: dict) -> EvalResult:
    return EvalResult(protocol={"name": "p", "version": 1, "hash": "h", "kind": "verification",
                                "occlusion": {"modes": ["N-O"]}},
                      model={"name": "m", "fingerprint": "f"}, variants=variants)


def _spec(name, group, mode="N-O"):
    return {"name": name, "group": group, "mode": mode}


def test_empty_area_and_cell_plots_are_skipped_with_a_reason(tmp_path):
    k = 3
    empty_cells = {"k": k, "drop": [[None] * k] * k, "accuracy": [[None] * k] * k, "n": [[0] * k] * k}
    empty_area = {"bins": [{"lo": 0.0, "hi": 0.5, "n": 0, "accuracy": None}, {"lo": 0.5, "hi": 1.0, "n": 0,
                                                                              "accuracy": None}]}
    res = _result({"N-O": VariantResult("N-O", _spec("N-O", "headline"), {})})
    (tmp_path / "p.cells.png").write_bytes(b"old")  # an earlier run's plot must not survive
    made, skipped = make_plots(res, {"area": {"N-O": empty_area}, "cells": {"N-O": empty_cells}}, tmp_path / "p")
    assert made == [] and {s["plot"] for s in skipped} == {"area", "cells"}
    assert all(s["why"] for s in skipped) and not list(tmp_path.glob("*.png"))
    full_cells = {**empty_cells, "n": [[9] * k] * k, "drop": [[-0.1] * k] * k}
    made, skipped = make_plots(res, {"cells": {"N-O": full_cells}}, tmp_path / "p")
    assert [p.name for p in made] == ["p.cells.png"] and skipped == []


def test_roc_curves_have_distinct_styles_and_a_bold_headline(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = ["clean", "N-O"] + [f"N-O/occ{i}@s2.0" for i in range(9)]
    specs = [_spec("clean", "clean", "clean"), _spec("N-O", "headline")] + [_spec(n, "occluder") for n in names[2:]]
    styles = _curve_styles(names, specs, plt.get_cmap("tab10"))
    others = [(tuple(c), str(ls)) for c, ls, _ in styles[2:]]
    assert len(set(others)) == 9  # every occluder curve differs from every other one
    assert len({c for c, _ in others}) == 9 and {ls for _, ls in others} <= {str(x) for x in LINESTYLES}
    blue = matplotlib.colors.to_rgba("tab:blue")
    assert styles[1][0] == "tab:blue" and all(matplotlib.colors.to_rgba(c) != blue for c, _ in others)
    far = np.linspace(0, 1, 20)
    curves = {n: (far, far ** 0.5, s) for n, s in zip(names, specs)}
    seen = {}
    real_close = plt.close

    def keep(fig=None):  # look at the figure before it is closed
        ax = fig.axes[0]
        seen["bold"] = [t.get_text() for t in ax.get_legend().get_texts() if t.get_fontweight() == "bold"]
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    plot_roc(curves, tmp_path / "roc.png", "t", ["N-O"])
    assert seen["bold"] == ["N-O"] and (tmp_path / "roc.png").stat().st_size > 1000
