"""The small TeX subset of the notebooks' markdown, as MathML: the report is one offline HTML file
(no MathJax from a CDN) and every current browser renders MathML.

Covered: letters, numbers, operators, Greek letters and common symbols (``\\approx``, ``\\geq``,
``\\cdot``, ``\\partial``, ``\\lVert`` ...), ``^`` and ``_`` with a character or a ``{group}``,
``\\frac{a}{b}``, ``\\sqrt{x}``, ``\\text{...}``/``\\mathrm{...}``, ``\\left``/``\\right`` and spacing
commands. An unknown command raises :class:`UnsupportedTeX` (the caller shows the source instead),
so nothing is silently dropped.
"""

from __future__ import annotations

import html
import re

_GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi "
          "varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi "
          "Sigma Upsilon Phi Psi Omega").split()
_GREEK_CHARS = "αβγδϵεζηθϑικλμνξπϖρϱσςτυϕφχψωΓΔΘΛΞΠΣΥΦΨΩ"
assert len(_GREEK) == len(_GREEK_CHARS)
IDENTIFIERS = dict(zip(_GREEK, _GREEK_CHARS)) | {"ell": "ℓ", "infty": "∞", "partial": "∂", "nabla": "∇"}
OPERATORS = {
    "approx": "≈", "sim": "∼", "simeq": "≃", "equiv": "≡", "neq": "≠", "ne": "≠", "geq": "≥", "ge": "≥",
    "leq": "≤", "le": "≤", "ll": "≪", "gg": "≫", "cdot": "⋅", "times": "×", "div": "÷", "pm": "±", "mp": "∓",
    "to": "→", "rightarrow": "→", "leftarrow": "←", "Rightarrow": "⇒", "mapsto": "↦", "in": "∈",
    "notin": "∉", "subset": "⊂", "cup": "∪", "cap": "∩", "propto": "∝", "sum": "∑", "prod": "∏", "int": "∫",
    "lVert": "‖", "rVert": "‖", "Vert": "‖", "lvert": "|", "rvert": "|", "vert": "|", "langle": "⟨",
    "rangle": "⟩", "lfloor": "⌊", "rfloor": "⌋", "lceil": "⌈", "rceil": "⌉", "ldots": "…", "dots": "…",
    "cdots": "⋯", "max": "max", "min": "min", "log": "log", "exp": "exp", "arg": "arg", "lim": "lim",
    "{": "{", "}": "}", "%": "%", "#": "#", "&": "&", "_": "_",
}
SPACES = {",": "0.167em", ":": "0.222em", ";": "0.278em", "quad": "1em", "qquad": "2em", " ": "0.25em", "!": "0"}
_TOKEN = re.compile(r"\\([A-Za-z]+|.)|(\d+(?:\.\d+)?)|(\s+)|(.)", re.S)


class UnsupportedTeX(ValueError):
    """TeX outside the subset this converter handles."""


def to_mathml(tex: str, display: bool = False) -> str:
    """``<math>`` markup for the TeX source ``tex`` (inline unless ``display``)."""
    tokens = _tokenise(tex)
    body, rest = _row(tokens, 0, tex)
    if rest != len(tokens):
        raise UnsupportedTeX(f"unbalanced braces in ${tex}$")
    mode = "block" if display else "inline"
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML" display="{mode}"><mrow>{body}</mrow></math>'


def _tokenise(tex: str) -> list[tuple[str, str]]:
    out = []
    for command, number, space, char in _TOKEN.findall(tex):
        if command:
            out.append(("cmd", command))
        elif number:
            out.append(("num", number))
        elif space:
            out.append(("space", space))
        else:
            out.append(("char", char))
    return out


def _row(tokens, i, tex) -> tuple[str, int]:
    """Atoms with their scripts until a closing brace or the end."""
    parts = []
    while i < len(tokens) and tokens[i] != ("char", "}"):
        if tokens[i][0] == "space":  # TeX ignores spaces in math
            i += 1
            continue
        base, i = _atom(tokens, i, tex)
        sub = sup = None
        while i < len(tokens) and tokens[i] in (("char", "^"), ("char", "_")):
            which = tokens[i][1]
            script, i = _atom(tokens, i + 1, tex)
            if which == "^":
                sup = script
            else:
                sub = script
        if sub is not None and sup is not None:
            base = f"<msubsup>{base}{sub}{sup}</msubsup>"
        elif sup is not None:
            base = f"<msup>{base}{sup}</msup>"
        elif sub is not None:
            base = f"<msub>{base}{sub}</msub>"
        parts.append(base)
    return "".join(parts), i


def _group(tokens, i, tex) -> tuple[str, int]:
    """A ``{...}`` group or a single atom, as one ``<mrow>``."""
    inner, i = _atom(tokens, i, tex)
    return f"<mrow>{inner}</mrow>", i


def _atom(tokens, i, tex) -> tuple[str, int]:
    while i < len(tokens) and tokens[i][0] == "space":
        i += 1
    if i >= len(tokens):
        raise UnsupportedTeX(f"${tex}$ ends where a character or group is needed")
    kind, value = tokens[i]
    i += 1
    if kind == "num":
        return f"<mn>{value}</mn>", i
    if kind == "char":
        if value == "{":
            inner, i = _row(tokens, i, tex)
            if i >= len(tokens):
                raise UnsupportedTeX(f"unbalanced braces in ${tex}$")
            return f"<mrow>{inner}</mrow>", i + 1
        if value.isalpha():
            return f"<mi>{html.escape(value)}</mi>", i
        return f"<mo>{html.escape(value)}</mo>", i
    if value in IDENTIFIERS:
        return f"<mi>{IDENTIFIERS[value]}</mi>", i
    if value in OPERATORS:
        return f"<mo>{html.escape(OPERATORS[value])}</mo>", i
    if value in SPACES:
        return f'<mspace width="{SPACES[value]}"/>', i
    if value in ("left", "right", "big", "Big", "bigl", "bigr", "Bigl", "Bigr"):
        return _atom(tokens, i, tex) if value in ("left", "right") else ("", i)
    if value == "frac":
        num, i = _group(tokens, i, tex)
        den, i = _group(tokens, i, tex)
        return f"<mfrac>{num}{den}</mfrac>", i
    if value == "sqrt":
        arg, i = _group(tokens, i, tex)
        return f"<msqrt>{arg}</msqrt>", i
    if value in ("text", "mathrm", "operatorname", "textrm"):
        if i >= len(tokens) or tokens[i] != ("char", "{"):
            raise UnsupportedTeX(f"\\{value} needs a {{...}} argument in ${tex}$")
        end = next((j for j in range(i, len(tokens)) if tokens[j] == ("char", "}")), None)
        if end is None:
            raise UnsupportedTeX(f"unbalanced braces in ${tex}$")
        text = "".join(v for _, v in tokens[i + 1:end])
        tag = "mtext" if value.startswith("text") else 'mi mathvariant="normal"'
        return f"<{tag}>{html.escape(text)}</{tag.split()[0]}>", end + 1
    raise UnsupportedTeX(f"\\{value} in ${tex}$ is not in histolean.study.mathml's TeX subset")
