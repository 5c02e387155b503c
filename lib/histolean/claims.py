"""The closing cell of a benchmark notebook: claim by claim, what the paper says and what our rows
show, at which scale. The numbers come from the recorded rows; this module only lays them out."""

from __future__ import annotations

COLUMNS = ("claim", "paper", "ours", "scale")


def markdown(claims: list[dict]) -> str:
    """A Markdown table with one row per claim (keys ``claim``, ``paper``, ``ours``, ``scale``)."""
    for i, c in enumerate(claims):
        missing = [k for k in COLUMNS if k not in c]
        if missing:
            raise ValueError(f"claim {i} ({c.get('claim', '?')!r}) lacks {missing}; each needs {list(COLUMNS)}")
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c[k]) for k in COLUMNS) + " |" for c in claims]
    return "\n".join(lines)


def show(claims: list[dict]):
    """Display the table in a notebook (rendered Markdown) and return its text."""
    from IPython.display import Markdown, display

    text = markdown(claims)
    display(Markdown(text))
    return text
