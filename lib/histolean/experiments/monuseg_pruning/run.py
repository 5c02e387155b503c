"""The run behind notebook 06: train the two U-Net branches, prune them round by round, score every
round, and cost the pruned networks (theoretical speed-up, sparse storage, measured CPU time).

::

    config = Config.from_parameters(globals())      # the notebook's parameters cell
    sets = load_data(config)
    run = PruningRun(config, sets, rec)
    run.train_base()                                 # CR 1 rows
    run.prune()                                      # the dense control, then one row per (dataset, scheme, CR)
    table1 = run.speedup_table()                     # Table 1: ours (trained weights) and the formula check
    cost = run.cost_on_cpu()                         # measured speed and storage rows

Every pruning round ``k`` (CR ``2**k``) has a **dense control**: the unpruned branches retrained the same
``k * retrain_epochs`` epochs with the same seeds (scheme ``"dense control"``, recorded at the CR it
matches), so a pruning effect is "pruned minus dense with the same training". Layer-wise pruning keeps
the 3x3 output head dense (:data:`LAYERWISE_KEEP_DENSE`): the paper does not say what it does with tiny
layers, and a narrowed net's head (36 weights at x0.25) would otherwise be cut to one weight by CR 32.

The trained branches and every pruning round are ``histolean.util.cache`` records under
``<output_dir>/checkpoints/monuseg_pruning/``, keyed by :func:`resume_key` (the settings, the
images and the code that shape them): a killed run continues where it stopped, a changed setting
recomputes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from histolean import data
from histolean.core import arch, flops, measure, metrics, models, train
from histolean.data import monuseg as monuseg_format, synthetic, tnbc as tnbc_format
from histolean.data.common import dataset_dir
from histolean.methods import pruning, segmentation
from histolean.study import published
from histolean.util import atomic, cache, dryrun

from . import paired

BENCHMARK = "monuseg_pruning"
METHOD = "iterative magnitude pruning"                      # rows of the scored branches
TABLE1_METHOD = "iterative magnitude pruning (no retraining)"  # full-width theoretical speed-ups
COST_METHOD = "iterative magnitude pruning: cost on CPU"    # measured time and storage
DATASETS = ("monuseg", "tnbc")
UNPRUNED = "unpruned"
DENSE = "CR 1 (dense)"
TABLE1_CRS = tuple(2 ** k for k in range(1, 10))
CONTROL = pruning.CONTROL                                   # scheme of the dense control rows
LAYERWISE_KEEP_DENSE = ("head",)                            # our choice: the paper says nothing of tiny layers
FORMULA_CHECK = "He init, untrained, pruned in one shot (a check of the formula, not a result)"
TRAINED_WEIGHTS = "ranked on this run's trained (CR 2) and retrained (CR >= 4) weights"
DENSE_KERNELS = "dense kernels run the zero-filled weights at dense speed: measured speed-up ~1 whatever the CR"


def keep_dense(scheme: str) -> tuple[str, ...]:
    """The layers a scheme leaves whole: the output head for layer-wise pruning, none otherwise."""
    return LAYERWISE_KEEP_DENSE if scheme == "layer-wise" else ()


def encoder_init(encoder_weights) -> str:
    """What a row says about the encoder's start: ``imagenet:<file name>`` or ``random``."""
    return f"imagenet:{Path(encoder_weights).name}" if encoder_weights else "random"


@dataclass(frozen=True)
class Config:
    """The notebook's parameters (its parameters cell holds the smoke values, params/<profile>.yaml the
    others); field comments are in the notebook."""

    output_dir: str
    data_root: str
    seed: int
    train_data: str
    shift_data: str
    mpp: float | None
    width: float
    encoder_weights: str
    n_train: int
    crop: int
    crops_per_image: int
    batch_size: int
    lr: float
    epochs: int
    retrain_epochs: int
    max_cr: int
    schemes: tuple
    n_test: int
    n_tnbc: int
    eval_crop: int
    tile: int
    overlap: int
    speed_input: int
    speed_repeats: int
    resume: bool
    workers: int

    @classmethod
    def from_parameters(cls, parameters: Mapping) -> "Config":
        """The fields picked from a mapping that holds them (a notebook's ``globals()``)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in parameters]
        if missing:
            raise ValueError(f"{BENCHMARK}: parameters {missing} are not set")
        values = {n: parameters[n] for n in names}
        if dryrun.active():   # one pruning round per scheme, two images of each set, one timing round
            values |= {"n_train": dryrun.first(values["n_train"], 2), "n_test": dryrun.first(values["n_test"], 2),
                       "n_tnbc": dryrun.first(values["n_tnbc"], 2), "max_cr": dryrun.first(values["max_cr"], 2),
                       "speed_repeats": dryrun.first(values["speed_repeats"], 1)}
        return cls(**values | {"schemes": tuple(values["schemes"])})

    @property
    def scale(self) -> dict:
        """What every row records of the run's scale."""
        return {"width": self.width, "n_train": self.n_train, "crop": self.crop,
                "crops_per_image": self.crops_per_image, "epochs": self.epochs,
                "retrain_epochs": self.retrain_epochs, "n_test": self.n_test, "n_tnbc": self.n_tnbc,
                "eval_crop": self.eval_crop, "encoder": encoder_init(self.encoder_weights)}

    @property
    def state_dir(self) -> Path:
        return Path(self.output_dir) / "checkpoints" / BENCHMARK


# --------------------------------------------------------------------------- data

def center_crop(sample, size: int):
    """The sample cut to its central ``size`` x ``size`` window (unchanged when it is smaller or size is 0)."""
    if not size:
        return sample
    h, w = sample.instances.shape
    y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
    window = (slice(y, y + size), slice(x, x + size))
    return replace(sample, image=sample.image[window], instances=sample.instances[window])


@dataclass
class Images:
    """The training images and the scored sets (centre crops), each with its data kind."""

    train: list
    scored: dict      # slot ("monuseg": the training set's test images, "tnbc": the shift set) -> samples
    kinds: dict       # "train" and each slot -> "real" | "synthetic" | "user"
    names: dict = field(default_factory=dict)   # slot -> the dataset in it when not the slot's own (a folder)

    def name(self, slot: str) -> str:
        """What a row records as its ``dataset``: the slot's own name or the user's ``folder:PATH``."""
        return self.names.get(slot, slot)

    @property
    def examples(self) -> tuple[str, ...]:
        """The first image of each scored set: shown in Fig. 4."""
        return tuple(samples[0].name for samples in self.scored.values())

    def data_kind(self, dataset: str) -> str:
        """A row's data kind: synthetic whenever the training images were."""
        return "synthetic" if self.kinds["train"] == "synthetic" else self.kinds[dataset]

    def describe(self) -> str:
        test, tnbc = self.scored["monuseg"], self.scored["tnbc"]
        train_name = "MoNuSeg" if self.name("monuseg") == "monuseg" else self.name("monuseg")
        shift_name = "TNBC" if self.name("tnbc") == "tnbc" else self.name("tnbc")
        return (f"train: {len(self.train)} {train_name} images ({self.kinds['train']}), "
                f"{sum(s.n_instances for s in self.train)} nuclei; test: {len(test)} {train_name} "
                f"({self.kinds['monuseg']}), {len(tnbc)} {shift_name} ({self.kinds['tnbc']}) crops of "
                f"{test[0].image.shape[:2]} px")


def _load_or_generate(name: str, loader, config: Config, n: int, seed_offset: int):
    """Real images when the dataset folder exists (a broken folder is an error naming the file), generated
    tiles when it does not."""
    try:
        dataset_dir(name, config.data_root or None)
    except data.DataError as err:
        print(f"{err}\n-> using generated tiles (data_kind=synthetic)")
        size = max(config.eval_crop, 2 * config.crop, 256)
        return data.synthetic_tiles(n, size=size, seed=config.seed + seed_offset), "synthetic"
    return loader(root=config.data_root or None, limit=n, seed=config.seed), "real"


def check_scored(samples: list, dataset: str) -> list:
    """A scored set must hold images, each with an instance map whose labels are nuclei: one label over
    several separate regions is a binary mask passed as instances (AJI and PQ would be meaningless)."""
    from scipy import ndimage

    if not samples:
        raise data.DataError(f"{dataset}: the test split holds no images (n_test / n_tnbc = 0 or an empty folder)")
    for s in samples:
        labels = np.unique(s.instances[s.instances > 0])
        if labels.size == 1 and ndimage.label(s.instances > 0)[1] > 1:
            raise data.DataError(f"{s.path or s.name}: instance mask has one label ({labels[0]}) for all "
                                 f"{ndimage.label(s.instances > 0)[1]} separate nuclei; label each nucleus "
                                 "(e.g. histolean.data.instances_from_mask on a binary mask)")
    return samples


def _user_train_test(config: Config) -> tuple[list, list]:
    """A user's training folder (``train_data = "folder:PATH"``): its ``train/`` and ``test/`` split folders,
    or, without split folders, its images split by a seeded draw (``n_test`` scored, the rest trained on)."""
    report, listing = data.check_nuclei(config.train_data, decode=False, mpp=config.mpp)
    report.raise_or_warn()
    splits = {p.split for p in listing.pairs}
    load = partial(data.load_nuclei_folder, config.train_data, seed=config.seed, mpp=config.mpp)
    if {"train", "test"} <= splits:
        return load("train", limit=config.n_train), load("test", limit=config.n_test)
    if splits != {"all"}:
        raise data.DataError(f"{listing.folder}: split folders {sorted(splits)}; the nuclei notebook needs train/ "
                             "and test/, or no split folders (then n_test images are drawn for scoring)")
    samples = load("all")
    if len(samples) <= config.n_test:
        raise data.DataError(f"{listing.folder}: {len(samples)} images, but n_test = {config.n_test} are scored and "
                             "at least one must remain to train on: add images or lower n_test")
    order = np.random.default_rng(config.seed).permutation(len(samples))
    test = [samples[i] for i in sorted(order[:config.n_test])]
    return [samples[i] for i in sorted(order[config.n_test:])][:config.n_train], test


def load_data(config: Config) -> Images:
    """The training images and the two scored sets, cut to their centre ``eval_crop`` px: MoNuSeg train and
    test, TNBC as the shift set; either slot takes a user's ``folder:PATH`` (``train_data``, ``shift_data``;
    data kind ``user``, checked first by :func:`histolean.data.check_nuclei`). Without a data folder the loader
    says which folder it looked for and generated tiles stand in."""
    if config.train_data.startswith(data.FOLDER_PREFIX):
        (train_set, test_set), kind_train, kind_test = _user_train_test(config), "user", "user"
    elif config.train_data == "monuseg":
        train_set, kind_train = _load_or_generate("monuseg", lambda **kw: data.load_monuseg("train", **kw), config,
                                                  config.n_train, 0)
        test_set, kind_test = _load_or_generate("monuseg", lambda **kw: data.load_monuseg("test", **kw), config,
                                                config.n_test, 1)
    else:
        raise ValueError(f"{BENCHMARK}: train_data {config.train_data!r}: use 'monuseg' or 'folder:PATH'")
    if config.shift_data.startswith(data.FOLDER_PREFIX):
        tnbc_set, kind_tnbc = data.load_nuclei_folder(config.shift_data, limit=config.n_tnbc, seed=config.seed,
                                                      mpp=config.mpp), "user"
    elif config.shift_data == "tnbc":
        tnbc_set, kind_tnbc = _load_or_generate("tnbc", data.load_tnbc, config, config.n_tnbc, 2)
    else:
        raise ValueError(f"{BENCHMARK}: shift_data {config.shift_data!r}: use 'tnbc' or 'folder:PATH'")
    scored = {"monuseg": check_scored([center_crop(s, config.eval_crop) for s in test_set], "monuseg test"),
              "tnbc": check_scored([center_crop(s, config.eval_crop) for s in tnbc_set], "tnbc")}
    names = {slot: name for slot, name in (("monuseg", config.train_data), ("tnbc", config.shift_data))
             if name != slot}
    return Images(train_set, scored, {"train": kind_train, "monuseg": kind_test, "tnbc": kind_tnbc}, names)


def resume_key(config: Config, images: Images) -> str:
    """The cache key of the trained branches and their pruning rounds: every setting that shapes them, the
    images' names, and the code of the modules that train, prune and score them."""
    settings = config.scale | {"seed": config.seed, "lr": config.lr, "batch_size": config.batch_size,
                               "tile": config.tile, "overlap": config.overlap, "kinds": images.kinds,
                               "images": {"train": [s.name for s in images.train]}
                               | {d: [s.name for s in samples] for d, samples in images.scored.items()}}
    code = [sys.modules[__name__], segmentation, pruning, train, models, arch, flops, metrics,
            monuseg_format, tnbc_format, synthetic]
    return cache.fingerprint(settings, code=code)


def summarise(rows: list[dict], keys=("dice", "mse", "aji", "pq")) -> dict:
    """Aggregate per-image scores: mean, median, quartiles and standard deviation of each key."""
    out = {}
    for key in keys:
        v = np.asarray([r[key] for r in rows], dtype=float)
        if not v.size:
            raise ValueError(f"summarise: no rows to aggregate for {key!r}")
        q25, med, q75 = np.percentile(v, [25, 50, 75])
        out |= {key: float(v.mean()), f"{key}_median": float(med), f"{key}_q25": float(q25),
                f"{key}_q75": float(q75), f"{key}_std": float(v.std())}
    return out


# --------------------------------------------------------------------------- the run

class PruningRun:
    """Algorithm 1 on both branches for every scheme, recording rows in ``rec`` as it goes; keeps the
    per-image scores (``per_image``), the example instance maps (``gallery``), the semantic branch at every
    CR as a dense network (``speed_models``) and its storage sizes (``storage``) for the cost section."""

    def __init__(self, config: Config, images: Images, rec, device=None):
        self.config, self.images, self.rec = config, images, rec
        self.device = device if device is not None else train.default_device()
        self.key = resume_key(config, images)
        if not config.resume:
            for old in config.state_dir.glob("*.pt"):
                cache.forget(old)
        self.per_image: list[dict] = []
        self.gallery: dict[tuple[str, str, int], np.ndarray] = {}
        self.speed_models: dict[str, torch.nn.Module] = {}
        self.storage: list[dict] = []
        self.runs: dict[str, list[dict]] = {}
        self.base_nets: dict[str, torch.nn.Module] = {}
        self.base_result: dict = {}
        self.control: list[dict] = []
        self.params = 0

    @property
    def model_name(self) -> str:
        return f"unet_resnet34 x{self.config.width:g} (two branches)"

    def make_branches(self) -> dict[str, torch.nn.Module]:
        c = self.config
        return {b: segmentation.unet_resnet34(c.width, seed=c.seed + i, encoder_weights=c.encoder_weights or None)
                .to(self.device) for i, b in enumerate(segmentation.BRANCHES)}

    def evaluate(self, nets, cr: int = 1) -> dict:
        """Both branches and the merge on every scored image; the example images' instances kept for Fig. 4."""
        out = {"examples": {}}
        for name, samples in self.images.scored.items():
            rows, kept = segmentation.evaluate(nets, samples, tile=self.config.tile, overlap=self.config.overlap,
                                               keep=self.images.examples, device=self.device)
            out[name] = rows
            out["examples"].update(kept)
        return out

    def _train(self, branch: str, net, epochs: int, seed: int):
        c = self.config
        return segmentation.train_branch(net, self.images.train, branch, epochs=epochs, crop=c.crop,
                                         crops_per_image=c.crops_per_image, batch_size=c.batch_size, lr=c.lr,
                                         seed=seed, device=self.device)

    def train_base(self) -> dict:
        """Algorithm 1, line 2: both branches trained (or loaded for this key), scored, recorded as CR 1."""
        nets, path = self.make_branches(), self.config.state_dir / "base.pt"
        result = pruning.load_round(path, nets, self.key)
        if result is None:
            times = {}
            if self.config.workers > 1:      # the two branches are independent trainings: one process each
                done = self._in_workers([(_train_job, self.config, self.images, b) for b in nets])
                for branch, (state, fit) in zip(nets, done):
                    nets[branch].load_state_dict(state)
                    times[branch] = fit
            else:
                for branch, net in nets.items():
                    t0 = time.perf_counter()
                    fit = self._train(branch, net, self.config.epochs, self.config.seed)
                    times[branch] = {"train_time_s": time.perf_counter() - t0,
                                     "final_loss": fit.history[-1]["train_loss"]}
            result = {"train": times, "evaluation": self.evaluate(nets)}
            pruning.save_round(path, nets, result, self.key)
        self.base_nets, self.base_result = nets, result
        self.params = flops.count_params(nets["semantic"])
        self._add_rows(UNPRUNED, 1, result, {b: 0.0 for b in segmentation.BRANCHES},
                       {b: 1.0 for b in segmentation.BRANCHES}, training=result["train"],
                       layerwise_max_cr=pruning.max_layerwise_cr(nets["semantic"]),
                       layerwise_max_cr_head_dense=pruning.max_layerwise_cr(nets["semantic"], LAYERWISE_KEEP_DENSE))
        self.speed_models[DENSE] = pruning.dense_copy(nets["semantic"]).cpu().eval()
        self.storage.append({"scheme": UNPRUNED, "cr": 1, "dense_bytes": pruning.dense_bytes(nets["semantic"]),
                             "sparse_bytes": None})
        return result

    def _add_rows(self, scheme: str, cr: int, result: dict, sparsity: dict, speedup: dict, **extra) -> None:
        """One row per scored dataset, with its per-image scores (for the paired intervals) and the epochs
        its weights were trained (base + every retraining round up to this CR)."""
        c = self.config
        epochs = c.epochs + pruning.rounds_for(cr) * c.retrain_epochs
        weights = {UNPRUNED: "dense", CONTROL: "dense (retrained, not pruned)"}.get(scheme, TRAINED_WEIGHTS)
        for dataset in self.images.scored:
            scores = result["evaluation"][dataset]
            self.per_image.extend({**r, "scheme": scheme, "cr": cr} for r in scores)
            self.rec.add(dataset=self.images.name(dataset), slot=dataset, data_kind=self.images.data_kind(dataset),
                         model=self.model_name,
                         method=METHOD, setting={"scheme": scheme, "cr": cr}, metrics=summarise(scores),
                         n_images=len(scores), scale=c.scale, params=self.params, sparsity=sparsity,
                         theoretical_speedup=speedup, speedup_weights=weights, epochs_trained=epochs,
                         per_image=paired.per_image(scores), input_size=c.eval_crop or None, **extra)
        for name, inst in result["evaluation"]["examples"].items():
            self.gallery[(name, scheme, cr)] = inst

    def target_cr(self, scheme: str) -> int:
        """``max_cr``, or for layer-wise pruning the largest CR that leaves every pruned layer a weight (said so)."""
        try:
            pruning.check_compression_ratio(self.base_nets["semantic"], scheme, self.config.max_cr, keep_dense(scheme))
            return self.config.max_cr
        except ValueError as err:
            target = pruning.max_layerwise_cr(self.base_nets["semantic"], keep_dense(scheme))
            print(f"{err}\n-> {scheme} stops at CR {target}")
            return target

    def _schedule(self, scheme: str, target: int, record: bool = True) -> list[dict]:
        """Algorithm 1 (or the dense control: the same rounds without pruning) from the trained branches; with
        ``record`` False (a worker process) the rounds are only computed and saved."""
        nets = {b: pruning.clone(n) for b, n in self.base_nets.items()}
        t0 = time.perf_counter()

        def on_round(r):
            self._on_round(scheme, nets, r, t0)

        return pruning.iterative_prune(
            nets, scheme, target, retrain=lambda branch, net, cr: self._train(
                branch, net, self.config.retrain_epochs, self.config.seed + cr),
            evaluate=self.evaluate, state_dir=self.config.state_dir, run_key=self.key,
            on_round=on_round if record else None, keep_dense=keep_dense(scheme))

    def _in_workers(self, jobs: list[tuple]) -> list:
        """``(function, *args)`` jobs in ``workers`` processes of one torch thread each (a fork server: no
        fork of a process running torch threads); their results in order."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=min(self.config.workers, len(jobs)), mp_context=context) as pool:
            futures = [pool.submit(job[0], *job[1:]) for job in jobs]
            return [f.result() for f in futures]

    def prune(self) -> dict[str, list[dict]]:
        """Algorithm 1, lines 3-12, for every scheme: both branches pruned side by side (each ranked on its
        own weights), retrained, scored and recorded after every round; first the dense control, retrained
        round by round with the same epochs and seeds up to the largest CR any scheme reaches."""
        if not self.base_nets:
            raise RuntimeError("PruningRun.prune: call train_base() first")
        targets = {scheme: self.target_cr(scheme) for scheme in self.config.schemes}
        chains = {CONTROL: max(targets.values())} | targets
        if self.config.workers > 1:      # independent chains computed in parallel; recorded below from their saves
            states = {b: n.state_dict() for b, n in self.base_nets.items()}
            self._in_workers([(_schedule_job, self.config, self.images, states, s, t) for s, t in chains.items()])
        self.control = self._schedule(CONTROL, chains[CONTROL])
        for scheme, target in targets.items():
            self.runs[scheme] = self._schedule(scheme, target)
        return self.runs

    def _on_round(self, scheme: str, nets: dict, r: dict, t0: float) -> None:
        sp = {b: r["sparsity"][b]["sparsity"] for b in nets}
        self._add_rows(scheme, r["cr"], r, sp, r["speedup"])
        if scheme == CONTROL:
            print(f"dense control, {self.config.epochs} + {r['round']} x {self.config.retrain_epochs} epochs (as CR "
                  f"{r['cr']})" + (" (resumed)" if r["resumed"] else f", {time.perf_counter() - t0:.0f} s"))
            return
        self.speed_models[f"CR {r['cr']} {scheme}"] = pruning.dense_copy(nets["semantic"]).cpu().eval()
        size = pruning.save_sparse(self.config.state_dir / f"sparse_{scheme}_cr{r['cr']}_semantic.pt", nets["semantic"])
        self.storage.append({"scheme": scheme, "cr": r["cr"], "dense_bytes": pruning.dense_bytes(nets["semantic"]),
                             "sparse_bytes": size})
        semantic = r["sparsity"]["semantic"]
        print(f"{scheme} CR {r['cr']}: kept {semantic['kept']:,} of {semantic['weights']:,} weights, "
              f"speed-up {r['speedup']['semantic']:.2f}"
              + (" (resumed)" if r["resumed"] else f", {time.perf_counter() - t0:.0f} s"))

    @classmethod
    def in_worker(cls, config: Config, images: Images) -> "PruningRun":
        """The run as a worker process sees it: one torch thread, the CPU, no recorder, nothing forgotten."""
        torch.set_num_threads(1)
        return cls(replace(config, resume=True), images, rec=None, device="cpu")

    # ----------------------------------------------------------------------- per image and Fig. 4

    def per_image_frame(self) -> pd.DataFrame:
        """One row per (dataset, scheme, CR, image); written to ``tables/monuseg_pruning_per_image.csv``."""
        images = pd.DataFrame(self.per_image)
        atomic.write_text(Path(self.config.output_dir) / "tables" / f"{BENCHMARK}_per_image.csv",
                          images.to_csv(index=False))
        return images

    def gallery_for(self, name: str) -> dict[str, np.ndarray]:
        """Fig. 4's panels for one example image: the unpruned model, then every CR of the layer-wise scheme
        (the paper's choice) or, without it, of the first scheme run."""
        schemes = self.config.schemes
        scheme = "layer-wise" if "layer-wise" in schemes else schemes[0]
        shown = {"CR 1": self.gallery[(name, UNPRUNED, 1)]}
        for (image, sch, cr), inst in sorted(self.gallery.items(), key=lambda kv: kv[0][2]):
            if image == name and sch == scheme:
                shown[f"CR {cr} {sch}"] = inst
        return shown

    # ----------------------------------------------------------------------- Table 1 and cost

    def speedup_table(self) -> pd.DataFrame:
        """Table 1: the paper's theoretical speed-ups beside our semantic branch's at every round (ranked on
        the trained and retrained weights: the scored rows' ``theoretical_speedup``, which decide the claim)
        and, only as a check of the formula, the full-width network pruned in one shot from its He
        initialisation with the paper's layer-wise schedule (every layer; recorded, kind "speedup_table")."""
        full = segmentation.unet_resnet34(1.0, seed=self.config.seed)
        full_rows = pruning.speedup_table(full, crs=list(TABLE1_CRS))
        for r in full_rows:
            self.rec.add(dataset="none", data_kind="none", model="unet_resnet34 x1 (He init, untrained)",
                         method=TABLE1_METHOD, setting={"scheme": r["scheme"], "cr": r["cr"]},
                         metrics={"theoretical_speedup": r["speedup"]}, params=flops.count_params(full),
                         reachable=r["speedup"] is not None, layerwise_max_cr=pruning.max_layerwise_cr(full),
                         speedup_weights=FORMULA_CHECK, kind="speedup_table")
        paper = pd.DataFrame(published.table("pruning", "table1_speedup")).assign(source="paper (trained, Table 1)")
        ours = pd.DataFrame([{"scheme": s, "cr": r["cr"], "speedup": r["speedup"]["semantic"],
                              "source": f"ours: semantic branch x{self.config.width:g}, trained + retrained"}
                             for s, rs in self.runs.items() for r in rs])
        full_width = pd.DataFrame(full_rows).assign(source="formula check: full width, He init, untrained, one shot")
        return pd.concat([paper, ours, full_width[["scheme", "cr", "speedup", "source"]]])

    def cost_on_cpu(self) -> pd.DataFrame:
        """The semantic branch at every CR as a dense, zero-filled network, timed side by side with the
        unpruned one (``core.measure.compare_speed``), with its dense and sparse (CSR) file sizes; recorded
        (kind "speed") for the pruned ones."""
        c = self.config
        probe = torch.rand(1, 3, c.speed_input, c.speed_input)
        timing = measure.compare_speed({name: (lambda m=m: m(probe)) for name, m in self.speed_models.items()},
                                       reference=DENSE, repeats=c.speed_repeats, warmup=1)
        theory = {f"CR {r['cr']} {s}": r["speedup"]["semantic"] for s, rs in self.runs.items() for r in rs}
        rows = []
        for s in self.storage:
            label = DENSE if s["scheme"] == UNPRUNED else f"CR {s['cr']} {s['scheme']}"
            rows.append({**s, "median_ms": timing[label]["median_s"] * 1e3,
                         "measured_speedup": timing[label]["speedup"], "theoretical_speedup": theory.get(label, 1.0),
                         "theoretical_from": "dense" if s["scheme"] == UNPRUNED else TRAINED_WEIGHTS,
                         "size_ratio": s["sparse_bytes"] / s["dense_bytes"] if s["sparse_bytes"] else float("nan")})
        for row in rows:
            if row["scheme"] == UNPRUNED:
                continue
            self.rec.add(dataset="none", data_kind="none", model=f"unet_resnet34 x{c.width:g} semantic branch",
                         method=COST_METHOD, setting={"scheme": row["scheme"], "cr": row["cr"]},
                         metrics={k: row[k] for k in ("measured_speedup", "theoretical_speedup", "median_ms",
                                                      "sparse_bytes", "dense_bytes", "size_ratio")},
                         input_size=c.speed_input, repeats=c.speed_repeats, scale=c.scale, kind="speed",
                         speedup_weights=TRAINED_WEIGHTS, note=DENSE_KERNELS)
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------- worker processes (workers > 1)

def _train_job(config: Config, images: Images, branch: str) -> tuple[dict, dict]:
    """One branch trained from its seeded start: its weights and its training time and final loss."""
    run = PruningRun.in_worker(config, images)
    net = run.make_branches()[branch]
    t0 = time.perf_counter()
    fit = run._train(branch, net, config.epochs, config.seed)
    return net.state_dict(), {"train_time_s": time.perf_counter() - t0, "final_loss": fit.history[-1]["train_loss"]}


def _schedule_job(config: Config, images: Images, states: dict, scheme: str, target: int) -> str:
    """One chain of rounds (a scheme, or the dense control) from the trained branches, saved for the parent."""
    run = PruningRun.in_worker(config, images)
    run.base_nets = run.make_branches()
    for branch, net in run.base_nets.items():
        net.load_state_dict(states[branch])
    run._schedule(scheme, target, record=False)
    return scheme
