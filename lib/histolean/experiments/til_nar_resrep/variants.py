"""The networks the TIL experiment trains: each architecture's original and its IR / NAR / ResRep variants.

A plain config (``{"resnet50v2": {"base_input": 48, "ir": [1, 2], "nar": [1, 2, 3], "resrep": [0.9]}}``)
becomes a list of :class:`Variant`, originals first (everything is compared with its original).
Architectures are names of the model registry (:data:`histolean.core.arch.MODELS`, torch builders),
which also knows each network's smallest input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from histolean.core import arch
from histolean.core.arch import Spec
from histolean.methods import nar

BENCHMARK = "til_nar_resrep"
METHODS = ("original", "ir", "nar", "resrep")
PAPER_BASE_INPUT = 240
CONFIG_KEYS = ("base_input", "ir", "nar", "resrep")


@dataclass
class Variant:
    model: str
    method: str
    setting: dict
    spec: Spec            # the network to train (ResRep: the original it prunes)
    base_input: int

    @property
    def id(self) -> str:
        if self.method == "original":
            return f"{self.model}__original"
        key, value = next(iter(self.setting.items()))
        short = {"k": "k", "phi": "phi", "epsilon": "eps"}[key]
        return f"{self.model}__{self.method}_{short}{value:.2f}" if key == "epsilon" else \
            f"{self.model}__{self.method}_{short}{value}"

    @property
    def spec_buildable(self) -> bool:
        return self.method != "resrep"


def base_spec(model: str, input_size: int) -> Spec:
    """The registry's torch network ``model`` with the TIL task's two classes."""
    return arch.spec(model, num_classes=2, input_size=input_size)


def build_variants(config: dict, *, alpha: float = nar.ALPHA, beta: float = nar.BETA,
                   gamma: float = nar.GAMMA) -> list[Variant]:
    """The variants of ``config`` (architecture -> base_input and levels per method), originals first."""
    if not isinstance(config, dict) or not config:
        raise ValueError(f"architectures must be a non-empty mapping of architecture -> settings, got {config!r}")
    out = []
    for given, cfg in config.items():
        try:
            name = arch.model_entry(given, "torch").name
        except ValueError as err:
            raise ValueError(f"architectures: {err}") from None
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(CONFIG_KEYS)
        if unknown:
            raise ValueError(f"architectures.{name}: unknown key(s) {sorted(unknown)}; use base_input and the "
                             "methods ir (levels k), nar (levels phi), resrep (epsilons)")
        base_input = cfg.get("base_input", PAPER_BASE_INPUT)
        if not (isinstance(base_input, int) and base_input >= 1):
            raise ValueError(f"architectures.{name}.base_input must be a positive integer, got {base_input!r}")
        _check_input(name, f"{name}__original", base_input)
        base = base_spec(name, base_input)
        found = [Variant(name, "original", {}, base, base_input)]
        for k in cfg.get("ir") or []:
            _check_config_level(name, "ir", k, integer=True)
            found.append(Variant(name, "ir", {"k": int(k)}, nar.input_reduction(base, k, gamma=gamma), base_input))
        for phi in cfg.get("nar") or []:
            _check_config_level(name, "nar", phi, integer=True)
            found.append(Variant(name, "nar", {"phi": int(phi)},
                                 nar.reduce(base, phi, alpha=alpha, beta=beta, gamma=gamma), base_input))
        for eps in cfg.get("resrep") or []:
            _check_config_level(name, "resrep", eps, integer=False)
            found.append(Variant(name, "resrep", {"epsilon": float(eps)}, base, base_input))
        for v in found:
            _check_input(name, v.id, v.spec.input_size)
        out += found
    return out


def _check_input(name: str, variant_id: str, size: int) -> None:
    """A variant's input must reach its network's minimum (the registry's ``min_input``)."""
    try:
        arch.check_input_size(name, size)
    except arch.InputTooSmall:
        raise ValueError(f"architectures.{name}: variant {variant_id} would take {size} px, but {name} needs at "
                         f"least {arch.model_entry(name).min_input} px; raise base_input or drop the level") from None


def _check_config_level(name: str, method: str, value, integer: bool) -> None:
    """One level of ``architectures.<name>.<method>`` in the config: integers >= 1 (IR, NAR) or an epsilon."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer() and value >= 1
    else:
        ok = ok and 0 < value < 2
    if not ok:
        what = "integer levels >= 1" if integer else "epsilons in (0, 2) (thresholds on compactor row norms)"
        raise ValueError(f"architectures.{name}.{method}: bad level {value!r}; give {what}")


def stage_of(layer: str) -> str:
    """'stages.2.0.conv1' -> 'stage3' (the paper's numbering); 'stem.conv' -> 'stem'."""
    parts = layer.split(".")
    if parts[0] == "stages" and len(parts) > 1 and parts[1].isdigit():
        return f"stage{int(parts[1]) + 1}"
    return parts[0]


def kept_by_stage(converted) -> dict[str, float]:
    """Fraction of output channels a ResRep conversion kept, per stage (the paper's Table 2 view)."""
    kept: dict[str, list[int]] = {}
    for layer, (_, out_after) in converted.widths.items():
        before = converted.original_widths[layer][1]
        k = kept.setdefault(stage_of(layer), [0, 0])
        k[0] += out_after
        k[1] += before
    return {s: a / b for s, (a, b) in kept.items()}
