"""The experiment behind notebook 06: nuclei instance segmentation (two U-Nets with a ResNet-34 encoder,
merged by a watershed) under iterative magnitude pruning, layer-wise vs network-wide (Mahbod et al. 2022),
scored on MoNuSeg and on TNBC as the distribution shift.

* :mod:`.run` -- the run's settings (:class:`Config`), the images (:func:`load_data`), the resume key
  (:func:`resume_key`), and :class:`PruningRun`: training, pruning rounds, per-image scores, rows, the
  Table 1 speed-ups and the measured CPU cost;
* :mod:`.paired` -- paired per-image differences (pruned minus its dense control) with bootstrap intervals;
* :mod:`.paper` -- :func:`paper_claims`, the paper's claims against the recorded rows.

The method itself (U-Net, targets, watershed, scores) is ``histolean.methods.segmentation``; the pruning
schedule is ``histolean.methods.pruning``.
"""

from .paper import paired_table, paper_claims
from .run import (BENCHMARK, CONTROL, COST_METHOD, DATASETS, LAYERWISE_KEEP_DENSE, METHOD, TABLE1_METHOD, Config,
                  Images, PruningRun, center_crop, check_scored, encoder_init, load_data, resume_key, summarise)

__all__ = ["BENCHMARK", "CONTROL", "COST_METHOD", "DATASETS", "LAYERWISE_KEEP_DENSE", "METHOD", "TABLE1_METHOD",
           "Config", "Images", "PruningRun", "center_crop", "check_scored", "encoder_init", "load_data",
           "paired_table", "paper_claims", "resume_key", "summarise"]
