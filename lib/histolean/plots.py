"""The figures the notebooks share: one call per figure, so notebooks stay narrative,
parameters, library calls and plots.

Every function takes data (result rows as a DataFrame, arrays, images), draws with
matplotlib/seaborn, and returns the ``Figure`` (notebooks pass it to
``Recorder.save_figure``). Nothing here computes a result. Sections follow the
notebooks' reading order; shared helpers come first.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")


# --- shared helpers --------------------------------------------------------------------------------------------


def log2_axis(ax, axis: str = "x") -> None:
    """A base-2 log axis with plain-number tick labels (costs halve per NAR level)."""
    from matplotlib.ticker import ScalarFormatter

    getattr(ax, f"set_{axis}scale")("log", base=2)
    getattr(ax, f"{axis}axis").set_major_formatter(ScalarFormatter())


# --- 01 data tour ----------------------------------------------------------------------------------------------

# --- 02 NAR cost -----------------------------------------------------------------------------------------------

# --- 03 ResRep -------------------------------------------------------------------------------------------------

# --- 04 streaming SGD ------------------------------------------------------------------------------------------

# --- 05 TIL: NAR vs IR vs ResRep -------------------------------------------------------------------------------

# --- 06 nuclei pruning -----------------------------------------------------------------------------------------

# --- 07 PCam / IDC CNN zoo -------------------------------------------------------------------------------------

# --- 08 TIL maps -----------------------------------------------------------------------------------------------
