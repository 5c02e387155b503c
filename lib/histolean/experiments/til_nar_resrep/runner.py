"""Training every variant on the TIL task, resumably.

Under ``<output_dir>/models/til_nar_resrep/``, each finished run is a :mod:`histolean.util.cache`
record (``<variant>__run<r>.json``: its test-set probabilities included), each ResRep training a
cache record of its weights (``<model>__resrep__run<r>.pt``), and each variant's best run (by
validation AUC) a :func:`histolean.core.checkpoints.save_model` file (``<variant>.pt``: what the slide
maps of ``til_maps`` load). A run whose settings, data and training code are unchanged is reused,
never retrained; a record that cannot be read is moved aside with a warning and recomputed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from histolean.core import checkpoints, flops, models, train
from histolean.core.arch import Spec
from histolean.util import cache

from .variants import BENCHMARK, Variant, kept_by_stage

CLASSES = ["TIL-negative", "TIL-positive"]
# train.ArrayDataset scales to [0, 1] and normalises with these: stored in every checkpoint.
MEAN = [train.NORM_MEAN] * 3
STD = [train.NORM_STD] * 3
# the code whose change must retrain (its source is part of every cache key)
TRAINING_CODE = (train, models)
RECORD = 2  # run records carry the validation-chosen decision threshold since 2


def decision_threshold(labels, probs) -> float:
    """The threshold chosen on validation predictions: the one maximising Youden's J (sensitivity +
    specificity - 1); 0.5 where the validation set has one class."""
    from sklearn.metrics import roc_curve

    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probs)
    best = int(np.argmax(tpr - fpr))
    return float(min(max(thresholds[best], 0.0), 1.0))


def _resrep_code():
    from histolean.methods.resrep import channels, compactor, selection, training

    return TRAINING_CODE + (channels, compactor, selection, training)


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
    precision: str = "fp32"           # "fp32" | "bf16" | "auto" (train.fit; ResRep trains in float32)


# the NAR paper's Table 3: fraction of the original's 9.65 GFLOPs each ResRep epsilon kept (our FLOPs targets)
PAPER_FLOPS_KEPT = {0.82: 0.86, 0.84: 0.82, 0.86: 0.79, 0.88: 0.80, 0.90: 0.75, 0.92: 0.63, 0.94: 0.63}


@dataclass
class ResRepConfig:
    epochs: int = 2
    init: str = "original"            # "original": prune the trained original | "scratch" (the paper)
    setting: str = "nar"              # the NAR paper's Adam + StepLR
    lr: float = 5e-4
    compactor_lr: float | None = None
    lasso_strength: float = 1e-4
    flops_target: float | str = 0.75  # a fraction kept, or "paper": per epsilon from PAPER_FLOPS_KEPT (one run each)
    warmup_epochs: float = 1.0
    mask_interval: int = 200
    granularity: int | None = 4       # classes added to the mask per update (official 4; None: all at once)
    # "paper" (resrep.paper_scope: bottleneck-internal for ResNets) | "any" | "bottleneck"
    scope: str = "paper"
    # "epsilon": remove rows with norm < epsilon (inexact unless they collapsed) | "collapsed": Ding et al.'s exact one
    conversion: str = "epsilon"

    def __post_init__(self):
        if self.init not in ("original", "scratch"):
            raise ValueError(f"resrep init must be 'original' or 'scratch', got {self.init!r}")
        if self.scope not in ("paper", "any", "bottleneck"):
            raise ValueError(f"resrep scope must be 'paper', 'any' or 'bottleneck', got {self.scope!r}")
        if self.conversion not in ("epsilon", "collapsed"):
            raise ValueError(f"resrep conversion must be 'epsilon' or 'collapsed', got {self.conversion!r}")
        if self.flops_target != "paper" and not (isinstance(self.flops_target, (int, float))
                                                 and 0 < self.flops_target <= 1):
            raise ValueError(f"resrep flops_target must be a fraction in (0, 1] or 'paper', got {self.flops_target!r}")

    def target_for(self, epsilon: float) -> float:
        """The FLOPs fraction a run aims for: the configured one, or the paper's Table 3 fraction at ``epsilon``."""
        if self.flops_target != "paper":
            return float(self.flops_target)
        try:
            return PAPER_FLOPS_KEPT[round(float(epsilon), 2)]
        except KeyError:
            raise ValueError(f"resrep flops_target 'paper': the paper's Table 3 has no epsilon {epsilon}; use one of "
                             f"{sorted(PAPER_FLOPS_KEPT)}") from None

    def scope_for(self, spec: Spec) -> str:
        from histolean.methods import resrep

        return resrep.paper_scope(spec) if self.scope == "paper" else self.scope


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
                 seed: int = 0, device=None, log=print, folder=None):
        self.task, self.cfg, self.resrep_cfg = task, train_cfg, resrep_cfg or ResRepConfig()
        # where records and model files go: a cross-validation fold has its own folder
        self.dir = Path(folder) if folder is not None else Path(output_dir) / "models" / BENCHMARK
        self.seed, self.log = int(seed), log
        self.device = torch.device(device) if device is not None else train.default_device()
        self.results: dict[str, VariantResult] = {}
        self.patch_um = float(task.description.get("window_um", 50.0))

    # -- loaders at a variant's input size
    def loader(self, split: str, size: int, shuffle=False, seed=0):
        part = self.task.split(split)
        return train.make_loader(part.images, part.labels, batch_size=self.cfg.batch_size, shuffle=shuffle,
                                 augment=shuffle and self.cfg.augment, seed=seed, size=size)

    def variant_key(self, variant: Variant, **extra) -> str:
        """The cache key of ``variant`` trained with these settings on this task by this code."""
        return cache.fingerprint({"variant": variant.id, "spec": checkpoints.spec_to_dict(variant.spec),
                                  "train": asdict(self.cfg), "task": self.task.fingerprint(), "seed": self.seed,
                                  "record": RECORD, **extra}, code=TRAINING_CODE)

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
        vkey = self.variant_key(v)
        result = VariantResult(v, checkpoint=str(ckpt))
        best_info = self._model_info(ckpt, vkey)
        run_paths = [self.dir / f"{v.id}__run{r}.json" for r in range(self.cfg.runs)]
        if best_info is None and any(p.exists() for p in run_paths):
            # the variant's model is its best run's: without a usable model file, its runs are redone
            self.log(f"{v.id}: runs are recorded but the model file {ckpt} is missing or from other settings; "
                     "retraining them")
            for p in run_paths:
                cache.forget(p)
        for r, path in enumerate(run_paths):
            run_seed = self.seed * 1000 + r
            key = cache.fingerprint({"variant": vkey, "run": r})
            done = cache.load(path, key)
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
                            progress=False, seed=run_seed, desc=v.id, precision=self.cfg.precision)
            train_time = time.perf_counter() - t0
            probs, labels = train.predict(net, self.loader("test", size), device=self.device)
            row = {"run": r, "seed": run_seed, "val_auc": fit.best_value, "best_epoch": fit.best_epoch,
                   "epochs_run": len(fit.history), "train_time_s": train_time, "test_probs": probs.tolist(),
                   "test_labels_sum": int(labels.sum()), "resumed": False, "precision": fit.precision,
                   "decision_threshold": self._threshold(net, size)}
            # the best run so far (by validation AUC) becomes the variant's model file, saved before the run's
            # record: a kill in between leaves a run to redo, never a record without its model
            if best_info is None or (fit.best_value or -1) > (best_info.get("val_auc") or -1):
                best_info = self._save_model(ckpt, net, v, vkey, row, probs, labels)
                result.net = net.eval()
            cache.save(path, key, row)
            result.runs.append(row)
            self.log(f"{v.id}: run {r} trained in {train_time:.0f} s, val AUC {fit.best_value:.3f}")
        if result.net is None:
            result.net, _ = checkpoints.load_model(ckpt)
        return result

    def _threshold(self, net, size: int) -> float:
        val_probs, val_labels = train.predict(net, self.loader("valid", size), device=self.device)
        return decision_threshold(val_labels, val_probs)

    def _save_model(self, path, net, v: Variant, vkey: str, row: dict, probs, labels) -> dict:
        from histolean.core.metrics import auc, auc_with_ci

        # what the slide maps read: the threshold (from validation predictions) and the held-out AUC with its
        # image-level interval; a single split here, so "out of fold" is this split's test set (oof_source)
        held_out = auc_with_ci(labels, probs, n_boot=500, seed=self.seed, groups=self.task.test.groups)
        info = {"patch_um": self.patch_um, "mean": MEAN, "std": STD, "classes": CLASSES,
                "resize": "bilinear with antialias (torch.nn.functional.interpolate) to input_size",
                "dataset": self.task.dataset, "data_kind": self.task.data_kind, "model": v.model,
                "method": v.method, "setting": dict(v.setting), "auc": auc(labels, probs),
                "val_auc": row["val_auc"], "run": row["run"], "gflops": flops.gflops(v.spec),
                "variant_id": v.id, "variant_fingerprint": vkey,
                "decision_threshold": float(row["decision_threshold"]), "oof_auc": float(held_out["auc"]),
                "oof_auc_ci": [float(held_out["auc_ci_lo"]), float(held_out["auc_ci_hi"])],
                "oof_source": f"test split of one split by image ({held_out['n_groups']} images); no cross-validation"}
        checkpoints.save_model(path, net, v.spec, **info)
        return info

    @staticmethod
    def _model_info(path: Path, vkey: str) -> dict | None:
        """The info of a usable model file of these settings. The model file is a checkpoint (for the slide
        maps), not a cache record, but one that cannot be read gets the cache's policy: moved aside with a
        :class:`~histolean.util.cache.CorruptRecordWarning`, then the variant is retrained."""
        if not path.exists():
            return None
        try:
            _, info = checkpoints.load_model(path)
        except ValueError as err:
            cache.move_aside(path, err)
            return None
        return info if info.get("variant_fingerprint") == vkey else None

    # -- ResRep: one remembering run per architecture and run, converted at every epsilon
    def _run_resrep(self, v: Variant, done: dict) -> VariantResult:
        from histolean.methods import resrep

        c = self.resrep_cfg
        result = VariantResult(v)
        size = v.spec.input_size
        for r in range(self.cfg.runs):
            run_seed = self.seed * 1000 + r
            target = c.target_for(v.setting["epsilon"])
            key = (v.model, r, target)
            if key not in done:
                done[key] = self._remember(v, r, run_seed, target)
            net, train_time, resumed = done[key]
            if c.conversion == "collapsed":  # exact: only rows that collapsed go
                small = resrep.convert(net, warn=False)
            else:  # the epsilon threshold, inexact unless the rows collapsed: reported, and flagged in the rows
                small = resrep.convert(net, epsilon=v.setting["epsilon"], warn=False)
            module = small.module.to(self.device).eval()
            val = train.evaluate(module, self.loader("valid", size), device=self.device)
            probs, _ = train.predict(module, self.loader("test", size), device=self.device)
            result.runs.append({"run": r, "seed": run_seed, "val_auc": val["auc"], "train_time_s": train_time,
                                "test_probs": probs.tolist(), "resumed": resumed, "epochs_run": c.epochs,
                                "decision_threshold": self._threshold(module, size)})
            if r == 0:
                counted = flops.flop_count(module.cpu(), size)
                result.net = module
                # FLOP reductions as everywhere in the rows: original / variant (>= 1)
                result.extra = {"gflops": counted / 1e9, "params": flops.count_params(module),
                                **flops.count_layers(module), "predicted_flop_reduction": 1 / small.flops_ratio,
                                "removed_channels": small.removed_channels, "kept_by_stage": kept_by_stage(small),
                                "conversion": small.report.as_dict(),
                                "resrep_scope": c.scope_for(v.spec), "flops_target": target,
                                "masked_flop_reduction":
                                    net.original_flops / net.predicted_flops(net.dropped_classes())}
        return result

    def _remember(self, v: Variant, r: int, run_seed: int, target: float):
        """ResRep's training of run ``r`` (cached): the network with compactors, its training time, resumed?"""
        from histolean.methods import resrep

        c = self.resrep_cfg
        init_key = None
        if c.init == "original":
            original = self.results.get(f"{v.model}__original")
            if original is None:
                raise ValueError(f"ResRep of {v.model} starts from the trained original, which is not among the "
                                 "variants run before it")
            init_key = self.variant_key(original.variant)
        key = cache.fingerprint({"resrep": asdict(c), "variant": self.variant_key(v, method="resrep"),
                                 "init": init_key, "run": r, "target": target}, code=_resrep_code())
        path = self.dir / (f"{v.model}__resrep__run{r}.pt" if c.flops_target != "paper" else
                           f"{v.model}__resrep_t{target:.2f}__run{r}.pt")
        base = models.build(v.spec, seed=run_seed)
        if c.init == "original":
            base.load_state_dict(self.results[f"{v.model}__original"].net.state_dict())
        net = resrep.prepare(base, v.spec.input_size, scope=c.scope_for(v.spec))
        stored = cache.load(path, key)
        if stored is not None:
            net.load_state_dict(stored["state_dict"])
            return net.to(self.device), float(stored["train_time_s"]), True
        loader = self.loader("train", v.spec.input_size, shuffle=True, seed=run_seed)
        overrides = {"lr": c.lr, **({"compactor_lr": c.compactor_lr} if c.compactor_lr else {})}
        t0 = time.perf_counter()
        run = resrep.remember(base, loader, input_size=v.spec.input_size, epochs=c.epochs,
                              flops_target=target, setting=c.setting, lasso_strength=c.lasso_strength,
                              warmup_epochs=c.warmup_epochs, mask_interval=c.mask_interval,
                              granularity=c.granularity, scope=c.scope_for(v.spec), seed=run_seed,
                              device=self.device, progress=False, **overrides)
        train.recalibrate_batchnorm(run.net, loader, self.device)
        train_time = time.perf_counter() - t0
        cache.save(path, key, {"train_time_s": train_time, "state_dict": run.net.state_dict()})
        self.log(f"{v.model}: ResRep run {r} remembered in {train_time:.0f} s ({run.net.summary()})")
        return run.net.eval(), train_time, False
