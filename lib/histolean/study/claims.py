"""The closing cell of every notebook: claim by claim, what the paper says, what our rows show, the rule
that decided between them, and the verdict.

Each experiment module exposes ``paper_claims(rows) -> list[Claim]`` (pure: rows in, claims out, so the
verdict logic is unit-tested on constructed rows); the notebook ends with one call::

    claims.show(rec.add_claims(til_nar_resrep.paper_claims(rec.rows)))

``Recorder.add_claims`` saves them as rows of ``kind`` "claim" in the benchmark's results file, and the
report shows them. A verdict comes from one of the decision rules below, stated in the claim's ``rule``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

HOLDS, FAILS, NOT_RESOLVED, NOT_TESTABLE = "holds", "does not hold", "not resolved", "not testable at this scale"
VERDICTS = (HOLDS, FAILS, NOT_RESOLVED, NOT_TESTABLE)
COLUMNS = ("paper", "claim", "paper_value", "ours", "rule", "verdict", "scale")


@dataclass(frozen=True)
class Claim:
    """One claim of a paper against our numbers. ``interval``: the decision statistic's interval, if any."""

    paper: str          # which paper (e.g. "Meirelles et al. 2022, Table 3")
    claim: str          # the claim, in the paper's sense
    paper_value: str    # the paper's number(s)
    ours: str           # our number(s), with their interval
    rule: str           # the decision rule, with its margin where it has one
    verdict: str        # one of VERDICTS
    scale: str          # the scale it was decided at (profile, images, epochs)
    interval: tuple[float, float] | None = None
    note: str = ""      # caveats, contradictions in the paper, what would resolve it
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.claim!r}: verdict {self.verdict!r} is not one of {VERDICTS}")
        for name in COLUMNS:
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"claim {self.claim!r}: {name} must be a non-empty text")

    def as_row(self) -> dict:
        row = asdict(self)
        row["interval"] = list(self.interval) if self.interval is not None else None
        return row


# ---------------------------------------------------------------------------------------------
# Decision rules: each returns a verdict; the claim states the rule in words beside it
# ---------------------------------------------------------------------------------------------

def equivalent(lo: float, hi: float, margin: float) -> str:
    """"Same" when the interval of a difference lies inside [-margin, margin]; "does not hold" when it lies
    wholly outside; otherwise "not resolved". Rule text: :func:`equivalent_rule`."""
    _check_interval(lo, hi)
    if -margin <= lo and hi <= margin:
        return HOLDS
    if hi < -margin or lo > margin:
        return FAILS
    return NOT_RESOLVED


def equivalent_rule(margin: float, what: str = "difference", level: float = 0.95) -> str:
    return (f"holds if the {level:.0%} interval of the {what} lies inside ±{margin:g}; fails if outside; "
            "else not resolved")


def directional(lo: float, hi: float, direction: str) -> str:
    """``direction`` "higher": holds when the interval of a difference excludes 0 above it, fails when it
    excludes 0 below; "lower" the other way round; otherwise "not resolved"."""
    _check_interval(lo, hi)
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    above, below = lo > 0, hi < 0
    if direction == "lower":
        above, below = below, above
    return HOLDS if above else FAILS if below else NOT_RESOLVED


def directional_rule(direction: str, what: str = "difference", level: float = 0.95) -> str:
    side = "above" if direction == "higher" else "below"
    return (f"holds if the {level:.0%} interval of the {what} lies {side} 0; fails if on the other side; "
            "else not resolved")


def within(value: float, lo: float, hi: float) -> str:
    """For an exact (deterministic) number: holds when ``lo <= value <= hi``."""
    return HOLDS if lo <= value <= hi else FAILS


def _check_interval(lo: float, hi: float) -> None:
    if not (lo == lo and hi == hi) or lo > hi:  # NaN or reversed: a bug upstream, not a verdict
        raise ValueError(f"not an interval: [{lo}, {hi}]")


# ---------------------------------------------------------------------------------------------
# Display
# ---------------------------------------------------------------------------------------------

def _records(claims: Iterable[Claim | dict]) -> list[dict]:
    out = []
    for i, c in enumerate(claims):
        row = c.as_row() if isinstance(c, Claim) else dict(c)
        missing = [k for k in COLUMNS if k not in row]
        if missing:
            raise ValueError(f"claim {i} ({row.get('claim', '?')!r}) lacks {missing}; each needs {list(COLUMNS)}")
        out.append(row)
    return out


def markdown(claims: Iterable[Claim | dict]) -> str:
    """A Markdown table, one row per claim; notes follow the table, numbered."""
    rows = _records(claims)
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    header = ("paper", "claim", "paper's number", "ours", "rule", "verdict", "scale")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for r in rows:
        verdict = f"**{r['verdict']}**"
        if r.get("note"):
            notes.append(r["note"])
            verdict += f" [{len(notes)}]"
        lines.append("| " + " | ".join(cell(v) for v in (r["paper"], r["claim"], r["paper_value"], r["ours"],
                                                             r["rule"], verdict, r["scale"])) + " |")
    lines += [""] + [f"[{i}] {cell(n)}" for i, n in enumerate(notes, 1)] if notes else []
    return "\n".join(lines)


def show(claims: Iterable[Claim | dict]) -> str:
    """Display the table in a notebook (rendered Markdown) and return its text."""
    from IPython.display import Markdown, display

    text = markdown(claims)
    display(Markdown(text))
    return text
