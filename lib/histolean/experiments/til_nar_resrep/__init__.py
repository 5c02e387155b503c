"""The TIL experiment of the NAR paper (Meirelles et al. 2022, Section 3, Tables 1-4), behind notebook
``05_til_nar_resrep``: NAR vs input reduction (IR) vs ResRep, accuracy against cost.

* :mod:`.variants`: :func:`build_variants`, the networks to train, from a plain config
  ``{"resnet50v2": {"base_input": 48, "ir": [1, 2], "nar": [1, 2, 3], "resrep": [0.9]}}``
  (architectures by their name in the model registry; each one's original always included).
* :mod:`.runner`: :class:`TilRunner` trains every variant ``runs`` times, resumably (records and
  model files under ``<out>/models/til_nar_resrep/``).
* :mod:`.crossval`: :class:`CrossValidation`, every variant trained once per fold of a cross-validation
  by image (in parallel workers) and once more for the slide maps, the out-of-fold predictions pooled.
* :mod:`.summary`: :func:`summarise` turns the results into rows (AUC with a CI over source images, the
  paired differences with the original, the colour baseline and the other methods at matched cost,
  achieved and nominal ``flop_reduction``, measured ``speedup``, the one-class flag); :func:`pareto_front`.
* :mod:`.speed`: :func:`deployed_speed`, every variant timed on the deployment backend (chosen by
  measurement, float32-checked) beside eager float32, in one interleaved run.
* :mod:`.baselines`: colour-histogram baselines and the NAR coefficient grid search.
* :mod:`.claims`: :func:`paper_claims`, the paper's claims decided on the rows.

The statistics (:func:`histolean.core.metrics.auc_with_ci`, ``paired_auc_difference``), the speed timing
(:func:`histolean.core.backends.time_on_backends`, :func:`histolean.core.measure.throughput`) and BatchNorm
recalibration (:func:`histolean.core.train.recalibrate_batchnorm`) are the library's, in core.
"""

from .baselines import colour_features, colour_histogram_baselines, nar_grid_search
from .claims import paper_claims
from .crossval import CrossValidation, pooled_baselines
from .runner import CLASSES, MEAN, STD, ResRepConfig, TilRunner, TrainConfig, VariantResult
from .speed import deployed_speed
from .summary import (baseline_rows, check_images, image_counts, nominal_flop_reduction, paper_scale_gflops,
                      pareto_front, summarise)
from .variants import BENCHMARK, METHODS, PAPER_BASE_INPUT, Variant, base_spec, build_variants, kept_by_stage, stage_of

__all__ = ["BENCHMARK", "CLASSES", "CrossValidation", "MEAN", "METHODS", "PAPER_BASE_INPUT", "STD", "ResRepConfig",
           "TilRunner",
           "TrainConfig", "Variant", "VariantResult", "base_spec", "baseline_rows", "build_variants", "check_images",
           "colour_features", "colour_histogram_baselines", "deployed_speed", "image_counts", "kept_by_stage",
           "nar_grid_search", "nominal_flop_reduction", "paper_claims", "pooled_baselines",
           "paper_scale_gflops", "pareto_front", "stage_of", "summarise"]
