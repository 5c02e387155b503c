"""The report page: notebook markdown with its math as MathML (offline), papers without a file tolerated."""

from __future__ import annotations

import pytest

from histolean.study import mathml, report


def test_inline_math_becomes_mathml_without_any_script():
    page = report.markdown_html(r"NAR divides depth by $\alpha^{\phi}$, with $\gamma=1.15$.")
    assert "<msup><mi>α</mi><mrow><mi>ϕ</mi></mrow></msup>" in page
    assert "<mi>γ</mi><mo>=</mo><mn>1.15</mn>" in page
    assert "$" not in page and "<script" not in page


def test_every_construct_the_notebooks_use():
    cases = {
        r"(\alpha\beta^2\gamma^2)^{\phi} \approx 2^{\phi}": "<mo>≈</mo>",
        r"G(F) = m \cdot \partial L/\partial F + \lambda F/\lVert F \rVert": "<mo>‖</mo><mi>F</mi><mo>‖</mo>",
        r"\phi \geq 5": "<mi>ϕ</mi><mo>≥</mo><mn>5</mn>",
        r"\frac{1}{2}": "<mfrac>",
        r"x_i^2": "<msubsup><mi>x</mi><mi>i</mi><mn>2</mn></msubsup>",
        r"\text{top 1}": "<mtext>top 1</mtext>",
    }
    for tex, expected in cases.items():
        assert expected in mathml.to_mathml(tex), tex


def test_unknown_tex_is_shown_as_source_and_raw_html_escaped():
    page = report.markdown_html(r"see $\weird{x}$ <b>bold</b> and $$a < b$$")
    assert r"<code>$\weird{x}$</code>" in page
    assert "&lt;b&gt;" in page
    assert 'display="block"' in page and "<mo>&lt;</mo>" in page
    with pytest.raises(mathml.UnsupportedTeX, match="unbalanced"):
        mathml.to_mathml("{a")


def test_a_paper_without_a_published_file_gets_a_note():
    assert report.BENCHMARK_PAPERS["monuseg_pruning"] == ["pruning"]
    assert "No published numbers" in report.published_tables("no_such_paper")
    assert "Published: nar" in report.published_tables("nar")
