"""The experiment behind notebook 06: nuclei instance segmentation (two U-Nets with a ResNet-34 encoder,
merged by a watershed) under iterative magnitude pruning, layer-wise vs network-wide (Mahbod et al. 2022),
scored on MoNuSeg and on TNBC as the distribution shift.

* :mod:`.run` -- the run's settings (:class:`Config`), the images (:func:`load_data`), the resume key
  (:func:`resume_key`), and :class:`PruningRun`: training, pruning rounds, per-image scores, rows, the
  Table 1 speed-ups and the measured CPU cost;
* :mod:`.paper` -- :func:`paper_claims`, the paper's claims against the recorded rows.

The method itself (U-Net, targets, watershed, scores) is ``histolean.methods.segmentation``; the pruning
schedule is ``histolean.methods.pruning``.
"""

from .paper import paper_claims
from .run import (BENCHMARK, COST_METHOD, DATASETS, METHOD, TABLE1_METHOD, Config, Images, PruningRun,
                  center_crop, encoder_init, load_data, resume_key, summarise)

__all__ = ["BENCHMARK", "COST_METHOD", "DATASETS", "METHOD", "TABLE1_METHOD", "Config", "Images", "PruningRun",
           "center_crop", "encoder_init", "load_data", "paper_claims", "resume_key", "summarise"]
