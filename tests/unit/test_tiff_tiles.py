"""Level-0 tiles decoded without OpenSlide's compositing: OpenSlide's pixels, or OpenSlide itself."""

from __future__ import annotations

import shutil
import sys
import threading

import numpy as np
import pytest

from histolean import wsi
from histolean.data import tiff_tiles
from histolean.util.errors import DataError

SLIDES = [("CMU-1-Small-Region.svs", None), ("tcga-cr-7395-01a-01-ts1.svs", 1.0)]  # JPEG, JPEG 2000 tiles


@pytest.mark.parametrize("name, mpp", SLIDES)
def test_regions_are_openslides_pixels_inside_across_tiles_and_over_the_edges(real_data, name, mpp):
    rng = np.random.default_rng(0)
    with wsi.open_slide(real_data / "wsi" / name, mpp=mpp) as slide:
        w, h = slide.dimensions
        regions = [(int(rng.integers(-50, w)), int(rng.integers(-50, h)), int(rng.integers(1, 600)),
                    int(rng.integers(1, 300))) for _ in range(12)]
        regions += [(w - 10, h - 10, 40, 40), (-5, -5, 20, 20), (w + 5, 0, 8, 8)]  # corner, origin, outside
        for x, y, rw, rh in regions:
            np.testing.assert_array_equal(slide.read_region((x, y), 0, (rw, rh)),
                                          slide._openslide_region((x, y), 0, (rw, rh)), err_msg=str((x, y, rw, rh)))
        assert slide.reader == "tifffile+imagecodecs, checked against OpenSlide"


def test_a_damaged_tile_is_an_error_naming_the_file_and_the_tile(real_data, tmp_path):
    import tifffile

    bad = tmp_path / "damaged.svs"
    shutil.copyfile(real_data / "wsi" / "CMU-1-Small-Region.svs", bad)
    with tifffile.TiffFile(bad) as tif:  # tile 0 (top left): not where opening checks the pixels
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * count)
    with wsi.open_slide(bad) as slide:
        slide.read_region((1000, 1000), 0, (50, 50))  # the other tiles read
        assert slide.reader.startswith("tifffile")
        with pytest.raises(DataError, match=r"damaged\.svs: tile 0 at byte \d+ cannot be decoded"):
            slide.read_region((0, 0), 0, (50, 50))


def test_a_tile_never_written_is_white_as_openslide_gives_it(real_data, tmp_path):
    import tifffile

    sparse = tmp_path / "sparse.svs"
    shutil.copyfile(real_data / "wsi" / "CMU-1-Small-Region.svs", sparse)
    with tifffile.TiffFile(sparse) as tif:
        counts = tif.pages[0].tags["TileByteCounts"]
        assert counts.dtype == 4 and tif.byteorder == "<"   # little-endian LONGs, as this file has them
        where = counts.valueoffset + 4 * 3
    with open(sparse, "r+b") as f:  # tile 3 (top row): no bytes
        f.seek(where)
        f.write(b"\0" * 4)
    with wsi.open_slide(sparse) as slide:
        region = slide.read_region((3 * 240 - 20, 0), 0, (280, 240))
        assert slide.reader.startswith("tifffile")
        np.testing.assert_array_equal(region, slide._openslide_region((3 * 240 - 20, 0), 0, (280, 240)))
        assert (region[:, 20:260] == 255).all() and (region[:, :20] < 255).any()


def test_openslide_reads_what_the_tiles_cannot_give(real_data, monkeypatch):
    path = real_data / "wsi" / "CMU-1-Small-Region.svs"
    with wsi.open_slide(path) as slide:
        dims = slide.dimensions
    reader, why = tiff_tiles.open_level0(path, dims, lambda x, y, w, h: np.zeros((h, w, 3), np.uint8))
    assert reader is None and why == "its pixels differ from OpenSlide's"
    reader, why = tiff_tiles.open_level0(path, (dims[0] + 1, dims[1]), None)
    assert reader is None and why == "level 0 is not a plain tiled RGB page"
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # not installed
    with wsi.open_slide(path) as slide:
        region = slide.read_region((100, 100), 0, (64, 64))
        assert slide.reader == "openslide (imagecodecs is not installed)"
        assert region.shape == (64, 64, 3)


def test_the_tile_cache_is_bounded_and_can_be_emptied(real_data):
    with wsi.open_slide(real_data / "wsi" / "CMU-1-Small-Region.svs") as slide:
        slide.read_region((0, 0), 0, (8, 8))
        tiles = slide._tiles
        tiles.reset_cache(3 * tiles.tile_w * tiles.tile_h * 3)  # room for 3 tiles
        slide.read_region((0, 0), 0, tuple(slide.dimensions))
        assert len(tiles._tiles) == 3
        slide.reset_cache(0)
        slide.read_region((0, 0), 0, (600, 600))
        assert len(tiles._tiles) == 0


def test_threads_reading_at_once_get_the_same_pixels(real_data):
    with wsi.open_slide(real_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs", mpp=1.0) as slide:
        expected = slide._openslide_region((300, 200), 0, (900, 700))
        slide.reset_cache(0)  # every read decodes: threads race on the file and the codec
        results = []
        threads = [threading.Thread(target=lambda: results.append(slide.read_region((300, 200), 0, (900, 700))))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)
