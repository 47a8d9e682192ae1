"""Hostile input is refused: paths read from data resolve inside their root, bombs are refused
before decoding, tar members that escape, link or exceed the bytes budget are never read. Every
fixture is made here; each case is skipped and counted (or fails with strict, naming the row)."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medcl.corpus.normalise import normalise_row
from medcl.corpus.sources import files as file_sources
from medcl.data import images
from medcl.data.spec import DataError
from medcl.paths import OutsideRoot, inside_root

SECRET = b"aws_secret_access_key = hunter2"


def _png(value: int = 128, size=(12, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size, value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """An all-zero greyscale PNG written chunk by chunk (fast, a few hundred KB for ~70 Mpx)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(9), b"\x00" * (width + 1), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture
def land(tmp_path):
    """``root`` (the download / images folder) with one good image, and a secret outside it."""
    root = tmp_path / "download"
    (root / "images").mkdir(parents=True)
    (root / "images" / "good.png").write_bytes(_png())
    outside = tmp_path / "home" / ".aws"
    outside.mkdir(parents=True)
    (outside / "credentials").write_bytes(SECRET)
    (outside / "looks_like.png").write_bytes(_png(7))  # a decodable file out of bounds
    (root / "images" / "link.png").symlink_to(outside / "looks_like.png")
    return SimpleNamespace(root=root, outside=outside, tmp=tmp_path)


def test_inside_root_refuses_traversal_absolute_paths_links_and_nul(land):
    assert inside_root(land.root, "images/good.png") == (land.root / "images" / "good.png").resolve()
    assert inside_root(land.root, str(land.root / "images" / "good.png")).name == "good.png"  # absolute, inside
    for hostile in ("../home/.aws/credentials", "images/../../home/.aws/credentials",
                    str(land.outside / "credentials"), "/etc/passwd", "images/link.png", "a\x00b", ".."):
        with pytest.raises(OutsideRoot, match="outside_root"):
            inside_root(land.root, hostile)


def _prepare_spec(rows: list[dict]):
    from medcl.data.prepare.core import DatasetSpec
    from medcl.data.prepare.readers import table

    return DatasetSpec(name="hostile", title="Hostile", modality="xray", classes=("a", "b"),
                       expected=(("labels.csv",),), layout="labels.csv, images/", reader=table, split_note="",
                       options={"csv": ("labels.csv",), "image": lambda row, root: root / row["file"],
                                "label": lambda row: (row["label"],)})


def _write_csv(root: Path, files: list[str]) -> None:
    lines = ["file,label"] + [f"{name},{'ab'[i % 2]}" for i, name in enumerate(files)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def test_data_prepare_embed_never_reads_outside_the_download(land, monkeypatch):
    from medcl.data.prepare.core import prepare

    for i in range(3):
        (land.root / "images" / f"ok{i}.png").write_bytes(_png(10 * i))
    (land.root / "images" / "bomb.png").write_bytes(_png(size=(300, 300)))
    (land.root / "images" / "junk.png").write_bytes(b"not an image at all")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 50_000)  # 300 x 300 = 90,000 px is over it
    hostile = ["../../home/.aws/credentials", str(land.outside / "credentials"), "images/link.png"]
    _write_csv(land.root, ["images/good.png", "images/ok0.png", "images/ok1.png", "images/ok2.png", *hostile,
                           "images/bomb.png", "images/junk.png"])
    summary = prepare(_prepare_spec([]), land.root, land.tmp / "out", embed=True)
    assert summary["rows"] == 4
    assert summary["skipped"] == {"image path outside the download folder": 3,
                                  "image refused (too_many_pixels)": 1, "image refused (undecodable_image)": 1}
    stored = pq.read_table(land.tmp / "out" / "hostile.parquet").column("image").to_pylist()
    assert len(stored) == 4 and all(Image.open(io.BytesIO(b)).size == (12, 12) for b in stored)
    assert SECRET not in (land.tmp / "out" / "hostile.parquet").read_bytes()
    for name in hostile:
        _write_csv(land.root, ["images/good.png", "images/ok0.png", "images/ok1.png", name])
        with pytest.raises(DataError, match=r"image path outside the download folder: .*(credentials|link\.png)"):
            prepare(_prepare_spec([]), land.root, land.tmp / "strict", strict=True)


def test_parquet_paths_must_resolve_inside_the_images_folder(land):
    from medcl.data.parquet import ParquetTask, load_task

    manifest = land.root / "images" / "m.parquet"
    good = ["good.png"] * 4 + [str(land.root / "images" / "good.png")] * 2
    hostile = ["../../home/.aws/looks_like.png", str(land.outside / "looks_like.png"), "link.png"]
    table = {"path": good + hostile, "label": ["a", "b"] * 3 + ["a", "b", "a"],
             "split": ["train", "train", "val", "val", "test", "test", "train", "train", "train"]}
    pq.write_table(pa.table(table), manifest)
    with pytest.warns(UserWarning, match="skipped 3"):
        task = load_task(ParquetTask(path=str(manifest), image_size=8, modality="xray"), where="benchmark.tasks.0")
    assert sum(len(s) for s in task.splits.values()) == 6
    assert task.metadata["skipped"]["count"] == 3 and task.metadata["skipped"]["reasons"] == {"outside_root": 3}
    with pytest.raises(DataError, match=r"strict.*looks_like\.png: outside_root"):
        load_task(ParquetTask(path=str(manifest), image_size=8, modality="xray", strict=True), where="benchmark.tasks.0")


def test_imagefolder_skips_a_link_leading_out_of_root(land):
    from medcl.data.imagefolder import ImageFolderTask, load_task

    for label in ("a", "b"):
        (land.root / "tree" / label).mkdir(parents=True)
        for i in range(5):
            (land.root / "tree" / label / f"{i}.png").write_bytes(_png(40 * i))
    (land.root / "tree" / "a" / "escape.png").symlink_to(land.outside / "looks_like.png")
    with pytest.warns(UserWarning, match="skipped 1"):
        task = load_task(ImageFolderTask(root=str(land.root / "tree"), image_size=8, modality="xray"), where="benchmark.tasks.0")
    assert task.metadata["skipped"]["reasons"] == {"outside_root": 1}
    assert sum(len(s) for s in task.splits.values()) == 10


def _corpus_spec(**fields):
    base = dict(name="src", prefix="src", modality="unknown", license="unknown", type="jsonl", id_field="id",
                image_field="image", caption_field="caption", modality_field=None, license_field=None, images=None)
    return SimpleNamespace(**{**base, **fields})


def test_corpus_jsonl_image_paths_stay_inside_images(land):
    lines = [{"id": 1, "image": "images/good.png", "caption": "ok"},
             {"id": 2, "image": "../home/.aws/credentials", "caption": "x"},
             {"id": 3, "image": str(land.outside / "credentials"), "caption": "x"},
             {"id": 4, "image": "images/link.png", "caption": "x"}]
    path = land.root / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    records = list(file_sources.read_jsonl(_corpus_spec(), None, {"path": str(path)}))
    rows = [normalise_row(r) for r in records]
    assert [r["reason"] for r in rows] == ["", "outside_root", "outside_root", "outside_root"]
    assert rows[0]["image"] == (land.root / "images" / "good.png").read_bytes()
    assert all(r["image"] is None for r in rows[1:])


def _tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, "/home/user/.aws/credentials"
                archive.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, "ok.png"
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


def test_tar_members_that_escape_link_or_exceed_the_budget_are_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 4096)
    tar = tmp_path / "shard.tar"
    _tar(tar, [("ok.png", _png(), "file"), ("ok.txt", b"a caption", "file"),
               ("../evil.png", _png(), "file"), ("../evil.txt", b"x", "file"),
               ("/abs/evil.png", _png(), "file"), ("/abs/evil.txt", b"x", "file"),
               ("sym.png", None, "sym"), ("sym.txt", b"x", "file"),
               ("hard.png", None, "hard"), ("hard.txt", b"x", "file"),
               ("big.png", b"\0" * 10_000, "file"), ("big.txt", b"x", "file")])
    spec = _corpus_spec(type="webdataset", caption_field="caption")
    records = list(file_sources.read_webdataset(spec, None, {"path": str(tar)}))
    reasons = {r["id"]: normalise_row(r)["reason"] for r in records}
    assert reasons == {"src:ok": "", "src:../evil": "outside_root", "src:/abs/evil": "outside_root",
                       "src:sym": "link_member", "src:hard": "link_member", "src:big": "too_many_bytes"}


def test_normaliser_and_decoders_refuse_a_pixel_bomb_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 50_000)
    bomb = bomb_png(400, 400)
    raw = {"id": "s:1", "image": bomb, "caption": "c", "source": "s", "modality": "x", "license": "l", "reason": ""}
    assert normalise_row(raw)["reason"] == "too_many_pixels"
    with pytest.raises(images.ImageRefused, match="too_many_pixels: 400 x 400 px") as raised:
        images.decode(bomb, image_size=8)
    assert raised.value.reason == "too_many_pixels"
    from medcl.corpus.embed_prep import decode_images

    with pytest.raises(images.UndecodableImage, match="too_many_pixels"):
        decode_images([bomb], 8)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 20)
    with pytest.raises(images.ImageRefused, match="too_many_bytes"):
        images.decode(_png(), image_size=8)


PEAK_SCRIPT = """
import sys
from medcl.data import images
data = open(sys.argv[1], "rb").read()
def hwm():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024
before = hwm()
try:
    images.decode(data, image_size=8)
    print("decoded", hwm() - before)
except images.ImageRefused as exc:
    print(exc.reason, hwm() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for VmHWM")
def test_a_bomb_under_pils_own_limit_is_refused_with_no_memory_spent(tmp_path):
    """8,200 x 8,200 px (67 Mpx, under PIL's 89 Mpx warning): refused by the default 64 Mpx
    budget from its header; peak memory grows by a few MiB, not the ~67 MiB+ of decoding it."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(8200, 8200))
    assert path.stat().st_size < 200_000
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    reason, grown_mib = out.stdout.split()
    assert reason == "too_many_pixels" and int(grown_mib) < 32, out.stdout
