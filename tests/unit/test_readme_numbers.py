"""The README's NAR headline numbers are the ones histolean.core.flops / histolean.methods.nar compute."""

from __future__ import annotations

from pathlib import Path

import pytest

from histolean import arch, flops, nar

README = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())  # line breaks -> spaces


@pytest.mark.parametrize("stride_at", ["first", "last"])
def test_resnet50v2_nar_reductions_in_the_readme(stride_at):
    spec = arch.resnet50v2(input_size=240, stride_at=stride_at)
    original = flops.gflops(spec)
    ratios = [original / flops.gflops(nar.reduce(spec, phi)) for phi in (1, 2, 3)]
    assert f"costs {original:.2f} GFLOPs" in README
    assert "NAR phi = 1, 2, 3 cut FLOPs " + ", ".join(f"{r:.2f}x" for r in ratios) in README or \
        "NAR cuts " + ", ".join(f"{r:.2f}x" for r in ratios) in README
