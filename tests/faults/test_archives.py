"""Hostile archives (escaping names, links, devices, bombs) are refused naming archive and member, with
nothing written anywhere; good archives (zip, tar, tar.gz; local or over HTTP) go through the fetch stage."""

from __future__ import annotations

import io
import logging
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.io import read_csv
from aligned_forensics.data.sources import source_config
from tests.dataset_archives import md5, photo
from tests.stages.conftest import stage_main

IMAGES = {f"imgs/p{i}.jpg": photo(i, width=40, height=32) for i in range(5)}
ZEROS = b"\0" * (20 << 20)  # 20 MiB of zeros: deflates ~1000x


def make_zip(members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # S_IFLNK: how zip marks a symbolic link
            archive.writestr(info, target)
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], *, mode: str = "w", special: Callable[[tarfile.TarFile], None] | None = None
             ) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if special:
            special(archive)
    return buffer.getvalue()


def _link(kind: bytes, name: str, target: str) -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        archive.addfile(info)
    return add


HOSTILE = {
    "zip absolute path": ("evil.zip", lambda: make_zip({**IMAGES, "/tmp/evil.jpg": IMAGES["imgs/p0.jpg"]}),
                          "'/tmp/evil.jpg' (absolute path)"),
    "zip dot-dot": ("evil.zip", lambda: make_zip({**IMAGES, "imgs/../../evil.jpg": IMAGES["imgs/p0.jpg"]}),
                    "'imgs/../../evil.jpg' ('..' escapes the destination)"),
    "zip symlink": ("evil.zip", lambda: make_zip(IMAGES, symlinks={"imgs/link.jpg": "/etc/passwd"}),
                    "'imgs/link.jpg' (symbolic link)"),
    "zip bomb": ("bomb.zip", lambda: make_zip({**IMAGES, "imgs/huge.png": ZEROS}),
                 "member 'imgs/huge.png' unpacks"),
    "tar absolute path": ("evil.tar", lambda: make_tar({**IMAGES, "/tmp/evil.jpg": IMAGES["imgs/p0.jpg"]}),
                          "'/tmp/evil.jpg' (absolute path)"),
    "tar dot-dot": ("evil.tar", lambda: make_tar({**IMAGES, "../evil.jpg": IMAGES["imgs/p0.jpg"]}),
                    "'../evil.jpg' ('..' escapes the destination)"),
    "tar symlink": ("evil.tar", lambda: make_tar(IMAGES, special=_link(tarfile.SYMTYPE, "imgs/s.jpg", "/etc/passwd")),
                    "'imgs/s.jpg' (symbolic link to '/etc/passwd')"),
    "tar hard link": ("evil.tar", lambda: make_tar(IMAGES, special=_link(tarfile.LNKTYPE, "imgs/h.jpg", "/etc/passwd")),
                      "'imgs/h.jpg' (hard link to '/etc/passwd')"),
    "tar fifo": ("evil.tar", lambda: make_tar(IMAGES, special=_link(tarfile.FIFOTYPE, "imgs/f.jpg", "")),
                 "'imgs/f.jpg' (a device, FIFO or other special file)"),
    "tgz hard link": ("evil.tgz", lambda: make_tar(IMAGES, mode="w:gz",
                                                   special=_link(tarfile.LNKTYPE, "imgs/h.jpg", "imgs/p0.jpg")),
                      "'imgs/h.jpg' (hard link to 'imgs/p0.jpg')"),
    "tgz bomb": ("bomb.tar.gz", lambda: make_tar({**IMAGES, "imgs/huge.png": ZEROS}, mode="w:gz"),
                 "member 'imgs/huge.png' brings what the archive unpacks to over"),
}


def run_fetch_stage(folder: Path, source: dict, caplog, *extra: str) -> int:
    """The fetch stage's main() in `folder` with one source; its downloads cache under folder/downloads."""
    params = {"fetch": {"seed": 0, "sources": [source], "watch": str(folder)}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    with caplog.at_level(logging.INFO):
        return stage_main("fetch")(["--params", str(folder / "params.yaml"), "--out", str(folder / "data/real"),
                                    "--index", str(folder / "data/fetch/index.csv"),
                                    "--rejects", str(folder / "data/fetch/rejects.csv"),
                                    "--metrics", str(folder / "metrics/fetch.json"),
                                    "--downloads", str(folder / "downloads"), *extra])


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_naming_archive_and_member(case, tmp_path, caplog, monkeypatch):
    name, build, expected = HOSTILE[case]
    work = tmp_path / "work"
    work.mkdir()
    (work / name).write_bytes(build())
    monkeypatch.chdir(work)  # a '..' or absolute member must not land anywhere, relative or not
    assert run_fetch_stage(work, {"kind": "archive", "path": str(work / name)}, caplog) == 2
    assert str(work / name) in caplog.text and expected in caplog.text, caplog.text
    assert not (work / "data").exists() and not (work / "metrics").exists()
    assert not (tmp_path / "evil.jpg").exists() and not Path("/tmp/evil.jpg").exists()
    left = {p.name for p in (work / "downloads").rglob("*")} if (work / "downloads").exists() else set()
    assert not any(p.endswith(".partial") for p in left)  # a refused unpack leaves no half-written tar


def test_total_unpacked_limit_refuses_an_archive_naming_it(tmp_path, caplog):
    (tmp_path / "photos.zip").write_bytes(make_zip(IMAGES))
    source = {"kind": "archive", "path": str(tmp_path / "photos.zip"), "max_unpacked_gib": 1e-6}  # ~1 kB
    assert run_fetch_stage(tmp_path, source, caplog) == 2
    assert f"{tmp_path / 'photos.zip'}: unpacks to more than 1,073 bytes (at member 'imgs/p" in caplog.text
    assert "max_unpacked_gib" in caplog.text


def good_members() -> dict[str, bytes]:
    """Five photos, a non-image member (ignored) and an undecodable .jpg member (a reject)."""
    return {**IMAGES, "README.txt": b"about these photos", "imgs/broken.jpg": b"\xff\xd8\xff not a jpeg",
            "./imgs/sub/p5.jpg": photo(5, width=44, height=36)}


@pytest.mark.parametrize(("name", "build"), [
    ("photos.zip", lambda: make_zip(good_members())),
    ("photos.tar", lambda: make_tar(good_members())),
    ("photos.tar.gz", lambda: make_tar(good_members(), mode="w:gz")),
    ("photos.tar.xz", lambda: make_tar(good_members(), mode="w:xz")),
])
def test_good_archive_goes_through_the_fetch_stage(name, build, tmp_path, caplog):
    (tmp_path / name).write_bytes(build())
    source = {"kind": "archive", "path": str(tmp_path / name), "split": "train", "multiple_of": 8}
    assert run_fetch_stage(tmp_path, source, caplog) == 0, caplog.text
    index = {row["stem"]: row for row in read_csv(tmp_path / "data/fetch/index.csv")}
    assert set(index) == {f"photos-imgs__p{i}" for i in range(5)} | {"photos-imgs__sub__p5"}
    assert index["photos-imgs__sub__p5"]["processing"].startswith("cropped 44x36 to 40x32")
    assert index["photos-imgs__p0"]["origin"] == f"{name}:imgs/p0.jpg"
    rejects = read_csv(tmp_path / "data/fetch/rejects.csv")
    assert [row["path"] for row in rejects] == [f"{name}:imgs/broken.jpg"]
    real = tmp_path / "data/real/train/photos-imgs__p1.jpg"
    assert real.read_bytes() == IMAGES["imgs/p1.jpg"]  # verbatim: 40 x 32 already fits
    assert run_fetch_stage(tmp_path, source, caplog) == 0 and "nothing to do" in caplog.text  # cached unpack


def test_archive_over_http_is_downloaded_verified_and_read(http, tmp_path, caplog):
    data = make_tar(good_members(), mode="w:gz")
    http.files["/data/photos.tgz"] = data
    source = {"kind": "archive", "url": http.url("/data/photos.tgz"), "checksum": md5(data), "prefix": "web"}
    assert run_fetch_stage(tmp_path, {**source}, caplog, "--dry-run") == 0
    assert "not listed yet" in caplog.text or "listed once" in caplog.text
    assert run_fetch_stage(tmp_path, source, caplog) == 0, caplog.text
    assert len(read_csv(tmp_path / "data/fetch/index.csv")) == 6
    assert (tmp_path / "downloads" / "photos.tgz").read_bytes() == data


def test_archive_over_http_with_a_wrong_checksum_is_refused(http, tmp_path, caplog):
    http.files["/data/photos.zip"] = make_zip(IMAGES)
    source = {"kind": "archive", "url": http.url("/data/photos.zip"), "checksum": "md5:" + "0" * 32}
    assert run_fetch_stage(tmp_path, source, caplog) == 2
    assert "photos.zip" in caplog.text and not (tmp_path / "data").exists()


@pytest.mark.parametrize(("spec", "message"), [
    ({}, r"'fetch.sources\[0\].path/url': expected exactly one of path and url"),
    ({"path": "a.zip", "url": "http://x/a.zip"}, r"'fetch.sources\[0\].path/url'"),
    ({"url": "ftp://x/a.zip"}, r"'fetch.sources\[0\].url': expected an http\(s\) URL"),
    ({"path": "a.zip", "checksum": "md5:" + "0" * 32}, r"'fetch.sources\[0\].checksum'"),
    ({"url": "http://x/a.zip", "checksum": "md5:123"}, r"'fetch.sources\[0\].checksum'"),
    ({"path": "a.zip", "max_ratio": 0.5}, r"'fetch.sources\[0\].max_ratio': expected a number >= 1"),
    ({"path": "a.zip", "max_unpacked_gib": 0}, r"'fetch.sources\[0\].max_unpacked_gib'"),
    ({"path": "a.zip", "prefix": "a b"}, r"'fetch.sources\[0\].prefix'"),
    ({"path": "a.zip", "extensions": ["jpg"]}, r"'fetch.sources\[0\].extensions'"),
    ({"path": "a.zip", "count": -1}, r"'fetch.sources\[0\].count'"),
    ({"path": "a.zip", "split": "holdout"}, r"'fetch.sources\[0\].split'"),
    ({"path": "a.zip", "max_ratio": "big"}, r"'fetch.sources\[0\].max_ratio': expected a number"),
])
def test_archive_params_are_validated_with_the_full_key(spec, message):
    with pytest.raises(ParamsError, match=message):
        source_config({"kind": "archive", **spec}, key="fetch.sources[0]")
