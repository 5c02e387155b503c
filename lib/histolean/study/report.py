"""``outputs/<profile>/report.html``: every result row and figure, one section per benchmark.

The page is self-contained (figures inlined as PNG data URIs) so it can be
mailed or attached to a lab notebook. Rows computed on generated data carry a
visible SYNTHETIC badge; the papers' published tables sit beside our rows, and
each benchmark's paper claims (its rows of kind "claim") get a table of their own.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from pathlib import Path

import pandas as pd

from histolean.util import atomic
from histolean.study import claims, mathml, published, records, runner
from histolean.util.paths import notebook_path, project_root

# Which paper's published tables belong beside which benchmark.
BENCHMARK_PAPERS = {
    "nar_cost": ["nar"],
    "resrep": ["resrep"],
    "streaming_sgd": ["streaming"],
    "til_nar_resrep": ["nar"],
    "monuseg_pruning": ["pruning"],
    "pcam_idc_zoo": ["zoo"],
    "til_maps": ["nar"],
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:3px solid #8b2f6b} h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1em}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4eef3} td:first-child,th:first-child{text-align:left}
tr.synthetic td{background:#fff4e0} table.claims td{text-align:left;vertical-align:top}
.badge{display:inline-block;padding:1px 6px;border-radius:3px;font-size:11px;font-weight:bold;color:#fff}
.ok{background:#2e7d32}.failed{background:#c62828}.missing{background:#777}.stale{background:#ef6c00}
.script{background:#1565c0}.synthetic-badge{background:#e65100}
.error{white-space:pre-wrap;background:#fdecea;padding:0.5em;border-left:4px solid #c62828}
figure{display:inline-block;margin:0.5em} figure img{max-width:560px;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
.muted{color:#666;font-size:13px} .wide{overflow-x:auto;max-width:100%}
"""


def _flatten(row: dict) -> dict:
    flat = {}
    for k, v in row.items():
        if k in ("versions",):
            continue
        if isinstance(v, dict) and k in ("setting", "metrics"):
            flat.update({f"{kk}": vv for kk, vv in v.items()})
        elif isinstance(v, (dict, list)):
            flat[k] = json.dumps(v)
        else:
            flat[k] = v
    return flat


def rows_table(rows: list[dict]) -> str:
    """Our rows as an HTML table; synthetic rows highlighted and badged."""
    if not rows:
        return "<p class='muted'>No result rows.</p>"
    drop = {"benchmark", "profile", "time", "device"}
    frame = pd.DataFrame([_flatten(r) for r in rows])
    frame = frame[[c for c in frame.columns if c not in drop]]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for rec in frame.to_dict("records"):
        synthetic = rec.get("data_kind") == "synthetic"
        cells = []
        for col, val in rec.items():
            text = _fmt(val)
            if col == "data_kind" and synthetic:
                text = "<span class='badge synthetic-badge'>SYNTHETIC</span>"
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr class='{'synthetic' if synthetic else ''}'>{''.join(cells)}</tr>")
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def claims_table(rows: list[dict]) -> str:
    """The benchmark's claim rows (kind "claim") as an HTML table, one claim a row, notes numbered below it."""
    if not rows:
        return "<p class='muted'>No claims recorded.</p>"
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in claims.COLUMNS)
    body, notes = [], []
    for row in rows:
        cells = [_fmt(row.get(c)) for c in claims.COLUMNS]
        if row.get("note"):
            notes.append(row["note"])
            cells[claims.COLUMNS.index("verdict")] += f" [{len(notes)}]"
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    listed = "".join(f"<li>{html.escape(str(n))}</li>" for n in notes)
    return (f"<div class='wide'><table class='claims'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"</table></div>" + (f"<ol class='muted'>{listed}</ol>" if notes else ""))


def _fmt(val) -> str:
    if val is None or (isinstance(val, float) and pd.isna(val)):
        return ""
    if isinstance(val, float):
        return f"{val:.4g}"
    return html.escape(str(val))


def published_tables(paper: str) -> str:
    """The paper's published tables; a paper without a file yet gets a note, not an error."""
    if paper not in published.papers():
        return (f"<p class='muted'>No published numbers for paper <code>{html.escape(paper)}</code> yet "
                f"(lib/histolean/study/published/{html.escape(paper)}.yaml is missing).</p>")
    parts = []
    for name, table in (published.papers().get(paper) or {}).items():
        if not isinstance(table, dict) or "rows" not in table:
            continue
        frame = pd.DataFrame(table["rows"])
        note = f"<br><span class='muted'>{html.escape(table.get('note', ''))}</span>" if table.get("note") else ""
        parts.append(f"<h4>Published: {html.escape(paper)} / {html.escape(name)} "
                     f"<span class='muted'>({html.escape(table.get('source', ''))})</span>{note}</h4>"
                     + "<div class='wide'>" + frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                                            border=0) + "</div>")
    return "".join(parts)


def _figures(out: Path, benchmark: str) -> str:
    figs = []
    for path in sorted((out / "figures").glob(f"{benchmark}__*.png")):
        data = base64.b64encode(path.read_bytes()).decode()
        caption = path.stem.split("__", 1)[1].replace("_", " ")
        figs.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "".join(figs)


def _notebook_intro(notebook: Path) -> str:
    """The first markdown cell of the benchmark notebook: what it measures."""
    if not notebook.exists():
        return ""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            text = "".join(cell.get("source", "")).strip()
            body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))  # the title is ours
            return markdown_html(body)
    return ""


def markdown_html(text: str) -> str:
    """Notebook markdown as HTML: raw HTML escaped, ``$...$`` / ``$$...$$`` math as MathML (offline)."""
    import mistune  # nbconvert's markdown renderer

    def math(renderer, tex: str, display: bool = False) -> str:
        try:
            return mathml.to_mathml(tex, display)
        except mathml.UnsupportedTeX:  # shown as its source, never dropped
            return f"<code>{html.escape(('$$' if display else '$') + tex + ('$$' if display else '$'))}</code>"

    md = mistune.create_markdown(escape=True, plugins=["math"])
    md.renderer.register("inline_math", math)
    md.renderer.register("block_math", lambda renderer, tex: math(renderer, tex, display=True))
    return md(text)


def build(profile: str = "default", root: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, data_root: str | None = None) -> Path:
    """Write ``<out>/report.html`` (default ``outputs/<profile>``) from the manifests, rows and figures there.
    An unknown profile is an error naming it (``FileNotFoundError``), not an empty report."""
    root = project_root(root)
    out = Path(out) if out is not None else runner.output_dir(profile, root)
    cfg = runner.load_profile(profile, root)
    profile_names = list(cfg["benchmarks"])
    # results written by the standalone scripts in benchmarks/ rather than by the runner
    scripts = sorted(p.stem for p in (out / "results").glob("*.jsonl")
                     if p.stem not in profile_names and (root / "benchmarks" / f"{p.stem}.py").exists())
    names = profile_names + scripts

    overview, sections = [], []
    for name in names:
        manifest = runner.read_manifest(out, name) or {}
        status = "script" if name in scripts else runner.status(name, cfg, root, out, data_root)
        # Only rows of a finished, current run are trusted; a failed, interrupted or stale run is
        # listed with its error or the command that refreshes it.
        rows = records.read_rows(out, name) if status in ("ok", "script") else []
        # claim rows have no model, method or metrics: they get their own table
        claim_rows = [r for r in rows if r.get("kind") == "claim"]
        rows = [r for r in rows if r.get("kind") != "claim"]
        kinds = pd.Series([r.get("data_kind") for r in rows]).value_counts().to_dict() if rows else {}
        source = (f"standalone script <code>benchmarks/{name}.py</code>" if name in scripts
                  else f"executed notebook <a href='notebooks/{name}.ipynb'>notebooks/{name}.ipynb</a>")
        overview.append(
            f"<tr><td><a href='#{name}'>{name}</a></td><td><span class='badge {status}'>{status}</span></td>"
            f"<td>{manifest.get('seconds', '')}</td><td>{len(rows)}</td>"
            f"<td>{len(claim_rows)}</td><td>{', '.join(f'{k}: {v}' for k, v in kinds.items())}</td></tr>")
        error = f"<div class='error'>{html.escape(manifest['error'])}</div>" if manifest.get("error") else ""
        if status == "stale":
            error = (f"<div class='error'>Results are out of date: parameters, notebook or library changed since "
                     f"they were computed. Run <code>histolean run --profile {profile} --only {name}</code>.</div>")
        synth_note = ("<p><span class='badge synthetic-badge'>SYNTHETIC</span> Some rows below were computed on "
                      "procedurally generated images, not real data: they test the pipeline, not the method.</p>"
                      if kinds.get("synthetic") else "")
        papers = "".join(published_tables(p) for p in BENCHMARK_PAPERS.get(name, []))
        sections.append(
            f"<h2 id='{name}'>{html.escape(name)} <span class='badge {status}'>{status}</span></h2>"
            f"{_notebook_intro(notebook_path(root, name))}"
            f"<p class='muted'>Source: {source}</p>{error}{synth_note}"
            f"{_figures(out, name) if status in ('ok', 'script') else ''}"
            f"{f'<h3>Paper claims</h3>{claims_table(claim_rows)}' if claim_rows else ''}"
            f"<h3>Our results</h3>{rows_table(rows)}{papers}")

    versions = records.library_versions()
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>histolean report: {profile}</title>"
            f"<style>{_CSS}</style></head><body><h1>histolean study report: profile <code>{profile}</code></h1>"
            f"<p class='muted'>Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} on "
            f"{html.escape(records.device_description())}; "
            f"{html.escape(', '.join(f'{k} {v}' for k, v in versions.items()))}.</p>"
            f"<table><thead><tr><th>benchmark</th><th>status</th><th>seconds</th><th>rows</th><th>claims</th><th>data</th>"
            f"</tr></thead><tbody>{''.join(overview)}</tbody></table>{''.join(sections)}</body></html>")
    return atomic.write_text(out / "report.html", page)
