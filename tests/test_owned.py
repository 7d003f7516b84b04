"""Ownership of outputs: fcn-deploy replaces or deletes only what carries its mark, checked by
file type and content; temp folders of dead processes go, nothing a user made does."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_api import scene
from test_video import write_clip

from fcn_deploy._io import atomic_write_bytes
from fcn_deploy._owned import (
    MARK_FILE,
    TEMP_PREFIX,
    carries_mark,
    foreign_entry,
    mark_jpeg,
    mark_mp4,
    publish,
    remove_owned,
    temp_space,
    write_folder_mark,
)
from fcn_deploy.errors import FCNError
from fcn_deploy.imageio import encode_label_png, read_image, read_label_png

FCN_PREDICT = str(Path(sys.executable).with_name("fcn-predict"))
DEAD_PID = 2**22 + 1  # above Linux's largest pid: no such process


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry below ``root`` (hidden ones too) with a file's bytes (None: a folder)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def test_marks_leave_the_pixels_alone(tmp_path: Path) -> None:
    labels = np.arange(48, dtype=np.uint8).reshape(6, 8) % 21
    png = tmp_path / "a.png"
    png.write_bytes(encode_label_png(labels, [(k, k, k) for k in range(21)]))
    assert carries_mark(png)
    np.testing.assert_array_equal(read_label_png(png), labels)  # Pillow
    assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED).shape == (6, 8, 3)  # libpng takes it

    plain = tmp_path / "plain.jpg"
    cv2.imwrite(str(plain), scene(24, 32, 2))
    marked = tmp_path / "marked.jpg"
    marked.write_bytes(mark_jpeg(plain.read_bytes()))
    assert carries_mark(marked) and not carries_mark(plain)
    np.testing.assert_array_equal(read_image(marked), read_image(plain))
    with Image.open(marked) as image:
        image.load()

    clip = write_clip(tmp_path / "clip.mp4", 4, fourcc="mp4v")
    assert not carries_mark(clip)
    mark_mp4(clip)
    assert carries_mark(clip)
    capture = cv2.VideoCapture(str(clip))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 4  # the trailing free box is skipped by the demuxer


def test_what_is_foreign(tmp_path: Path) -> None:
    frames = tmp_path / "clip"
    frames.mkdir()
    (frames / "000000.png").write_bytes(encode_label_png(np.zeros((4, 4), np.uint8), []))
    write_folder_mark(frames, "video-frames")
    assert foreign_entry(frames) is None and foreign_entry(tmp_path / "nothing") is None

    (frames / "000001.png").mkdir()  # a folder with a frame's name
    (frames / "000001.png" / "thesis.txt").write_text("x")
    assert "000001.png is a folder fcn-deploy did not write" in str(foreign_entry(frames))
    remove_owned(frames / "000001.png")  # refused: still there
    assert (frames / "000001.png" / "thesis.txt").exists()
    (frames / "000001.png" / "thesis.txt").unlink()
    (frames / "000001.png").rmdir()

    (frames / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    assert "000002.png is not an fcn-deploy output" in str(foreign_entry(frames))
    (frames / "000002.png").unlink()
    (frames / "link.png").symlink_to(frames / "000000.png")
    assert "is a symbolic link" in str(foreign_entry(frames))
    (frames / "link.png").unlink()
    os.mkfifo(frames / "pipe")
    assert "not a regular file or folder" in str(foreign_entry(frames))
    (frames / "pipe").unlink()

    unmarked = tmp_path / "photos"
    unmarked.mkdir()
    assert "holds no .fcn-deploy mark" in str(foreign_entry(unmarked))
    (unmarked / MARK_FILE).write_text("not json")
    assert foreign_entry(unmarked) is not None

    listed = tmp_path / "model"  # files that carry no mark of their own are listed with sizes
    (listed / "1").mkdir(parents=True)
    (listed / "config.pbtxt").write_text("name: 'fcn'")
    (listed / "1" / "model.onnx").write_bytes(b"12345")
    write_folder_mark(listed, "triton-model", {"config.pbtxt": 11, "1/model.onnx": 5})
    assert foreign_entry(listed) is None
    (listed / "1" / "model.onnx").write_bytes(b"123456")  # edited since: no longer provably ours
    assert "model.onnx is not an fcn-deploy output" in str(foreign_entry(listed))
    (listed / "1" / "notes").mkdir()
    assert remove_owned(listed) is not None and listed.exists()


def test_publish_replaces_only_its_own(tmp_path: Path) -> None:
    final = tmp_path / "a.png"
    final.write_bytes(b"a user's picture")
    labels = encode_label_png(np.ones((3, 3), np.uint8), [])
    with pytest.raises(FCNError, match=r"a\.png is not an fcn-deploy output, and it is in the way"):
        atomic_write_bytes(final, labels, owned_only=True)
    assert final.read_bytes() == b"a user's picture"
    final.unlink()
    atomic_write_bytes(final, labels, owned_only=True)
    atomic_write_bytes(final, labels[:-1] + labels[-1:], owned_only=True)  # its own: replaced
    assert final.read_bytes() == labels
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp space left

    with temp_space(tmp_path, "test") as space:  # a folder replacing its own earlier folder
        new = space / "new"
        new.mkdir()
        write_folder_mark(new, "video-frames")
        assert publish(new, tmp_path / "clip") is False
        again = space / "again"
        again.mkdir()
        write_folder_mark(again, "video-frames", {"x": 1})
        (again / "x").write_bytes(b"1")
        assert publish(again, tmp_path / "clip") is True
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == [MARK_FILE, "x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "clip"]


def _space(parent: Path, folder_name: str, **mark: object) -> Path:
    folder = parent / folder_name
    folder.mkdir()
    (folder / "0.png").write_bytes(b"half a file")
    (folder / MARK_FILE).write_text(json.dumps({"owner": "fcn-deploy", "kind": "temp", **mark}))
    return folder


def test_temp_folders_of_dead_processes_and_nothing_else(tmp_path: Path) -> None:
    dead = _space(tmp_path, f"{TEMP_PREFIX}dead", pid=DEAD_PID, name=f"{TEMP_PREFIX}dead")
    live = _space(tmp_path, f"{TEMP_PREFIX}live", pid=os.getppid(), name=f"{TEMP_PREFIX}live")
    renamed = _space(tmp_path, f"{TEMP_PREFIX}copy", pid=DEAD_PID, name=f"{TEMP_PREFIX}orig")
    unmarked = tmp_path / f"{TEMP_PREFIX}mine"
    unmarked.mkdir()
    (unmarked / "keep.txt").write_text("x")
    backup = tmp_path / ".clip.backup.tmp"  # a user's folder named like an old temp folder
    backup.mkdir()
    (backup / "keep.txt").write_text("x")
    link = tmp_path / f"{TEMP_PREFIX}link"
    link.symlink_to(dead)
    atomic_write_bytes(tmp_path / "x.bin", b"x")
    assert not dead.exists() and link.is_symlink()
    for kept in (live, renamed, unmarked, backup):
        assert kept.is_dir() and len(list(kept.iterdir())) >= 1, kept


def test_a_video_never_deletes_what_a_user_put_in_its_way(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Names are never proof: a folder named like a frame, or a folder named like an old temp
    folder, with a user's file inside, survives fcn-predict."""
    model, out = make_checkpoint("fcn8s"), tmp_path / "o3"
    clip = write_clip(tmp_path / "clip.mp4", 2, fourcc="mp4v")
    (out / "clip" / "000001.png").mkdir(parents=True)
    (out / "clip" / "000001.png" / "thesis.txt").write_text("four years")
    (out / ".clip.backup.tmp").mkdir()
    (out / ".clip.backup.tmp" / "notes.txt").write_text("keep")
    before = tree(out)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FCN_PREDICT, model, clip, "-o", out, "--device", "cpu", "--overlay"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    refused = run()
    assert refused.returncode == 2, refused.stderr
    assert "did not write" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert tree(out) == before

    (out / "clip" / "000001.png" / "thesis.txt").unlink()
    (out / "clip" / "000001.png").rmdir()
    (out / "clip").rmdir()
    first = run()
    assert first.returncode == 0, first.stderr
    again = run()  # its own earlier results: replaced, and said
    assert again.returncode == 0 and "3 earlier result(s)" not in again.stderr, again.stderr
    assert "2 earlier result(s)" in again.stderr, again.stderr
    assert (out / ".clip.backup.tmp" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in out.iterdir()) == [".clip.backup.tmp", "clip", "clip_overlay.mp4"]
    assert carries_mark(out / "clip_overlay.mp4") and foreign_entry(out / "clip") is None


def test_image_results_in_the_way(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    """A user's ``photo.png`` in the output folder is not replaced by photo.jpg's label map."""
    model, out = make_checkpoint("fcn8s"), tmp_path / "out"
    out.mkdir()
    cv2.imwrite(str(tmp_path / "photo.jpg"), scene(32, 40, 3))
    theirs = io.BytesIO()
    Image.new("RGB", (5, 5)).save(theirs, format="PNG")
    (out / "photo.png").write_bytes(theirs.getvalue())
    run = subprocess.run(
        [FCN_PREDICT, model, tmp_path / "photo.jpg", "-o", out, "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "photo.png is not an fcn-deploy output" in run.stderr, run.stderr
    assert (out / "photo.png").read_bytes() == theirs.getvalue()
