"""Cross-validation by image for the TIL experiment: every variant trained once per fold, in parallel workers.

Fold k's model tests on the images of fold k (:func:`histolean.data.til_task.fold_assignment`), so the
pooled out-of-fold predictions score every variant on every image: the rows' AUCs, their image-level
intervals and the paired differences use them. One more training per variant, the ``final`` fold, makes
the model the slide maps load (``<out>/models/til_nar_resrep/<variant>.pt``): trained on all folds but
one, whose images choose its epoch; its decision threshold and AUC are the variant's out-of-fold ones.

::

    cv = CrossValidation(task_kwargs, architectures, output_dir, train_cfg, resrep_cfg, n_folds=5, workers=2)
    task = cv.scored_task()             # the folds' test images pooled: what the rows score
    results = cv.run()                  # one VariantResult per variant, out-of-fold predictions in that order
    cv.stamp_checkpoints(results, task.test)

The trainings (folds x variants; a ResRep variant that starts from the trained original shares its
original's job) go to ``workers`` single-threaded processes (or to ``$HISTOLEAN_SCHEDULER``'s Dask cluster
when set), each resuming what earlier runs recorded under
``<out>/models/til_nar_resrep/fold<k>/``.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from histolean.data.common import PatchSet
from histolean.data.til_task import TilTask, load_til_task
from histolean.util import dryrun

from .runner import ResRepConfig, TilRunner, TrainConfig, VariantResult, decision_threshold
from .summary import check_images
from .variants import BENCHMARK, build_variants

FINAL = "final"


@dataclass(frozen=True)
class Job:
    fold: int | str
    variant_ids: tuple[str, ...]


@functools.lru_cache(maxsize=2)
def _fold_task(task_json: str, fold) -> TilTask:
    return load_til_task(**json.loads(task_json), fold=fold)


def _train_job(job: Job, settings: dict) -> dict[str, VariantResult]:
    """One job in a worker: its fold's task, its variants trained (or resumed); nets kept for the final fold."""
    import torch

    torch.set_num_threads(int(settings["threads"]))
    task = _fold_task(settings["task_json"], job.fold)
    variants = [v for v in build_variants(settings["architectures"]) if v.id in job.variant_ids]
    out = Path(settings["output_dir"])
    folder = None if job.fold == FINAL else out / "models" / BENCHMARK / f"fold{job.fold}"
    runner = TilRunner(task, out, TrainConfig(**settings["train"]), ResRepConfig(**settings["resrep"]),
                       seed=settings["seed"], device=settings["device"], log=lambda *_: None, folder=folder)
    results = runner.run(variants, progress=False)
    if job.fold != FINAL:
        for r in results.values():
            r.net = None   # the fold models are scored, not deployed: do not ship them back
    return results


class CrossValidation:
    """``n_folds``-fold cross-validation by image of every variant, plus each variant's final model."""

    def __init__(self, task_kwargs: dict, architectures: dict, output_dir, train_cfg: TrainConfig,
                 resrep_cfg: ResRepConfig | None = None, *, n_folds: int = 5, workers: int = 2, seed: int = 0,
                 log=print):
        self.task_kwargs = {**task_kwargs, "cv_folds": int(n_folds)}
        self.architectures, self.output_dir = architectures, Path(output_dir)
        self.train_cfg, self.resrep_cfg = train_cfg, resrep_cfg or ResRepConfig()
        self.n_folds, self.workers, self.seed, self.log = int(n_folds), int(workers), int(seed), log
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.variants = build_variants(architectures)
        # the folds trained and scored: all of them, or the first in a dry run (the assignment keeps n_folds)
        self.folds = list(range(dryrun.first(self.n_folds)))
        # every fold's task now: a bad dataset (too few images, one class in a fold) fails here, by name
        self.tasks = {fold: self.task(fold) for fold in [*range(self.n_folds), FINAL]}
        for task in self.tasks.values():
            check_images(task)

    @functools.cached_property
    def oof_test(self) -> PatchSet:
        """The folds' test images pooled in fold order: the order of the out-of-fold predictions."""
        return pooled_test([self.tasks[k].test for k in self.folds])

    def scored_task(self) -> TilTask:
        """The final fold's training and validation images, the folds' test images pooled: what the rows score."""
        test = self.oof_test
        final = self.tasks[FINAL]
        return replace(final, test=test, description={**final.description, "evaluation": self.evaluation(test)})

    def fold_sizes(self) -> list[dict]:
        """Per fold and split: windows, positives, images."""
        return [{"fold": fold, "split": split, **size} for fold, task in self.tasks.items()
                for split, size in task.sizes().items() if not (fold == FINAL and split == "test")]

    def task(self, fold) -> TilTask:
        return _fold_task(json.dumps(self.task_kwargs, sort_keys=True), fold)

    def jobs(self) -> list[Job]:
        """Folds x variant groups, the final models first (the largest trainings: the workers balance)."""
        groups: dict[str, list[str]] = {}
        for v in self.variants:
            joins_original = v.method == "resrep" and self.resrep_cfg.init == "original"
            groups.setdefault(f"{v.model}__original" if joins_original else v.id, []).append(v.id)
        return [Job(fold, tuple(ids)) for fold in [FINAL, *self.folds] for ids in groups.values()]

    def run(self, progress: bool = True) -> dict[str, VariantResult]:
        import torch

        from histolean.util import cluster

        settings = {"task_json": json.dumps(self.task_kwargs, sort_keys=True), "architectures": self.architectures,
                    "output_dir": str(self.output_dir), "train": asdict(self.train_cfg),
                    "resrep": asdict(self.resrep_cfg), "seed": self.seed,
                    "threads": 1 if self.workers > 1 else torch.get_num_threads(),
                    # parallel workers share the CPU; one worker trains where this process would (a GPU if any)
                    "device": "cpu" if self.workers > 1 else None}
        jobs = self.jobs()
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(jobs), desc="trainings (fold x variant)", unit="job")
        done: dict[Job, dict] = {}

        def finished(job, result):   # both mappers raise a job's exception rather than pass it here
            done[job] = result
            if bar is not None:
                bar.update(1)

        fn = functools.partial(_train_job, settings=settings)
        scheduler = os.environ.get(cluster.SCHEDULER_ENV) or None
        if scheduler is None and self.workers > 1:   # plain processes: lighter than Dask workers (see map_processes)
            cluster.map_processes(fn, jobs, self.workers, on_done=finished)
        else:
            cluster.map_variants(fn, jobs, scheduler=scheduler, on_done=finished)
        if bar is not None:
            bar.close()
        per_fold: dict = {}
        for job, results in done.items():
            per_fold.setdefault(job.fold, {}).update(results)
        return self.pool(per_fold)

    def pool(self, per_fold: dict) -> dict[str, VariantResult]:
        """Each variant's runs with its out-of-fold predictions in fold order (:meth:`scored_task`'s test set)."""
        folds = self.folds
        missing = [f"{fold}: {vid}" for fold in [*folds, FINAL] for v in self.variants
                   if (vid := v.id) not in per_fold.get(fold, {})]
        if missing:
            raise RuntimeError(f"cross-validation: trainings did not finish ({', '.join(missing)})")
        test = self.oof_test
        pooled = {}
        for v in self.variants:
            final = per_fold[FINAL][v.id]
            runs = []
            for r in range(len(final.runs)):
                fold_runs = [per_fold[k][v.id].runs[r] for k in folds]
                probs = np.concatenate([fr["test_probs"] for fr in fold_runs])
                # each fold's decisions at its own threshold (from its validation images): the one-class flag
                decisions = np.concatenate([np.asarray(fr["test_probs"]) >= fr["decision_threshold"]
                                            for fr in fold_runs])
                runs.append({"run": r, "seed": fold_runs[0]["seed"], "test_probs": probs.tolist(),
                             "test_decisions": decisions.astype(int).tolist(),
                             "val_auc": float(np.mean([fr["val_auc"] for fr in fold_runs])),
                             "fold_thresholds": [float(fr["decision_threshold"]) for fr in fold_runs],
                             "decision_threshold": decision_threshold(test.labels, probs),
                             "train_time_s": float(sum(fr["train_time_s"] for fr in fold_runs)),
                             "final_train_time_s": float(final.runs[r]["train_time_s"]),
                             "epochs_run": fold_runs[0].get("epochs_run"),
                             "precision": fold_runs[0].get("precision", "fp32"),
                             "resumed": all(fr["resumed"] for fr in fold_runs) and final.runs[r]["resumed"]})
            pooled[v.id] = replace(final, runs=runs)
        return pooled

    def stamp_checkpoints(self, pooled: dict[str, VariantResult], test: PatchSet, n_boot: int = 1000) -> None:
        """Write into each final model file its variant's out-of-fold threshold and AUC (image-level interval),
        what the slide maps check before they paint (``auc`` too: it ranks the models they pick from)."""
        from histolean.core import checkpoints
        from histolean.core.metrics import auc_with_ci

        for res in pooled.values():
            if not res.checkpoint or not Path(res.checkpoint).exists():
                continue   # ResRep variants are scored and timed, not saved for the maps
            net, info = checkpoints.load_model(res.checkpoint)
            run = res.runs[int(info.get("run", 0))]
            held_out = auc_with_ci(test.labels, run["test_probs"], n_boot=n_boot, seed=self.seed, groups=test.groups)
            info.update({"decision_threshold": float(run["decision_threshold"]), "auc": float(held_out["auc"]),
                         "oof_auc": float(held_out["auc"]),
                         "oof_auc_ci": [float(held_out["auc_ci_lo"]), float(held_out["auc_ci_hi"])],
                         "oof_source": self.evaluation(test)})
            spec = info.pop("spec")
            info.pop("input_size", None)
            checkpoints.save_model(res.checkpoint, net, spec, **info)

    def evaluation(self, test: PatchSet) -> str:
        n_images = len(np.unique(test.groups))
        final = self.tasks[FINAL]
        tested = ("every image tested once" if len(self.folds) == self.n_folds else
                  f"dry run: fold(s) {self.folds} only")
        return (f"{self.n_folds}-fold cross-validation by image ({n_images} images, {len(test)} windows, {tested}, "
                f"out-of-fold predictions pooled); the slide maps' model per variant trained on "
                f"{len(np.unique(final.train.groups))} images, {len(np.unique(final.valid.groups))} choosing its "
                "epoch, with its threshold from the out-of-fold predictions")


def pooled_test(parts: list[PatchSet]) -> PatchSet:
    """The folds' test sets in fold order: every image once."""
    first = parts[0]
    return PatchSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                    np.concatenate([p.groups for p in parts]), [x for p in parts for x in p.paths],
                    first.dataset, first.data_kind, "test", ["out-of-fold: every image of the folds once"])


def pooled_baselines(cv: CrossValidation, seed: int = 0) -> dict[str, dict]:
    """The colour baselines cross-validated on the same folds, their out-of-fold predictions pooled."""
    from .baselines import colour_histogram_baselines

    per_fold = [colour_histogram_baselines(cv.tasks[k], seed=seed) for k in cv.folds]
    return {name: {"test_probs": np.concatenate([f[name]["test_probs"] for f in per_fold]),
                   "train_time_s": float(sum(f[name]["train_time_s"] for f in per_fold))}
            for name in per_fold[0]}
