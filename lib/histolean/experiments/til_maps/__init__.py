"""Whole-slide TIL maps (notebook ``08_til_maps`` and the ``histolean tilmap`` command): a trained patch
classifier run over every tissue patch of a slide.

::

    from histolean.experiments import til_maps

    model = til_maps.load_til_model("outputs/default/models/til_nar_resrep/nar-phi2.pt")
    summary = til_maps.map_slide("slide.svs", model, "maps/")                 # one slide, this process
    results = til_maps.map_slides(["slides/"], "model.pt", "maps/")           # many, on a Dask cluster
    patches = til_maps.read_patches("maps/slide")                             # x, y, probability, ...

One concern per module:

* :mod:`.model`: the checkpoint (``TilModel``, ``load_til_model``), patch normalisation, logits -> P(TIL);
* :mod:`.predict`: a checkpoint on a ``core.backends`` backend (``Predictor``, ``BACKENDS``,
  ``DEFAULT_BACKEND`` = ``auto``) and the measured choice of one (``choose``, ``predictor_for``);
* :mod:`.slides`: finding and opening slides, subsampling the grid, the settings that key a finished slide;
* :mod:`.checks`: settings and output folder before any work, the model before it paints, the positive rate after;
* :mod:`.outputs`: PNG map, Parquet table, QuPath GeoJSON (patches and merged regions), ``complete.json``;
* :mod:`.regions`: grid cells merged into outlined regions (no shapely);
* :mod:`.mapping`: one slide (``map_slide``, resumable) and many on Dask (``map_slides``);
* :mod:`.gallery`: the highest- and lowest-scoring patches of a map, side by side;
* :mod:`.stain`: Macenko stain normalisation, fitted per slide (``map_slide(..., stain="macenko")``);
* :mod:`.speed`: backends timed side by side (``compare_backends``);
* :mod:`.classifiers`: the TIL benchmark's checkpoints, or short-trained stand-ins;
* :mod:`.analysis`: agreement of two maps, Dask against one process, time for many slides;
* :mod:`.findings`: ``paper_claims(rows)``, the notebook's closing claims.
"""

from histolean.experiments.til_maps.analysis import (extrapolate, map_agreement, patches_in_tissue,
                                                     same_predictions, slides_at_once)
from histolean.experiments.til_maps.checks import (DEFAULT_MIN_AUC, PAINTED, REFUSED, UNCHECKED,
                                                   ImplausibleMapWarning, check_settings, model_check, plausibility)
from histolean.experiments.til_maps.classifiers import find_checkpoints, models_for_maps, train_stand_ins
from histolean.experiments.til_maps.findings import paper_claims
from histolean.experiments.til_maps.gallery import extremes, extremes_figure
from histolean.experiments.til_maps.mapping import check_before_work, checked_model, map_slide, map_slides
from histolean.experiments.til_maps.model import TilModel, load_til_model, positive_probability, to_input
from histolean.experiments.til_maps.outputs import (COMPLETE, OUTPUT_FILES, QUPATH_FORMAT, geojson, map_image,
                                                    read_complete, read_patches, regions_geojson)
from histolean.experiments.til_maps.regions import merge_cells
from histolean.experiments.til_maps.predict import (BACKENDS, DEFAULT_BACKEND, Predictor, choose, onnx_file,
                                                    predictor_for, torch_threads)
from histolean.experiments.til_maps.slides import SLIDE_SUFFIXES, find_slides, open_slide, slide_settings, subsample
from histolean.experiments.til_maps.speed import compare_backends

__all__ = [
    "DEFAULT_MIN_AUC", "PAINTED", "QUPATH_FORMAT", "REFUSED", "UNCHECKED", "ImplausibleMapWarning", "check_before_work",
    "check_settings", "checked_model", "extremes", "extremes_figure", "merge_cells", "model_check", "plausibility",
    "regions_geojson",
    "BACKENDS", "COMPLETE", "DEFAULT_BACKEND", "OUTPUT_FILES", "SLIDE_SUFFIXES", "Predictor", "TilModel",
    "choose", "compare_backends", "extrapolate", "find_checkpoints", "find_slides", "geojson", "load_til_model",
    "map_agreement", "map_image", "map_slide", "map_slides", "models_for_maps", "onnx_file", "open_slide",
    "paper_claims", "patches_in_tissue", "positive_probability", "predictor_for", "read_complete", "read_patches",
    "same_predictions", "slide_settings", "slides_at_once", "subsample", "to_input", "torch_threads",
    "train_stand_ins",
]
