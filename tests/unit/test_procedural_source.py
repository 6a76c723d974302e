"""The `procedural` source: seeded images that are a pure function of (seed, index), valid as fetch output."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.images import decode_rgb, encode_png
from aligned_forensics.common.io import read_csv
from aligned_forensics.data.fetch import FetchConfig, plan_fetch, run_fetch
from aligned_forensics.data.manifest import ManifestConfig, build_manifest
from aligned_forensics.data.sources import PlannedImage, source_config
from aligned_forensics.data.sources import procedural as proc

SMALL = {"kind": "procedural", "count": 12, "min_side": 16, "max_side": 64}


def _loaded(planned: list[PlannedImage]) -> dict[str, bytes]:
    """stem -> JPEG bytes, loading in the order given."""
    return {item.stem: item.load().data for item in planned}


def _only(kind: str, **overrides: object) -> proc.Config:
    """A config whose every image is of one kind."""
    fractions = {name: float(name == kind) for name in proc.KINDS}
    return proc.Config(**{"kind": "procedural", "min_side": 16, "max_side": 48, **fractions, **overrides})


def test_the_same_seed_gives_byte_identical_jpegs_in_any_order():
    first = _loaded(plan_fetch(FetchConfig(seed=0, sources=(SMALL,))))
    again = _loaded(list(reversed(plan_fetch(FetchConfig(seed=0, sources=(SMALL,))))))  # no state shared
    assert len(first) == 12 and first == again
    assert list(first) == [f"procedural-0-{index:06d}" for index in range(12)]


def test_png_keeps_the_generated_pixels_exactly_and_jpeg_compresses_them():
    """image_format png: the reconstruction is then the only difference between a real and its fake."""
    png = plan_fetch(FetchConfig(seed=0, sources=({**SMALL, "count": 3, "image_format": "png"},)))
    jpeg = plan_fetch(FetchConfig(seed=0, sources=({**SMALL, "count": 3},)))
    for png_item, jpeg_item in zip(png, jpeg, strict=True):
        _, pixels = proc.generate(proc.Config(**{**SMALL, "count": 3}), 0, int(png_item.stem.rsplit("-", 1)[1]))
        loaded = png_item.load()
        assert (loaded.suffix, loaded.source_format) == (".png", "png")
        assert np.array_equal(decode_rgb(loaded.data), pixels)
        assert jpeg_item.load().suffix == ".jpg" and not np.array_equal(decode_rgb(jpeg_item.load().data), pixels)


def test_a_source_seed_wins_over_fetch_seed_and_two_seeds_combine_without_shared_stems():
    planned = plan_fetch(FetchConfig(seed=0, sources=({**SMALL, "seed": 1}, {**SMALL, "seed": 2, "split": "val"})))
    images = _loaded(planned)
    assert len(images) == 24
    assert {item.split for item in planned if item.stem.startswith("procedural-2-")} == {"val"}
    assert {item.source for item in planned} == {"procedural/1", "procedural/2"}
    assert all(images[f"procedural-1-{i:06d}"] != images[f"procedural-2-{i:06d}"] for i in range(12))
    assert len(set(images.values())) == 24


def test_sizes_are_multiples_of_8_within_bounds_and_the_jpegs_decode():
    config = {**SMALL, "count": 40, "min_side": 24, "max_side": 72}
    sizes = set()
    for item in plan_fetch(FetchConfig(seed=3, sources=(config,))):
        loaded = item.load()
        height, width, channels = decode_rgb(loaded.data).shape
        assert channels == 3 and height % 8 == 0 and width % 8 == 0
        assert 24 <= height <= 72 and 24 <= width <= 72
        assert f" {width}x{height} q90" in item.origin  # the origin names what the bytes depend on
        assert loaded.suffix == ".jpg" and loaded.source_format == "jpeg"
        sizes.add((height, width))
    assert len(sizes) > 10  # heights and widths are drawn independently


@pytest.mark.parametrize(("u", "kind"), [(0.0, "dead_leaves"), (0.5999, "dead_leaves"), (0.6, "colour_field"),
                                         (0.8499, "colour_field"), (0.85, "blend"), (0.99999, "blend")])
def test_choose_kind_splits_the_unit_interval_by_the_fractions(u, kind):
    assert proc.choose_kind(u, (0.6, 0.25, 0.15)) == kind


def test_choose_kind_skips_empty_kinds_and_rounding():
    assert {proc.choose_kind(u, (0.0, 1.0, 0.0)) for u in np.linspace(0, 0.9999, 50)} == {"colour_field"}
    assert proc.choose_kind(0.9999999, (0.5, 0.4999995, 0.0)) == "colour_field"  # sum below 1 by rounding


def test_the_default_mix_produces_every_kind_in_proportion():
    config = proc.Config(kind="procedural")
    kinds = [proc.draw_layout(config, proc.image_streams(0, index)[0]).kind for index in range(2000)]
    shares = {kind: kinds.count(kind) / len(kinds) for kind in proc.KINDS}
    # binomial standard error at n = 2000 is at most 0.011: 0.04 is over 3.5 of them
    assert shares == pytest.approx({"dead_leaves": 0.6, "colour_field": 0.25, "blend": 0.15}, abs=0.04)


@pytest.mark.parametrize("kind", proc.KINDS)
def test_every_kind_draws_a_varied_image_of_its_layout(kind):
    config = _only(kind)
    for index in range(3):
        layout, pixels = proc.generate(config, 9, index)
        assert layout.kind == kind
        assert pixels.shape == (layout.height, layout.width, 3) and pixels.dtype == np.uint8
        assert pixels.std() > 2  # not a flat image
    assert np.array_equal(proc.generate(config, 9, 1)[1], proc.generate(config, 9, 1)[1])


@pytest.mark.parametrize(("overrides", "key"), [
    ({"count": 0}, "count"),
    ({"min_side": 8}, "min_side"),
    ({"min_side": 20}, "min_side"),
    ({"max_side": 60}, "max_side"),
    ({"min_side": 64, "max_side": 32}, "max_side"),
    ({"max_side": 2048}, "max_side"),
    ({"jpeg_quality": 0}, "jpeg_quality"),
    ({"jpeg_quality": 101}, "jpeg_quality"),
    ({"split": "all"}, "split"),
    ({"seed": -1}, "seed"),
    ({"blend": 1.5}, "blend"),
    ({"dead_leaves": 0.5}, "dead_leaves + colour_field + blend"),
])
def test_invalid_params_name_the_full_key(overrides, key):
    with pytest.raises(ParamsError, match=re.escape(f"'fetch.sources[3].{key}'")):
        source_config({"kind": "procedural", **overrides}, key="fetch.sources[3]")


def test_an_unknown_key_suggests_the_right_one():
    with pytest.raises(ParamsError, match=r"'fetch.sources\[0\].colour_feild'.*did you mean .*colour_field"):
        source_config({"kind": "procedural", "colour_feild": 0.25}, key="fetch.sources[0]")


def _fetch(root: Path, config: FetchConfig) -> dict[str, object]:
    return run_fetch(config, out_dir=root / "real", index_path=root / "index.csv", rejects_path=root / "rejects.csv")


def test_fetch_with_samples_writes_identical_files_that_pass_the_manifest_checks(tmp_path):
    procedural = {"kind": "procedural", "count": 8, "seed": 5, "min_side": 16, "max_side": 40}
    samples = {"kind": "samples", "crops_per_photo": 1, "min_side": 32, "max_side": 48}
    config = FetchConfig(seed=0, sources=(procedural, samples))
    counts = _fetch(tmp_path / "a", config)
    assert counts["rejected"] == 0 and counts["per_source"]["procedural/5"] == 8
    rows = read_csv(tmp_path / "a" / "index.csv")
    ours = [row for row in rows if row["source"] == "procedural/5"]
    assert [row["stem"] for row in ours] == [f"procedural-5-{index:06d}" for index in range(8)]
    assert {(row["split"], row["format"], row["source_format"]) for row in ours} == {("train", "jpeg", "jpeg")}
    # a trivial stand-in for the reconstruct stage: the decoded pixels of each real, as PNG
    for row in rows:
        fake = tmp_path / "a" / "fake" / row["split"] / f"{row['stem']}.png"
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_bytes(encode_png(decode_rgb(Path(row["path"]))))
    pairs, rejects = build_manifest(ManifestConfig(verify_decode=True), index_path=tmp_path / "a" / "index.csv",
                                    fake_dir=tmp_path / "a" / "fake", upstream_rejects=[])
    assert rejects == []
    paired = [row for split_rows in pairs.values() for row in split_rows if row["source"] == "procedural/5"]
    assert len(paired) == 8 and {row["real_source_format"] for row in paired} == {"jpeg"}

    _fetch(tmp_path / "b", config)  # a second run (threads, another folder): the same bytes
    digests = [{path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in (root / "real").rglob("*.jpg")} for root in (tmp_path / "a", tmp_path / "b")]
    assert digests[0] == digests[1] and len(digests[0]) == len(rows)
