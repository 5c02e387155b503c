"""A profile checked before any notebook starts: a bad value stops the study in seconds, not hours in.

``check_profile(cfg, root)`` reads each benchmark's notebook ``parameters`` cell (its assignments and
their defaults, parsed, never executed) and checks the profile's keys against it:

* every key is declared in the cell (papermill would otherwise add it in a cell of its own and the typo
  would silently run the default);
* every value has the kind of its default (number, text, flag, list, mapping; ``None`` is always allowed:
  the notebooks read it as "all" or "the default"), and a text among the choices the cell's comment lists
  as ``a | b | c``;
* counts, epochs, batch sizes, sides and widths are positive integers, threads non-negative integers, and
  no number is negative;
* model names are in the registry (:data:`histolean.core.arch.MODELS`, Keras builders for the PCam/IDC zoo),
  every input side reaches each network's minimum (the TIL study's IR and NAR variants included), backend
  labels are known (:mod:`histolean.core.backends`).

Every problem is one line naming the profile file, the benchmark and the key.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

from histolean.core import arch
from histolean.util.paths import notebook_path

# Leaf keys that hold positive integers (counts, epochs, batch sizes, sides, widths, levels).
POSITIVE_INT = re.compile(
    r"^(n_\w+|\w*epochs|\w*batch(_size|_sizes)?|runs|\w*repeats|\w*images|\w*patches|\w*per_image|\w*per_dataset|"
    r"patch_limit|\w*grid|\w*tiles?|\w*tiles_image|\w*sizes|\w*channels|\w*crop|\w*input(_size)?|patch_px|max_cr|"
    r"mask_interval|granularity|\w*workers|tune_\w+|fallback_(train|valid)|slides_at_scale|phi|ir|nar)$")
THREADS = re.compile(r"^\w*threads$")
# positive-looking keys whose 0 means something ("the whole image", "none", "no warm-up"), or that may be fractional
ZERO_ALLOWED = {"eval_crop", "memory_large", "e2e_max_tumour", "throughput_warmup", "warmup_epochs"}
FRACTIONAL = {"warmup_epochs"}
# the framework whose builders a benchmark's model names need (default torch)
FRAMEWORK = {"pcam_idc_zoo": "keras"}
# (size key, models key) pairs: every model of the list must take an input of that side
INPUT_RULES = {"resrep": [("input_size", "networks")], "til_maps": [("fallback_input_size", None)]}
ZOO_PCAM_PX = 96      # PCam's native patch side: the zoo trains on it
ZOO_IDC_KEY = "idc_upscale"   # None: the models that need more than IDC's 50 px are "not applicable", not an error
NOT_LITERAL = object()   # a default the cell computes (not a literal): its kind is not checked


class ProfileError(ValueError):
    """A profile value the study would fail on (or silently misread); one line per problem."""


def _parameters_cell(nb: dict):
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in (cell.get("metadata", {}).get("tags") or []):
            return cell
    return None


def declared_parameters(notebook: Path) -> tuple[dict, dict]:
    """``(defaults, choices)`` of a notebook's tagged ``parameters`` cell: name -> default value (a literal,
    else :data:`NOT_LITERAL`), and name -> the choices its comment lists as ``a | b | c``."""
    try:
        nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ProfileError(f"{notebook}: not a readable notebook ({err})") from None
    cell = _parameters_cell(nb)
    if cell is None:
        return {}, {}
    source = "".join(cell.get("source", ""))
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ProfileError(f"{notebook}: the parameters cell is not valid Python ({err.msg}, line {err.lineno})") \
            from None
    lines = source.splitlines()
    defaults, choices = {}, {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        try:
            defaults[name] = ast.literal_eval(node.value)
        except ValueError:
            defaults[name] = NOT_LITERAL
        comment = lines[node.end_lineno - 1].partition("#")[2]
        if "|" in comment:
            # '"nar": Adam ... | "resrep": SGD' -> nar, resrep: the first word of each alternative
            # ('"folder:PATH"' -> folder:PATH: any text that starts with "folder:")
            words = [re.sub(r"[\"']", "", part.split()[0]).rstrip(":") for part in comment.split("|") if part.split()]
            if all(re.fullmatch(r"\w+(:PATH)?", w) for w in words):
                choices[name] = words
    return defaults, choices


def _kind(value) -> str | None:
    if value is None or value is NOT_LITERAL:
        return None
    if isinstance(value, bool):
        return "a flag (true/false)"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return None


def _leaves(key: str, value):
    """(dotted key, leaf name, number) of every number in ``value`` (lists and mappings walked)."""
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield key, leaf, value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(key, v)
    elif isinstance(value, dict):
        for k, v in value.items():
            # architectures: {resnet50v2: {...}}, network_settings: {tiny: {...}}: a model name is no leaf name
            yield from _leaves(f"{key}.{k}", v)


def _number_problems(key: str, value) -> list[tuple[str, str]]:
    out = []
    for path, leaf, x in _leaves(key, value):
        if not math.isfinite(x):
            out.append((path, f"{x!r} is not a finite number"))
        elif x < 0:
            out.append((path, f"{x!r} must not be negative"))
        elif POSITIVE_INT.match(leaf) or THREADS.match(leaf):
            zero_ok = leaf in ZERO_ALLOWED or THREADS.match(leaf)
            if x == 0 and not zero_ok:
                out.append((path, f"{x!r} must be positive"))
            elif leaf not in FRACTIONAL and not float(x).is_integer():
                out.append((path, f"{x!r} must be a whole number"))
    return out


def _base_model(name: str) -> str:
    """'resnet50v2_nar2' (notebook 03's NAR-reduced network) -> 'resnet50v2'."""
    return re.sub(r"_nar\d+$", "", str(name))


def _model_problems(benchmark: str, params: dict) -> list[tuple[str, str]]:
    framework = FRAMEWORK.get(benchmark, "torch")
    out = []
    for key, value in params.items():
        if key.endswith("_models") or key == "networks":
            names = value if isinstance(value, (list, tuple)) else []
        elif key == "architectures" and isinstance(value, dict):
            names = list(value)
        else:
            continue
        for name in names:
            try:
                arch.model_entry(_base_model(name), framework)
            except ValueError as err:
                out.append((key, str(err)))
    return out


def _too_small(name: str, side) -> str | None:
    entry = arch.MODELS.get(_base_model(name).lower())
    if entry is None or not isinstance(side, int) or side >= entry.min_input:
        return None
    return f"{side} px is below {name}'s minimum input of {entry.min_input} px"


def _input_problems(benchmark: str, params: dict) -> list[tuple[str, str]]:
    out = []
    for size_key, models_key in INPUT_RULES.get(benchmark, []):
        side = params.get(size_key)
        models = params.get(models_key) or [] if models_key else ["resnet50v2"]
        out += [(size_key, p) for p in (_too_small(m, side) for m in models) if p]
    if benchmark == "pcam_idc_zoo":
        for key in ("pcam_models", "transfer_models", "indomain_models", "tune_models"):
            out += [(key, p + " (PCam patches)") for p in (_too_small(m, ZOO_PCAM_PX) for m in params.get(key) or [])
                    if p]
        if params.get(ZOO_IDC_KEY) is not None:
            side = params[ZOO_IDC_KEY]
            out += [(ZOO_IDC_KEY, p) for p in (_too_small(m, side) for m in params.get("idc_models") or []) if p]
    if benchmark == "til_nar_resrep" and isinstance(params.get("architectures"), dict):
        out += _til_variant_problems(params["architectures"])
    if benchmark == "nar_cost":
        out += _nar_cost_problems(params.get("patch_px"))
    return out


def _nar_cost_problems(patch_px) -> list[tuple[str, str]]:
    """Notebook 02 builds both networks at ``patch_px`` with the paper's IR and NAR levels (Tables 3-4):
    the smallest of them must still reach the network's minimum."""
    from histolean.methods import nar

    if not isinstance(patch_px, int) or isinstance(patch_px, bool) or patch_px < 1:
        return []   # reported as a bad number
    out = []
    for name, levels in nar.PAPER_NAR_LEVELS.items():
        problem = _too_small(name, patch_px)
        if problem:
            out.append(("patch_px", problem))
            continue
        for method, setting, spec in nar.paper_variants(arch.spec(name, input_size=patch_px), nar_levels=levels):
            problem = _too_small(name, spec.input_size)
            if problem:
                level = ", ".join(f"{k}={v}" for k, v in setting.items())
                out.append(("patch_px", f"{method.upper()} {level} takes {spec.input_size} px: {problem}; "
                                        "raise patch_px"))
                break   # the smallest levels follow: one line per network
    return out


def _til_variant_problems(architectures: dict) -> list[tuple[str, str]]:
    """The TIL study's IR and NAR variants shrink the input: each must still reach the network's minimum."""
    from histolean.methods import nar

    out = []
    for name, cfg in architectures.items():
        cfg = cfg or {}
        base = cfg.get("base_input", 240)
        key = f"architectures.{name}.base_input"
        if arch.MODELS.get(str(name).lower()) is None or not isinstance(base, int) or base < 1:
            continue   # reported as an unknown model or a bad number
        problem = _too_small(name, base)
        if problem:
            out.append((key, problem))
            continue
        spec = arch.spec(str(name).lower(), input_size=base)
        for method, reduce in (("ir", nar.input_reduction), ("nar", nar.reduce)):
            for level in cfg.get(method) or []:
                if not isinstance(level, (int, float)) or isinstance(level, bool) or level < 0:
                    continue
                side = reduce(spec, level).input_size
                problem = _too_small(name, side)
                if problem:
                    out.append((f"architectures.{name}.{method}", f"level {level} takes {side} px: {problem}; "
                                                                  "raise base_input or drop the level"))
    return out


def _backend_problems(params: dict) -> list[tuple[str, str]]:
    from histolean.core import backends

    out = []
    for key in ("backend", "backends"):
        labels = params.get(key)
        labels = [labels] if isinstance(labels, str) else labels if isinstance(labels, list) else []
        for label in labels:
            if label == "auto" and key == "backend":
                continue
            try:
                backends.parse_label(label)
            except ValueError as err:
                out.append((key, f"{label!r}: {err}"))
    return out


def _is_choice(value: str, choices: list[str]) -> bool:
    """``value`` is one of ``choices``; a choice ``prefix:PATH`` takes any ``prefix:<path>``."""
    return any(value == c or (c.endswith(":PATH") and value.startswith(c[:-4]) and len(value) > len(c) - 4)
               for c in choices)


def benchmark_problems(benchmark: str, params: dict, notebook: Path) -> list[tuple[str, str]]:
    """(key, problem) for every bad value of one benchmark's profile entry."""
    defaults, choices = declared_parameters(notebook)
    unknown = [k for k in params if k not in defaults]
    out = [(k, f"not declared in the parameters cell of {notebook.name} (it declares "
               f"{', '.join(sorted(defaults)) or 'nothing: is its first code cell tagged parameters?'})")
           for k in unknown]
    for key, value in params.items():
        if key in unknown:
            continue
        want, got = _kind(defaults[key]), _kind(value)
        if want and got and want != got:
            out.append((key, f"{value!r} is {got}, but the notebook's default {defaults[key]!r} is {want}"))
            continue
        if isinstance(defaults[key], dict) and defaults[key] and isinstance(value, dict) \
                and not any(str(k).lower() in arch.MODELS for k in defaults[key]):
            out += [(f"{key}.{k}", f"unknown key; {key} takes {', '.join(defaults[key])}")
                    for k in value if k not in defaults[key]]
        if key in choices and value is not None:
            values = value if isinstance(value, list) else [value]
            out += [(key, f"{v!r} is not one of {', '.join(choices[key])}") for v in values
                    if not _is_choice(str(v), choices[key])]
        out += _number_problems(key, value)
    out += _model_problems(benchmark, params) + _input_problems(benchmark, params) + _backend_problems(params)
    return out


def check_profile(cfg: dict, root: Path, names: list[str] | None = None) -> None:
    """Raise :class:`ProfileError` (one line per problem) when a benchmark of ``cfg`` (all, or ``names``) has a
    key its notebook does not declare or a value the study would fail on. Benchmarks without a readable
    notebook are the runner's to report (as failed, the others still run)."""
    where = f"params/{cfg['profile']}.yaml"
    lines = []
    for benchmark in names if names is not None else list(cfg["benchmarks"]):
        notebook = notebook_path(root, benchmark)
        try:
            json.loads(notebook.read_text(encoding="utf-8"))
        except (OSError, ValueError):   # missing or unreadable: recorded as failed when its turn comes
            continue
        lines += [f"{where}: benchmark {benchmark!r}, key {key!r}: {problem}"
                  for key, problem in benchmark_problems(benchmark, cfg["benchmarks"][benchmark], notebook)]
    if lines:
        raise ProfileError("\n".join(lines))
