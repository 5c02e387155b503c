"""The report page: notebook markdown with its math as MathML (offline), papers without a file tolerated,
claim rows in a table of their own, an unknown profile an error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from histolean.study import mathml, report
from histolean.study.records import Recorder


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


def _project_with_a_script_result(root: Path, rows) -> Path:
    """A project whose profile lists no notebook and whose one result file was written by a script in
    benchmarks/ (the report trusts such rows without a manifest)."""
    (root / "params").mkdir()
    (root / "notebooks").mkdir()
    (root / "params" / "smoke.yaml").write_text("seed: 0\nbenchmarks: {}\n")
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "toybench.py").write_text("# writes outputs/<profile>/results/toybench.jsonl\n")
    rec = Recorder("toybench", root / "outputs" / "smoke", profile="smoke")
    rec.add(dataset="toy", data_kind="real", model="tinynet", method="nar", setting={"phi": 1},
            metrics={"auc": 0.875})
    rec.add_claims(rows)
    return root


def test_report_shows_claim_rows_as_a_claims_table_apart_from_the_variant_rows(tmp_path):
    from histolean.study import claims

    held = claims.Claim(paper="Meirelles 2022", claim="NAR keeps the AUC", paper_value="0.91 vs 0.91",
                        ours="0.875 vs 0.88", rule=claims.equivalent_rule(0.02),
                        verdict=claims.equivalent(-0.01, 0.0, 0.02),
                        scale="smoke: 64 patches", note="one seed <only>")
    unresolved = claims.Claim(paper="Meirelles 2022", claim="NAR is faster", paper_value="2.1x", ours="1.9x",
                              rule="sign of the speed-up", verdict=claims.NOT_RESOLVED, scale="smoke")
    root = _project_with_a_script_result(tmp_path, [held, unresolved])
    page = report.build("smoke", root=root).read_text(encoding="utf-8")

    claims_part = page[page.index("<h3>Paper claims</h3>"):page.index("<h3>Our results</h3>")]
    header = [h.replace(" ", "_") for h in re.findall(r"<th>([^<]*)</th>", claims_part)]
    assert header == list(claims.COLUMNS)
    assert claims_part.count("<tr>") == 3                                  # the header and two claims
    assert "<td>NAR keeps the AUC</td>" in claims_part and "<td>not resolved</td>" in claims_part
    assert "<td>holds [1]</td>" in claims_part and "<li>one seed &lt;only&gt;</li>" in claims_part
    results_part = page[page.index("<h3>Our results</h3>"):]
    assert "tinynet" in results_part and "NAR keeps the AUC" not in results_part   # claims stay out of it
    assert re.search(r"<td>1</td><td>2</td><td>real: 1</td>", page)        # overview: one row, two claims


def test_a_benchmark_without_claims_gets_no_claims_table(tmp_path):
    root = _project_with_a_script_result(tmp_path, [])
    page = report.build("smoke", root=root).read_text(encoding="utf-8")
    assert "Paper claims" not in page and "tinynet" in page


def test_an_unknown_profile_is_an_error_naming_it(tmp_path, capsys, monkeypatch):
    from histolean import cli

    root = _project_with_a_script_result(tmp_path, [])
    with pytest.raises(FileNotFoundError, match="profile 'nosuch' not found"):
        report.build("nosuch", root=root)
    assert not (root / "outputs" / "nosuch" / "report.html").exists()
    monkeypatch.setenv("HISTOLEAN_ROOT", str(root))
    assert cli.main(["report", "--profile", "nosuch"]) == 2
    assert "profile 'nosuch' not found" in capsys.readouterr().err
