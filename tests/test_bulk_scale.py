"""What fcn-predict does per input besides the model (finding inputs, naming them, checking their
results, the manifest, --ray's table) costs the same for the 3,000th input as for the 300th:
counted in Python calls on real folders, so that a quadratic step cannot come back unseen
(10,000 images once stalled before the model loaded). Speeds are in benchmarks/bulk.md."""

from __future__ import annotations

import os
import shutil
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fcn_deploy._walk import iter_files
from fcn_deploy.bulk.batch import _input_table
from fcn_deploy.bulk.manifest import Manifest, ManifestRow
from fcn_deploy.bulk.outputs import OutputFolder, OutputNames
from fcn_deploy.cli.predict import Discovery, check_named_inputs
from fcn_deploy.imageio import encode_label_png

TINY_PNG = encode_label_png(np.zeros((2, 2), np.uint8), [])  # any bytes do: nothing decodes them


def make_inputs(root: Path, n: int) -> Path:
    """``n`` files: half with names of their own in one folder, half all named ``x.png``, one
    per folder (every one of those gets ``x-K``); earlier results of the first half in ``out``."""
    (root / "own").mkdir(parents=True)
    out = root.parent / f"{root.name}-out"
    out.mkdir()
    for i in range(n // 2):
        (root / "own" / f"{i:05d}.png").write_bytes(TINY_PNG)
        (out / f"{i:05d}.png").write_bytes(TINY_PNG)  # marked: an earlier result, replaced
    for i in range(n - n // 2):
        (root / f"d{i:05d}").mkdir()
        (root / f"d{i:05d}" / "x.png").write_bytes(TINY_PNG)
    return out


def calls_for(root: Path, out: Path, manifest: Path) -> tuple[int, int]:
    """(Python calls, inputs) of everything fcn-predict and --ray's driver do per input."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    inputs = 0
    table_rows: list[tuple[str, str]] = []
    sys.setprofile(count)
    try:
        reserved = check_named_inputs([str(root)], out, overlay=False)
        discovery = Discovery([str(root)], out, OutputNames(overlay=False, reserved=reserved))
        folder = OutputFolder(out)
        sheet = Manifest(manifest)
        with sheet.writing([f"class{k}" for k in range(21)]):
            for item in discovery.find():
                folder.earlier(item.name, overlay=False, video=item.video)
                pixels = np.bincount(np.zeros(4, np.uint8), minlength=21)
                sheet.add(ManifestRow(item.path, "ok", labels=item.name, bytes=4, pixels=pixels))
                table_rows.append((item.path, item.name))
                inputs += 1
        _input_table(iter(table_rows), None, overlay=False)
    finally:
        sys.setprofile(None)
    return calls, inputs


def test_work_per_input_does_not_grow_with_the_number_of_inputs(tmp_path: Path) -> None:
    counted = {}
    for n in (10, 300, 3000):  # the first: imports and caches, paid once
        root = tmp_path / f"in{n}"
        out = make_inputs(root, n)
        counted[n] = calls_for(root, out, tmp_path / f"m{n}.csv")
        assert counted[n][1] == n
        shutil.rmtree(root)
    ratio = counted[3000][0] / counted[300][0]
    assert ratio <= 15, f"10x the inputs took {ratio:.1f}x the calls: {counted}"


def test_same_stems_get_numbers_in_linear_time() -> None:
    names = OutputNames(overlay=True)
    got = [names.name("x") for _ in range(5000)]
    assert got[:3] == ["x", "x-2", "x-3"] and got[-1] == "x-5000"
    assert names.name("x-2") == "x-2-2"  # a later input named like a number given before


def test_names_are_decided_on_every_file_an_input_writes() -> None:
    names = OutputNames(overlay=True)
    assert names.name("x") == "x"  # x.png, x_overlay.jpg
    assert names.name("x.png", video=True) == "x.png-2"  # its frames' folder would be x.png/
    assert names.name("x_overlay.jpg", video=True) == "x_overlay.jpg-2"
    assert names.name("x_overlay") == "x_overlay"  # x_overlay.png: free
    assert names.name("y") == "y"
    reserved = OutputNames(overlay=False, reserved={"photo.png"})  # an input lies there
    assert reserved.name("photo") == "photo-2"


def test_inputs_stream_out_of_the_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first file comes after two folders are listed, not after the whole tree."""
    for i in range(40):
        (tmp_path / f"d{i:02d}").mkdir()
        (tmp_path / f"d{i:02d}" / "a.png").write_bytes(TINY_PNG)
    listed = []
    scandir = os.scandir

    def counting(path: object) -> object:
        listed.append(path)
        return scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", counting)
    walk = iter_files(tmp_path)
    first, _ = next(walk)
    assert first == tmp_path / "d00" / "a.png" and len(listed) == 2
    assert [p.parent.name for p, _ in walk] == [f"d{i:02d}" for i in range(1, 40)]


def test_discovery_holds_well_under_a_kilobyte_per_input(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for i in range(3000):
        (root / f"image-{i:05d}.png").write_bytes(TINY_PNG)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with Discovery([str(root)], tmp_path / "out", OutputNames(overlay=True)) as discovery:
            deadline = time.monotonic() + 120
            while discovery.total is None and time.monotonic() < deadline:
                time.sleep(0.05)
            held = tracemalloc.get_traced_memory()[0] - before  # every input found, none taken
            assert discovery.total == 3000
            found: Iterator[object] = iter(discovery)
            assert sum(1 for _ in found) == 3000
    finally:
        tracemalloc.stop()
    assert held / 3000 < 1024, f"{held / 3000:.0f} bytes per input"
