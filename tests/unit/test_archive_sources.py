"""coco and lsun sources end to end: archives in the official formats served on 127.0.0.1."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aligned_forensics.common.archives import open_zip, read_member
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import decode_rgb
from aligned_forensics.common.io import read_csv
from aligned_forensics.data.fetch import FetchConfig, describe_dry_run, plan_fetch, run_fetch
from tests.dataset_archives import coco_images, coco_zip, lsun_images, lsun_zip, md5

COCO = coco_images(30)  # 40x32: both sides multiples of 8, stored verbatim
COCO_ZIP = coco_zip("val2017", COCO, extra={"val2017/readme.txt": b"not an image"})


def coco_source(http, **overrides):
    http.files["/zips/val2017.zip"] = COCO_ZIP
    return {"kind": "coco", "split": "val", "count": 10, "url": http.url("/zips/"), "checksum": md5(COCO_ZIP),
            **overrides}


def fetch(tmp_path, sources, *, run="run", seed=0):
    out = tmp_path / run
    counts = run_fetch(FetchConfig(seed=seed, sources=tuple(sources), watch=str(tmp_path)), out_dir=out / "real",
                       index_path=out / "fetch" / "index.csv", rejects_path=out / "fetch" / "rejects.csv",
                       downloads=tmp_path / "downloads")
    return counts, read_csv(out / "fetch" / "index.csv")


def test_coco_selection_is_seeded_verbatim_and_identical_across_runs(http, tmp_path):
    counts, rows = fetch(tmp_path, [coco_source(http)])
    assert counts["images"] == 10 and counts["cropped"] == 0 and counts["per_source"] == {"coco/val": 10}
    for row in rows:
        member = "val2017/" + row["origin"].split("val2017/")[1]
        assert row["stem"] == "coco-" + member.split("/")[1].removesuffix(".jpg")
        assert Path(row["path"]).read_bytes() == COCO[member.split("/")[1]]  # bytes verbatim, never re-encoded
        assert (row["format"], row["source_format"], row["processing"]) == ("jpeg", "jpeg", "verbatim")
    _, again = fetch(tmp_path, [coco_source(http)], run="again")
    assert [r["stem"] for r in again] == [r["stem"] for r in rows]
    assert len(http.gets("/zips/val2017.zip")) == 1  # the second run used the download cache
    _, reseeded = fetch(tmp_path, [coco_source(http)], run="reseeded", seed=1)
    assert {r["stem"] for r in reseeded} != {r["stem"] for r in rows}
    _, pinned = fetch(tmp_path, [coco_source(http, seed=0)], run="pinned", seed=1)  # a source's own seed wins
    assert [r["stem"] for r in pinned] == [r["stem"] for r in rows]


def test_coco_odd_sizes_are_cropped_losslessly_at_the_top_left(http, tmp_path):
    odd = coco_images(5, width=45, height=37)
    http.files["/odd/train2017.zip"] = coco_zip("train2017", odd)
    source = {"kind": "coco", "split": "train", "count": 0, "url": http.url("/odd/"), "checksum": "",
              "use_as": "train"}
    counts, rows = fetch(tmp_path, [source])
    assert counts["cropped"] == 5 and {row["split"] for row in rows} == {"train"}
    row = rows[0]
    assert (row["width"], row["height"], row["format"], row["source_format"]) == ("40", "32", "png", "jpeg")
    assert "cropped 45x37 to 40x32 at the top-left corner" in row["processing"]
    original = np.asarray(Image.open(io.BytesIO(odd[row["stem"].removeprefix("coco-") + ".jpg"])).convert("RGB"))
    assert np.array_equal(decode_rgb(tmp_path / "run" / "real" / "train" / f"{row['stem']}.png"), original[:32, :40])


def test_coco_list_file_and_counts_that_do_not_fit(http, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("# my validation set\n000000000003.jpg\nval2017/000000000007.jpg\n\n")
    _, rows = fetch(tmp_path, [coco_source(http, list_file=str(names))])
    assert [row["stem"] for row in rows] == ["coco-000000000003", "coco-000000000007"]
    names.write_text("000000000003.jpg\n000000099999.jpg\n")
    with pytest.raises(DataError, match=r"1 of the 2 names in .*names.txt are not in the archive, e.g. 000000099999"):
        fetch(tmp_path, [coco_source(http, list_file=str(names))], run="missing")
    with pytest.raises(DataError, match="count is 31 but only 30 images are available"):
        fetch(tmp_path, [coco_source(http, count=31)], run="too-many")


def test_a_second_run_with_the_same_params_does_nothing(http, tmp_path, caplog):
    fetch(tmp_path, [coco_source(http)])
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "real").rglob("*.jpg")}
    with caplog.at_level(logging.INFO):
        counts, _ = fetch(tmp_path, [coco_source(http)])
    assert "already holds exactly these 10 images: nothing to do" in caplog.text and counts["images"] == 10
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "real").rglob("*.jpg")} == written
    counts, _ = fetch(tmp_path, [coco_source(http, count=12)])  # a changed selection is fetched again
    assert counts["images"] == 12


def test_dry_run_lists_downloads_then_selection_and_touches_nothing(http, tmp_path):
    config = FetchConfig(seed=0, sources=(coco_source(http),))
    lines, summary = describe_dry_run(config, tmp_path / "downloads")
    assert any(line.startswith("download\tval2017.zip") and f"{len(COCO_ZIP) / 1024:,.1f} KiB" in line
               for line in lines)
    assert "1 archive(s) to download" in summary and "listed once downloaded" in summary
    assert not (tmp_path / "downloads").exists()
    plan_fetch(config, downloads=tmp_path / "downloads")  # downloads the archive
    cache = sorted(p.name for p in (tmp_path / "downloads").iterdir())
    lines, summary = describe_dry_run(config, tmp_path / "downloads")
    selected = [line.split("\t") for line in lines if line.startswith("select")]
    assert len(selected) == 10 and all(line[-1].endswith(" B") for line in selected)  # member sizes
    assert "0 archive(s) to download" in summary and "10 images selected" in summary
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == cache


def test_lsun_keys_are_exported_with_their_format_and_cropped_to_multiples_of_8(http, tmp_path):
    values = lsun_images(12)
    archive = lsun_zip("bedroom", "val", values)
    http.files["/lsun/bedroom_val_lmdb.zip"] = archive
    lsun = {"kind": "lsun", "category": "bedroom", "split": "val", "count": 6, "url": http.url("/lsun/"),
            "checksum": md5(archive), "use_as": "val"}
    counts, rows = fetch(tmp_path, [coco_source(http, use_as="train"), lsun])
    assert counts["per_source"] == {"coco/val": 10, "lsun/bedroom/val": 6} and counts["images_val"] == 6
    lsun_rows = [row for row in rows if row["source"] == "lsun/bedroom/val"]
    for row in lsun_rows:
        key = row["stem"].removeprefix("lsun-bedroom-")
        assert row["origin"] == f"bedroom_val_lmdb.zip:{key}" and row["source_format"] == "webp"
        width = Image.open(io.BytesIO(values[key])).width
        assert int(row["width"]) == width - width % 8 and row["height"] == "32"
        assert row["processing"] == "verbatim" if width % 8 == 0 else row["format"] == "png"
    _, again = fetch(tmp_path, [coco_source(http, use_as="train"), lsun], run="again")
    assert [r["stem"] for r in again] == [r["stem"] for r in rows]
    assert [Path(r["path"]).read_bytes() for r in again] == [Path(r["path"]).read_bytes() for r in rows]


def test_lsun_cache_is_checked_against_the_url_and_checksum_on_every_run(http, tmp_path):
    """The unpacked data.mdb is reused only for the archive the params name: another url (or no checksum and
    another url) downloads, verifies and unpacks the new archive; a wrong checksum is refused, cache or not."""
    values = list(lsun_images(14).items())
    first, second = dict(values[:8]), dict(values[8:])  # disjoint keys: every stem tells its archive
    archives = {"/a/bedroom_val_lmdb.zip": lsun_zip("bedroom", "val", first),
                "/b/bedroom_val_lmdb.zip": lsun_zip("bedroom", "val", second)}
    http.files.update(archives)

    def lsun(folder, checksum):
        return {"kind": "lsun", "category": "bedroom", "split": "val", "count": 0, "url": http.url(f"/{folder}/"),
                "checksum": checksum, "use_as": "val", "multiple_of": 0}

    def fetched(rows):
        return {row["stem"].removeprefix("lsun-bedroom-"): Path(row["path"]).read_bytes() for row in rows}

    a, b = md5(archives["/a/bedroom_val_lmdb.zip"]), md5(archives["/b/bedroom_val_lmdb.zip"])
    assert fetched(fetch(tmp_path, [lsun("a", a)], run="a")[1]) == first
    assert fetched(fetch(tmp_path, [lsun("a", a)], run="a-cached")[1]) == first
    assert len(http.gets("/a/bedroom_val_lmdb.zip")) == 1  # the cached, recorded unpack was reused
    assert fetched(fetch(tmp_path, [lsun("b", b)], run="b")[1]) == second  # not the old cache
    assert len(http.gets("/b/bedroom_val_lmdb.zip")) == 1
    with pytest.raises(DataError, match=f"checksum mismatch for {http.url('/b/bedroom_val_lmdb.zip')}: expected "
                                        f"{a}, got {b}; the file was moved aside .*check the url, or set the "
                                        "source's checksum param"):
        fetch(tmp_path, [lsun("b", a)], run="wrong")  # the cache is present and unpacked from b
    assert not (tmp_path / "wrong").exists()
    assert fetched(fetch(tmp_path, [lsun("b", b)], run="b-again")[1]) == second
    assert fetched(fetch(tmp_path, [lsun("a", "")], run="a-unverified")[1]) == first  # url alone changed
    assert len(http.gets("/a/bedroom_val_lmdb.zip")) == 2
    downloads = tmp_path / "downloads"
    assert not list(downloads.glob("*.partial")) and sorted(p.name for p in (downloads / "bedroom_val_lmdb").iterdir()
                                                            ) == ["data.mdb", "unpacked-from.json"]


def test_lsun_archive_without_an_lmdb_is_a_clear_error(http, tmp_path):
    http.files["/lsun/tower_val_lmdb.zip"] = COCO_ZIP
    lsun = {"kind": "lsun", "category": "tower", "split": "val", "url": http.url("/lsun/"), "checksum": ""}
    with pytest.raises(DataError, match="expected one data.mdb .*found 0"):
        fetch(tmp_path, [lsun])


@pytest.mark.parametrize("member, problem", [("../evil.jpg", "'..'"), ("/etc/evil.jpg", "absolute path"),
                                             ("val2017/link.jpg", "symbolic link")])
def test_unsafe_members_are_refused(http, tmp_path, member, problem):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("val2017/000000000001.jpg", COCO["000000000001.jpg"])
        info = zipfile.ZipInfo(member)
        if problem == "symbolic link":
            info.external_attr = (0o120777 << 16)
        archive.writestr(info, b"/etc/passwd")
    http.files["/zips/val2017.zip"] = buffer.getvalue()
    source = coco_source(http, checksum="")
    http.files["/zips/val2017.zip"] = buffer.getvalue()
    with pytest.raises(DataError, match=f"unsafe member '{member}' \\({problem}"):
        fetch(tmp_path, [source])
    assert not (tmp_path / "run" / "real").exists()


def test_truncated_and_corrupt_archives_name_the_archive(tmp_path):
    truncated = tmp_path / "val2017.zip"
    truncated.write_bytes(COCO_ZIP[: len(COCO_ZIP) // 2])
    with pytest.raises(DataError, match=r"val2017.zip is not a readable zip archive.*truncated"):
        open_zip(truncated)
    corrupt = bytearray(COCO_ZIP)
    data = COCO["000000000001.jpg"]
    offset = bytes(corrupt).index(data)
    corrupt[offset + 100] ^= 0xFF  # the CRC no longer matches
    truncated.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"member val2017/000000000001.jpg is corrupt"):
        read_member(open_zip(truncated), "val2017/000000000001.jpg")


def test_unknown_lsun_category_and_bad_checksum_fail_at_start_up(tmp_path):
    from aligned_forensics.common.errors import ParamsError

    with pytest.raises(ParamsError, match=r"category.*one of bedroom, bridge"):
        FetchConfig(seed=0, sources=({"kind": "lsun", "category": "bedrooms", "split": "val"},)).source_configs()
    with pytest.raises(ParamsError, match=r"checksum.*md5:<32 hex digits>"):
        FetchConfig(seed=0, sources=({"kind": "coco", "split": "val", "checksum": "abc"},)).source_configs()
