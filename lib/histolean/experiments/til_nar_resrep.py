"""The TIL benchmark of the NAR paper (Meirelles et al. 2022, Section 3, Tables 1-4), as a library.

* :func:`build_variants`: the networks to train, from a plain config
  ``{"resnet50v2": {"base_input": 48, "ir": [1, 2], "nar": [1, 2, 3], "resrep": [0.9]}}``
  (the original of each architecture is always included: everything is compared with it).
* :class:`TilRunner`: trains every variant ``runs`` times, **resumably**: each finished run is a
  JSON file (its test-set probabilities included) and each variant's best model (by validation
  AUC) a :func:`histolean.core.checkpoints.save_model` file, both written atomically under
  ``<out>/models/til_nar_resrep/``; a run whose settings are unchanged is reused, never retrained.
* :func:`auc_with_ci` / :func:`paired_auc_difference`: bootstrap over test patches (the same
  resamples for both networks: a paired comparison) of the mean-over-runs AUC.
* :func:`measure_speed`: every variant of an architecture timed side by side with its original.
* :func:`colour_histogram_baselines`, :func:`nar_grid_search`, :func:`paper_claims`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from histolean.core import arch, measure, checkpoints, flops, models, train
from histolean.util import atomic
from histolean.methods import nar
from histolean.core.arch import Spec

BENCHMARK = "til_nar_resrep"
ARCHITECTURES = {
    "resnet50v2": arch.resnet50v2,
    "inception_v4": arch.inception_v4,
    # a two-stage CNN for tests and quick looks; not in the paper
    "tiny": lambda num_classes=2, input_size=32: arch.tiny(num_classes, input_size, width=8),
}
METHODS = ("original", "ir", "nar", "resrep")
PAPER_BASE_INPUT = 240
# Smallest input each network accepts: Inception V4's valid-padded stem and reductions need 75 px
# (tests/test_tilbench.py builds both at these sizes and one pixel less).
MIN_INPUT = {"resnet50v2": 1, "inception_v4": 75, "tiny": 4}
CLASSES = ["TIL-negative", "TIL-positive"]
# train.ArrayDataset scales to [0, 1] and normalises with these: stored in every checkpoint.
MEAN = [train.NORM_MEAN] * 3
STD = [train.NORM_STD] * 3


# --------------------------------------------------------------------------- variants

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


def build_variants(config: dict, *, alpha: float = nar.ALPHA, beta: float = nar.BETA,
                   gamma: float = nar.GAMMA) -> list[Variant]:
    """The variants of ``config`` (architecture -> base_input and levels per method), originals first."""
    if not isinstance(config, dict) or not config:
        raise ValueError(f"architectures must be a non-empty mapping of architecture -> settings, got {config!r}")
    out = []
    for name, cfg in config.items():
        if name not in ARCHITECTURES:
            raise ValueError(f"architectures: unknown architecture {name!r}; use one of {sorted(ARCHITECTURES)}")
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"base_input", "ir", "nar", "resrep"}
        if unknown:
            raise ValueError(f"architectures.{name}: unknown key(s) {sorted(unknown)}; use base_input and the "
                             "methods ir (levels k), nar (levels phi), resrep (epsilons)")
        base_input = cfg.get("base_input", PAPER_BASE_INPUT)
        if not (isinstance(base_input, int) and base_input >= 1):
            raise ValueError(f"architectures.{name}.base_input must be a positive integer, got {base_input!r}")
        base = ARCHITECTURES[name](num_classes=2, input_size=base_input)
        found = [Variant(name, "original", {}, base, base_input)]
        for k in cfg.get("ir") or []:
            _check_level(name, "ir", k, integer=True)
            found.append(Variant(name, "ir", {"k": int(k)}, nar.input_reduction(base, k, gamma=gamma), base_input))
        for phi in cfg.get("nar") or []:
            _check_level(name, "nar", phi, integer=True)
            found.append(Variant(name, "nar", {"phi": int(phi)},
                                 nar.reduce(base, phi, alpha=alpha, beta=beta, gamma=gamma), base_input))
        for eps in cfg.get("resrep") or []:
            _check_level(name, "resrep", eps, integer=False)
            found.append(Variant(name, "resrep", {"epsilon": float(eps)}, base, base_input))
        for v in found:
            if v.spec.input_size < MIN_INPUT[name]:
                raise ValueError(f"architectures.{name}: variant {v.id} would take {v.spec.input_size} px, but "
                                 f"{name} needs at least {MIN_INPUT[name]} px; raise base_input or drop the level")
        out += found
    return out


def _check_level(name: str, method: str, value, integer: bool) -> None:
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


# --------------------------------------------------------------------------- statistics

def _rank_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (B, N) against labels ``y`` (B, N), ties averaged; NaN if one class."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n1 = y.sum(1)
    n0 = y.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _bootstrap_mean_auc(y, probs, n_boot: int, seed: int, chunk: int = 250):
    """Mean-over-runs AUC on ``n_boot`` resamples of the patches (same resamples for every seed call)."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, y.size, (min(chunk, n_boot - start), y.size))
        values.append(np.mean([_rank_auc(y[idx], p[idx]) for p in probs], axis=0))
    return np.concatenate(values)


def auc_with_ci(y, probs, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean AUC over runs (rows of ``probs``), sd over runs, and a percentile bootstrap CI over patches."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    y = np.asarray(y, dtype=np.int64)
    per_run = _rank_auc(np.broadcast_to(y, probs.shape), probs)
    boot = _bootstrap_mean_auc(y, probs, n_boot, seed)
    lo, hi = np.nanpercentile(boot, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"auc": float(per_run.mean()), "auc_sd": float(per_run.std(ddof=1)) if len(per_run) > 1 else None,
            "auc_runs": [float(a) for a in per_run], "auc_ci_lo": float(lo), "auc_ci_hi": float(hi)}


def paired_auc_difference(y, probs, reference_probs, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                          margin: float = 0.02) -> dict:
    """AUC(variant) - AUC(reference) on the same test patches, with a paired bootstrap CI.

    Both networks are scored on the same resamples (same seed), so patch-to-patch difficulty
    cancels. ``same_auc``: "supported" when the whole CI lies within +-``margin``; "lower" /
    "higher" when it excludes 0 on that side; otherwise "not resolved" (the test set cannot tell).
    """
    y = np.asarray(y, dtype=np.int64)
    a = _bootstrap_mean_auc(y, probs, n_boot, seed)
    b = _bootstrap_mean_auc(y, reference_probs, n_boot, seed)
    diff = a - b
    lo, hi = np.nanpercentile(diff, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    point = auc_with_ci(y, probs, n_boot=1)["auc"] - auc_with_ci(y, reference_probs, n_boot=1)["auc"]
    if -margin <= lo and hi <= margin:
        verdict = "supported"
    elif hi < 0:
        verdict = "lower"
    elif lo > 0:
        verdict = "higher"
    else:
        verdict = "not resolved"
    return {"auc_diff": float(point), "auc_diff_ci_lo": float(lo), "auc_diff_ci_hi": float(hi),
            "same_auc": verdict, "equivalence_margin": margin}


# --------------------------------------------------------------------------- training, resumable

@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 5e-4
    schedule: str | None = None       # None | "step" (StepLR step_size / gamma)
    step_size: int = 5
    gamma: float = 0.5
    runs: int = 1
    augment: bool = True


@dataclass
class ResRepConfig:
    epochs: int = 2
    init: str = "original"            # "original": prune the trained original | "scratch" (the paper)
    setting: str = "nar"              # the NAR paper's Adam + StepLR
    lr: float = 5e-4
    compactor_lr: float | None = None
    lasso_strength: float = 1e-4
    flops_target: float = 0.75
    warmup_epochs: float = 1.0
    mask_interval: int = 200
    granularity: int | None = 4       # classes added to the mask per update (official 4; None: all at once)
    scope: str = "paper"              # "paper" (resrep.paper_scope: bottleneck-internal for ResNets) | "any" | "bottleneck"

    def __post_init__(self):
        if self.init not in ("original", "scratch"):
            raise ValueError(f"resrep init must be 'original' or 'scratch', got {self.init!r}")
        if self.scope not in ("paper", "any", "bottleneck"):
            raise ValueError(f"resrep scope must be 'paper', 'any' or 'bottleneck', got {self.scope!r}")

    def scope_for(self, spec: Spec) -> str:
        from histolean.methods import resrep

        return resrep.paper_scope(spec) if self.scope == "paper" else self.scope


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class VariantResult:
    variant: Variant
    runs: list[dict] = field(default_factory=list)   # per run: seed, val_auc, test_probs, train_time_s, ...
    net: torch.nn.Module | None = None                # the best run's network (eval mode), for timing
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict)         # gflops/params/layers of converted ResRep networks, ...

    @property
    def test_probs(self) -> np.ndarray:
        return np.asarray([r["test_probs"] for r in self.runs])


class TilRunner:
    """Trains and evaluates variants on a :class:`~histolean.data.til_task.TilTask`, resuming finished runs."""

    def __init__(self, task, output_dir, train_cfg: TrainConfig, resrep_cfg: ResRepConfig | None = None, *,
                 seed: int = 0, device=None, log=print):
        self.task, self.cfg, self.resrep_cfg = task, train_cfg, resrep_cfg or ResRepConfig()
        self.dir = Path(output_dir) / "models" / BENCHMARK
        self.seed, self.log = int(seed), log
        self.device = torch.device(device) if device is not None else train.default_device()
        self.results: dict[str, VariantResult] = {}
        self.patch_um = float(task.description.get("window_um", 50.0))

    # -- loaders at a variant's input size
    def loader(self, split: str, size: int, shuffle=False, seed=0):
        part = self.task.split(split)
        return train.make_loader(part.images, part.labels, batch_size=self.cfg.batch_size, shuffle=shuffle,
                                 augment=shuffle and self.cfg.augment, seed=seed, size=size)

    def _fingerprint(self, variant: Variant, **extra) -> str:
        return _hash({"variant": variant.id, "spec": checkpoints.spec_to_dict(variant.spec),
                      "train": asdict(self.cfg), "task": self.task.fingerprint(), "seed": self.seed, **extra})

    def run(self, variants: list[Variant], progress: bool = True) -> dict[str, VariantResult]:
        """Every variant (originals first, ResRep last: it may start from the trained original)."""
        order = sorted(variants, key=lambda v: (v.method == "resrep", v.method != "original"))
        iterator = order
        if progress:
            from tqdm.auto import tqdm
            iterator = tqdm(order, desc="variants", unit="variant")
        resrep_done: dict[tuple[str, int], object] = {}
        for v in iterator:
            if v.spec_buildable:
                self.results[v.id] = self._run_trainable(v)
            else:
                self.results[v.id] = self._run_resrep(v, resrep_done)
        return self.results

    # -- original / IR / NAR
    def _run_trainable(self, v: Variant) -> VariantResult:
        self.dir.mkdir(parents=True, exist_ok=True)
        ckpt = self.dir / f"{v.id}.pt"
        vfp = self._fingerprint(v)
        result = VariantResult(v, checkpoint=str(ckpt))
        best_info = self._checkpoint_info(ckpt, vfp)
        have_model = best_info is not None  # without the model file, recorded runs cannot be trusted alone
        for r in range(self.cfg.runs):
            run_seed = self.seed * 1000 + r
            run_json = self.dir / f"{v.id}__run{r}.json"
            fp = _hash({"variant": vfp, "run": r})
            done = self._read_run(run_json, fp)
            if done is not None and not have_model:
                self.log(f"{v.id}: run {r} is recorded but the model file {ckpt} is missing, corrupt or from other "
                         "settings; retraining the run")
                done = None
            if done is not None:
                result.runs.append({**done, "resumed": True})
                continue
            net = models.build(v.spec, seed=run_seed)
            size = v.spec.input_size
            t0 = time.perf_counter()
            fit = train.fit(net, self.loader("train", size, shuffle=True, seed=run_seed), self.loader("valid", size),
                            epochs=self.cfg.epochs, optimizer="adam", lr=self.cfg.lr,
                            weight_decay=self.cfg.weight_decay, schedule=self.cfg.schedule,
                            step_size=self.cfg.step_size, gamma=self.cfg.gamma, device=self.device,
                            progress=False, seed=run_seed, desc=v.id)
            train_time = time.perf_counter() - t0
            probs, labels = train.predict(net, self.loader("test", size), device=self.device)
            row = {"run": r, "seed": run_seed, "fingerprint": fp, "val_auc": fit.best_value,
                   "best_epoch": fit.best_epoch, "epochs_run": len(fit.history), "train_time_s": train_time,
                   "test_probs": probs.tolist(), "test_labels_sum": int(labels.sum()), "resumed": False}
            # the best run so far (by validation AUC) becomes the variant's model file
            if best_info is None or (fit.best_value or -1) > (best_info.get("val_auc") or -1):
                best_info = self._save_model(ckpt, net, v, vfp, row, probs, labels)
                result.net = net.eval()
            atomic.write_text(run_json, json.dumps(row))
            result.runs.append(row)
            self.log(f"{v.id}: run {r} trained in {train_time:.0f} s, val AUC {fit.best_value:.3f}")
        if result.net is None:
            result.net, _ = checkpoints.load_model(ckpt)
        return result

    def _save_model(self, path, net, v: Variant, vfp: str, row: dict, probs, labels) -> dict:
        from histolean.core.metrics import auc

        info = {"patch_um": self.patch_um, "mean": MEAN, "std": STD, "classes": CLASSES,
                "resize": "bilinear with antialias (torch.nn.functional.interpolate) to input_size",
                "dataset": self.task.dataset, "data_kind": self.task.data_kind, "model": v.model,
                "method": v.method, "setting": dict(v.setting), "auc": auc(labels, probs),
                "val_auc": row["val_auc"], "run": row["run"], "gflops": flops.gflops(v.spec),
                "variant_id": v.id, "variant_fingerprint": vfp}
        checkpoints.save_model(path, net, v.spec, **info)
        return info

    def _checkpoint_info(self, path: Path, vfp: str) -> dict | None:
        """The info of a usable model file of these settings; a damaged one is moved aside, said so."""
        if not path.exists():
            return None
        try:
            _, info = checkpoints.load_model(path)
        except (ValueError, FileNotFoundError) as err:
            aside = path.with_suffix(".pt.corrupt")
            path.replace(aside)
            self.log(f"{err}; moved to {aside.name}, the variant is retrained")
            return None
        return info if info.get("variant_fingerprint") == vfp else None

    def _read_run(self, path: Path, fp: str) -> dict | None:
        if not path.exists():
            return None
        try:
            row = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            aside = path.with_suffix(".json.corrupt")
            path.replace(aside)
            self.log(f"{path}: unreadable run record ({err}); moved to {aside.name}, the run is retrained")
            return None
        return row if row.get("fingerprint") == fp else None

    # -- ResRep: one remembering run per architecture and run, converted at every epsilon
    def _run_resrep(self, v: Variant, done: dict) -> VariantResult:
        from histolean.methods import resrep

        c = self.resrep_cfg
        result = VariantResult(v)
        size = v.spec.input_size
        for r in range(self.cfg.runs):
            run_seed = self.seed * 1000 + r
            key = (v.model, r)
            if key not in done:
                done[key] = self._remember(v, r, run_seed)
            net, train_time, fp, resumed = done[key]
            small = resrep.convert(net, epsilon=v.setting["epsilon"], warn=False)  # inexact by design: reported
            module = small.module.to(self.device).eval()
            val = train.evaluate(module, self.loader("valid", size), device=self.device)
            probs, _ = train.predict(module, self.loader("test", size), device=self.device)
            result.runs.append({"run": r, "seed": run_seed, "fingerprint": fp, "val_auc": val["auc"],
                                "train_time_s": train_time, "test_probs": probs.tolist(), "resumed": resumed,
                                "epochs_run": c.epochs})
            if r == 0:
                counted = flops.flop_count(module.cpu(), size)
                result.net = module
                result.extra = {"gflops": counted / 1e9, "params": flops.count_params(module),
                                **flops.count_layers(module), "flops_ratio": small.flops_ratio,
                                "removed_channels": small.removed_channels, "kept_by_stage": kept_by_stage(small),
                                "conversion": small.report.as_dict(), "resrep_scope": c.scope_for(v.spec),
                                "masked_flops_ratio": net.predicted_flops(net.dropped_classes()) / net.original_flops}
        return result

    def _remember(self, v: Variant, r: int, run_seed: int):
        from histolean.methods import resrep

        c = self.resrep_cfg
        init_fp = None
        if c.init == "original":
            original = self.results.get(f"{v.model}__original")
            if original is None:
                raise ValueError(f"ResRep of {v.model} starts from the trained original, which is not among the "
                                 "variants run before it")
            init_fp = self._fingerprint(original.variant)
        fp = _hash({"resrep": asdict(c), "variant": self._fingerprint(v, method="resrep"), "init": init_fp, "run": r})
        path = self.dir / f"{v.model}__resrep__run{r}.pt"
        base = models.build(v.spec, seed=run_seed)
        if c.init == "original":
            base.load_state_dict(self.results[f"{v.model}__original"].net.state_dict())
        net = resrep.prepare(base, v.spec.input_size, scope=c.scope_for(v.spec))
        if path.exists():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if state.get("fingerprint") == fp:
                    net.load_state_dict(state["state_dict"])
                    return net.to(self.device), float(state["train_time_s"]), fp, True
            except Exception as err:  # truncated or foreign: keep it aside, train again
                aside = path.with_suffix(".pt.corrupt")
                path.replace(aside)
                self.log(f"ResRep state {path} cannot be read ({type(err).__name__}: {err}); moved to "
                         f"{aside.name}, remembering again")
        loader = self.loader("train", v.spec.input_size, shuffle=True, seed=run_seed)
        overrides = {"lr": c.lr, **({"compactor_lr": c.compactor_lr} if c.compactor_lr else {})}
        t0 = time.perf_counter()
        run = resrep.remember(base, loader, input_size=v.spec.input_size, epochs=c.epochs,
                              flops_target=c.flops_target, setting=c.setting, lasso_strength=c.lasso_strength,
                              warmup_epochs=c.warmup_epochs, mask_interval=c.mask_interval,
                              granularity=c.granularity, scope=c.scope_for(v.spec), seed=run_seed,
                              device=self.device, progress=False, **overrides)
        recalibrate_batchnorm(run.net, loader, self.device)
        train_time = time.perf_counter() - t0
        with atomic.atomic_path(path) as tmp:
            torch.save({"format": "histolean.resrep-state/1", "fingerprint": fp, "train_time_s": train_time,
                        "state_dict": run.net.state_dict()}, tmp)
        self.log(f"{v.model}: ResRep run {r} remembered in {train_time:.0f} s ({run.net.summary()})")
        return run.net.eval(), train_time, fp, False


@torch.no_grad()
def recalibrate_batchnorm(net: torch.nn.Module, loader, device=None) -> None:
    """Re-estimate every BN layer's running statistics over ``loader`` (train mode, no gradients).

    A few steps at ResRep's SGD learning rates move the weights faster than BN's running averages
    follow; evaluated (and folded into the convs by conversion) with stale statistics, the network
    outputs garbage. Exact averages over the training windows fix that.
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    net.train()
    for x, _ in loader:
        net(x.to(device) if device is not None else x)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    net.eval()


# --------------------------------------------------------------------------- rows

def paper_scale_gflops(v: Variant) -> float | None:
    """GFLOPs of the same variant at the paper's 240 px base (None for ResRep: its widths depend on training)."""
    base = ARCHITECTURES[v.model](num_classes=2, input_size=PAPER_BASE_INPUT)
    if v.method == "original":
        return flops.gflops(base)
    if v.method == "ir":
        return flops.gflops(nar.input_reduction(base, v.setting["k"]))
    if v.method == "nar":
        return flops.gflops(nar.reduce(base, v.setting["phi"]))
    return None


def summarise(results: dict[str, VariantResult], task, speed: dict[str, dict], scale: dict, *,
              n_boot: int = 1000, margin: float = 0.02, seed: int = 0) -> list[dict]:
    """One row (keyword arguments of ``Recorder.add``) per variant: AUC over runs with a bootstrap CI,
    the paired difference with its architecture's original, costs, measured speed, training time."""
    y = task.test.labels
    rows = []
    for vid, res in results.items():
        v = res.variant
        probs = res.test_probs
        m = auc_with_ci(y, probs, n_boot=n_boot, seed=seed)
        m.update({"accuracy": float(np.mean([(np.asarray(p) >= 0.5) == y for p in probs])),
                  "val_auc": float(np.mean([r["val_auc"] for r in res.runs])), "n_test": int(len(y)),
                  "n_test_positive": int(y.sum())})
        original = results[f"{v.model}__original"]
        if v.method != "original":
            m.update(paired_auc_difference(y, probs, original.test_probs, n_boot=n_boot, seed=seed, margin=margin))
        else:
            m.update({"auc_diff": 0.0, "auc_diff_ci_lo": 0.0, "auc_diff_ci_hi": 0.0, "same_auc": "reference",
                      "equivalence_margin": margin})
        if v.spec_buildable:
            cost = {"gflops": flops.gflops(v.spec), "params": flops.count_params(v.spec), **flops.count_layers(v.spec)}
        else:
            cost = {k: res.extra[k] for k in ("gflops", "params", "param_layers", "layers")}
        gflops_original = flops.gflops(original.variant.spec)
        rows.append({
            "dataset": task.dataset, "data_kind": task.data_kind, "model": v.model, "method": v.method,
            "setting": dict(v.setting), "metrics": m, "variant_id": vid, **cost,
            "gflops_original": gflops_original, "flop_reduction": gflops_original / cost["gflops"],
            "gflops_paper_scale": paper_scale_gflops(v), "input_size": v.spec.input_size,
            "train_time_s": float(np.mean([r["train_time_s"] for r in res.runs])),
            "epochs_run": [r.get("epochs_run") for r in res.runs], "resumed": all(r["resumed"] for r in res.runs),
            "checkpoint": res.checkpoint, "scale": {**scale, "base_input": v.base_input, "n_test": int(len(y))},
            **{k: v2 for k, v2 in res.extra.items() if k not in cost}, **speed.get(vid, {}),
        })
    return rows


# --------------------------------------------------------------------------- speed

def measure_speed(nets: dict[str, tuple[torch.nn.Module, int]], reference: str, *, batch_size: int = 16,
                  repeats: int = 5, warmup: int = 1, device=None) -> dict[str, dict]:
    """Throughput (batch ``batch_size``) and latency (batch 1) of every net, interleaved with ``reference``.

    ``nets``: name -> (module, input size). Each net gets random inputs at its own size.
    """
    device = torch.device(device) if device is not None else train.default_device()
    out: dict[str, dict] = {n: {} for n in nets}
    for batch, key in ((batch_size, "batch"), (1, "single")):
        calls = {}
        for name, (net, size) in nets.items():
            net = net.to(device).eval()
            x = torch.rand(batch, 3, size, size, device=device)
            calls[name] = (lambda n=net, x=x: _infer(n, x))
        timed = bench.compare_speed(calls, reference=reference, repeats=repeats, warmup=warmup, device=device,
                                    items_per_call=batch)
        for name, t in timed.items():
            if key == "batch":
                out[name].update({"throughput_per_s": t["per_s"], "batch_ms": t["median_s"] * 1e3,
                                  "batch_ms_min": t["min_s"] * 1e3, "batch_ms_max": t["max_s"] * 1e3,
                                  "speedup": t["speedup"], "speedup_min": t["speedup_min"],
                                  "speedup_max": t["speedup_max"], "speed_batch": batch, "speed_repeats": repeats,
                                  "speed_device": t["device"]})
            else:
                out[name].update({"latency_ms": t["median_s"] * 1e3, "latency_ms_min": t["min_s"] * 1e3,
                                  "latency_ms_max": t["max_s"] * 1e3, "latency_speedup": t["speedup"]})
    return out


def _infer(net, x):
    with torch.inference_mode():
        return net(x)


# --------------------------------------------------------------------------- baselines and grid search

def colour_features(images: np.ndarray, bins: int = 16) -> np.ndarray:
    """Per-channel RGB histograms (normalised) plus channel means and sds: colour only, no shape."""
    images = np.asarray(images)
    flat = images.reshape(len(images), -1, 3)
    hists = [np.stack([np.histogram(img[:, c], bins=bins, range=(0, 256))[0] for c in range(3)]).ravel()
             for img in flat]
    hists = np.asarray(hists, dtype=np.float64) / flat.shape[1]
    return np.hstack([hists, flat.mean(1) / 255.0, flat.std(1) / 255.0])


def colour_histogram_baselines(task, seed: int = 0) -> dict[str, dict]:
    """Gradient-boosted trees and logistic regression on colour histograms: how far colour alone gets."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = colour_features(task.train.images), colour_features(task.test.images)
    models_ = {"hist_gbt": HistGradientBoostingClassifier(max_iter=200, random_state=seed),
               "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))}
    out = {}
    for name, model in models_.items():
        t0 = time.perf_counter()
        model.fit(x_train, task.train.labels)
        out[name] = {"test_probs": model.predict_proba(x_test)[:, 1], "train_time_s": time.perf_counter() - t0}
    return out


def nar_grid_search(task, base: Spec, grid: dict, train_cfg: TrainConfig, output_dir, *, seed: int = 0,
                    device=None, log=print) -> list[dict]:
    """The paper's coefficient search: each (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ target
    scored by the validation AUC of a short training run of ``nar.reduce(base, phi)``; cached per candidate."""
    cache = Path(output_dir) / "models" / BENCHMARK / "grid"
    phi = grid.get("phi", 1)
    epochs = grid.get("epochs", 1)
    runner = TilRunner(task, output_dir, TrainConfig(**{**asdict(train_cfg), "epochs": epochs, "runs": 1}),
                       seed=seed, device=device, log=log)
    details = {}

    def score(a, b, g):
        spec = nar.reduce(base, phi, alpha=a, beta=b, gamma=g)
        fp = _hash({"spec": checkpoints.spec_to_dict(spec), "task": task.fingerprint(), "epochs": epochs,
                    "train": asdict(train_cfg), "seed": seed})
        path = cache / f"a{a:.2f}_b{b:.2f}_g{g:.2f}.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text())
                if stored.get("fingerprint") == fp:
                    details[(a, b, g)] = stored
                    return stored["val_auc"]
            except json.JSONDecodeError:
                pass  # rewritten below
        net = models.build(spec, seed=seed)
        t0 = time.perf_counter()
        fit = train.fit(net, runner.loader("train", spec.input_size, shuffle=True, seed=seed),
                        runner.loader("valid", spec.input_size), epochs=epochs, optimizer="adam", lr=train_cfg.lr,
                        weight_decay=train_cfg.weight_decay, device=runner.device, progress=False, seed=seed)
        stored = {"fingerprint": fp, "val_auc": fit.best_value, "train_time_s": time.perf_counter() - t0,
                  "gflops": flops.gflops(spec), "input_size": spec.input_size, "blocks": list(spec.blocks)}
        atomic.write_text(path, json.dumps(stored))
        details[(a, b, g)] = stored
        return fit.best_value

    ranking = nar.grid_search(score, alphas=grid.get("alphas"), betas=grid.get("betas"), gammas=grid.get("gammas"),
                              target=grid.get("target", 2.0), tol=grid.get("tol", 0.1))
    return [{"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "constraint": c.constraint, "val_auc": c.score,
             "rank": i + 1, "phi": phi, "epochs": epochs, **{k: v for k, v in details.get((c.alpha, c.beta, c.gamma),
                                                                                       {}).items() if k != "fingerprint"},
             "paper_choice": (c.alpha, c.beta, c.gamma) == (nar.ALPHA, nar.BETA, nar.GAMMA)}
            for i, c in enumerate(ranking)]


# --------------------------------------------------------------------------- rows -> claims

def pareto_front(gflops, auc) -> np.ndarray:
    """Indices of the points no other point beats on both cost (lower) and AUC (higher), by cost."""
    gflops, auc = np.asarray(gflops, float), np.asarray(auc, float)
    order = np.lexsort((-auc, gflops))
    front, best = [], -np.inf
    for i in order:
        if auc[i] > best:
            front.append(i)
            best = auc[i]
    return np.asarray(front, dtype=int)


def cheapest_not_worse(rows, model: str, method: str) -> dict | None:
    """The lowest-GFLOPs variant of ``method`` whose AUC is not significantly below the original's."""
    ok = [r for r in rows if r["model"] == model and r["method"] == method
          and r["metrics"].get("same_auc") in ("supported", "not resolved", "higher")]
    return min(ok, key=lambda r: r["gflops"]) if ok else None


def paper_claims(rows: list[dict]) -> list[dict]:
    """The paper's four claims, each with what our rows show (computed, not typed in)."""
    def find(model, method, key=None, value=None):
        for r in rows:
            if r["model"] == model and r["method"] == method and (key is None or r["setting"].get(key) == value):
                return r
        return None

    def describe(r):
        if r is None:
            return None, "not run at this scale"
        m = r["metrics"]
        original = find(r["model"], "original")
        at_240 = ""
        if r.get("gflops_paper_scale") and original and original.get("gflops_paper_scale"):
            at_240 = f" ({original['gflops_paper_scale'] / r['gflops_paper_scale']:.2f}x at the paper's 240 px base)"
        return r, (f"{r['flop_reduction']:.2f}x fewer GFLOPs{at_240}, measured speed-up "
                   f"{r.get('speedup', float('nan')):.2f}x; "
                   f"AUC {m['auc']:.3f} vs {m['auc'] - m['auc_diff']:.3f}, difference {m['auc_diff']:+.3f} "
                   f"[{m['auc_diff_ci_lo']:+.3f}, {m['auc_diff_ci_hi']:+.3f}] on {m['n_test']} test patches: "
                   f"same AUC {m['same_auc']}")

    out = []
    for claim, paper, (model, method, key, value) in (
        ("NAR phi=2 makes ResNet50V2 3.26x cheaper at the same AUC", "3.26x, AUC 0.86 vs 0.86",
         ("resnet50v2", "nar", "phi", 2)),
        ("ResRep eps=0.90 makes ResNet50V2 1.32x cheaper at the same AUC", "1.32x, AUC 0.86 vs 0.86",
         ("resnet50v2", "resrep", "epsilon", 0.9)),
        ("NAR makes Inception V4 ~4x cheaper at the same AUC (phi=2)", "3.7x (15.48 -> 4.17 GFLOPs), AUC 0.92 vs 0.92",
         ("inception_v4", "nar", "phi", 2)),
    ):
        r, text = describe(find(model, method, key, value))
        out.append({"claim": claim, "paper": paper, "ours": text, "scale": _scale_text(r)})
    for model in sorted({r["model"] for r in rows if r["method"] != "baseline"}):
        best = {m: cheapest_not_worse(rows, model, m) for m in ("nar", "ir", "resrep")}
        parts = [f"{m}: {b['gflops']:.3f} GFLOPs ({_setting_text(b)})" if b else f"{m}: none run / none as good"
                 for m, b in best.items()]
        ran = {m: b["gflops"] for m, b in best.items() if b}
        order = " < ".join(sorted(ran, key=ran.get))
        out.append({"claim": f"{model}: at the original's AUC, NAR is cheaper than IR, IR cheaper than ResRep",
                    "paper": "NAR < IR < ResRep (ResNet50V2: 2.96 < 4.24 < 7.27 GFLOPs at AUC 0.86)",
                    "ours": "cheapest variant not significantly below the original: " + "; ".join(parts)
                            + (f". Order: {order}" if order else ""),
                    "scale": _scale_text(next((b for b in best.values() if b), None))})
    baselines = [r for r in rows if r["method"] == "baseline"]
    originals = [r for r in rows if r["method"] == "original"]
    if baselines and originals:
        best = max(baselines, key=lambda r: r["metrics"]["auc"])
        out.append({"claim": "(context) the CNNs learn more than colour alone", "paper": "not reported",
                    "ours": "; ".join(f"{r['model']} original AUC {r['metrics']['auc']:.3f} [{r['metrics']['auc_ci_lo']:.3f}, "
                                      f"{r['metrics']['auc_ci_hi']:.3f}]" for r in originals)
                            + f" vs colour histograms + {best['model']} {best['metrics']['auc']:.3f} "
                              f"[{best['metrics']['auc_ci_lo']:.3f}, {best['metrics']['auc_ci_hi']:.3f}]",
                    "scale": _scale_text(originals[0])})
    return out


def _setting_text(r) -> str:
    return ", ".join(f"{k}={v}" for k, v in r["setting"].items()) or "original"


def _scale_text(r) -> str:
    if r is None:
        return "-"
    s = r.get("scale", {})
    return (f"base input {s.get('base_input')} px (paper 240), {s.get('epochs')} epochs (paper 50/180), "
            f"{s.get('runs')} run(s) (paper 3), {s.get('n_train')} training / {s.get('n_test')} test patches, "
            f"{r.get('dataset')} ({r.get('data_kind')})")
