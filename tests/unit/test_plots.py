"""plots: importing it leaves matplotlib's settings alone; figures are drawn in the house style;
notebooks 02 and 05 share one speed-up figure."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from histolean.study import plots


def test_import_changes_no_global_matplotlib_setting():
    code = ("import matplotlib; matplotlib.use('Agg'); before = dict(matplotlib.rcParams); "
            "import histolean.study.plots; after = dict(matplotlib.rcParams); "
            "print(sorted(k for k in before if str(before[k]) != str(after[k])))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def _speeds(reduction_column: str) -> pd.DataFrame:
    return pd.DataFrame({"model": ["resnet50v2"] * 3, "method": ["original", "nar", "ir"],
                         reduction_column: [1.0, 4.0, 2.0], "speedup": [1.0, 3.0, 1.5],
                         "speedup_min": [1.0, 2.5, 1.2], "speedup_max": [1.0, 3.5, 1.9]})


def test_one_speedup_figure_for_both_notebooks():
    fig = plots.speedup_vs_flop_reduction(_speeds("flop_reduction"))
    [ax] = fig.axes
    labels = ax.get_legend_handles_labels()[1]
    assert sorted(labels) == ["resnet50v2 IR", "resnet50v2 NAR", "speed-up = FLOP reduction"]   # no original
    assert ax.get_xscale() == ax.get_yscale() == "log"
    # drawn in the whitegrid style although the process's own setting is matplotlib's default
    assert ax.xaxis.get_gridlines()[0].get_visible() and not matplotlib.rcParams["axes.grid"]
    plt.close(fig)


def test_style_is_a_context_that_restores_the_settings():
    before = matplotlib.rcParams["axes.facecolor"], matplotlib.rcParams["axes.grid"]
    with plots.style():
        assert matplotlib.rcParams["axes.grid"]
    assert (matplotlib.rcParams["axes.facecolor"], matplotlib.rcParams["axes.grid"]) == before
