"""``--manifest``: one row per input, streamed to a journal while the run goes (what a killed run
leaves) and published under its name at the end, CSV or Parquet, checked against the label maps
fcn-predict wrote."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_api import scene

from fcn_deploy.bulk.manifest import Manifest, ManifestRow, journal_path
from fcn_deploy.errors import FCNError
from fcn_deploy.imageio import read_label_png

FCN_PREDICT = str(Path(sys.executable).with_name("fcn-predict"))


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FCN_PREDICT, *map(str, args)], capture_output=True, text=True, timeout=300
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path).to_pylist()
        return [{k: "" if v is None else str(v) for k, v in row.items()} for row in table]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_rows_reach_csv_and_parquet_whole(tmp_path: Path) -> None:
    odd = 'a, "quoted"\nname.png'
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"m{suffix}"
        manifest = Manifest(path)
        with manifest.writing(["bg", "cat", "cat"]):  # names repeat: columns get the ids
            manifest.add(ManifestRow(odd, "ok", labels="out/x.png", bytes=12, width=3,
                                     height=2, pixels=np.array([3, 1, 2])))  # fmt: skip
            manifest.add(ManifestRow("b.png", "failed", "not a readable image"))
            assert journal_path(path).is_file() and not path.exists()
        assert not journal_path(path).exists()
        rows = read_rows(path)
        assert rows[0]["input"] == odd and rows[0]["bytes"] == "12" and rows[0]["frames"] == ""
        assert [float(rows[0][f"fraction_{i}_{n}"]) for i, n in enumerate(["bg", "cat", "cat"])] \
            == pytest.approx([0.5, 1 / 6, 1 / 3], rel=1e-5)  # fmt: skip
        assert rows[1]["status"] == "failed" and rows[1]["fraction_1_cat"] == ""
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "m.parquet")
    assert str(schema.field("bytes").type) == "int64"
    assert str(schema.field("fraction_0_bg").type) == "double"


def test_an_interrupted_run_publishes_what_it_did(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "m.csv")
    with pytest.raises(KeyboardInterrupt), manifest.writing(["bg"]):
        manifest.add(ManifestRow("a.png", "ok", pixels=np.array([4])))
        raise KeyboardInterrupt
    assert [r["input"] for r in read_rows(tmp_path / "m.csv")] == ["a.png"]


def test_a_journal_it_did_not_write_is_in_the_way(tmp_path: Path) -> None:
    journal_path(tmp_path / "m.csv").write_text("my own notes\n")
    with pytest.raises(FCNError, match=r"m\.csv\.partial\.csv is in the way") as e:
        Manifest(tmp_path / "m.csv")
    assert e.value.param == "manifest"
    with pytest.raises(FCNError, match=r"a manifest is a \.csv or \.parquet file"):
        Manifest(tmp_path / "m.txt")


def test_fcn_predict_rows_match_its_label_maps(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model, src = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in"
    src.mkdir()
    for i, (h, w) in enumerate([(30, 40), (24, 24), (40, 28)]):
        cv2.imwrite(str(src / f"p{i}.png"), scene(h, w, i))
    (src / "broken.jpg").write_bytes(b"not a JPEG")
    for suffix in (".csv", ".parquet"):
        out, table = tmp_path / f"out{suffix}", tmp_path / f"run{suffix}"
        result = run(src, tmp_path / "missing.png", "-o", out, "--model", model, "--overlay",
                     "--manifest", table)  # fmt: skip
        assert result.returncode == 1, result.stderr
        rows = {Path(r["input"]).name: r for r in read_rows(table)}
        assert sorted(rows) == ["broken.jpg", "missing.png", "p0.png", "p1.png", "p2.png"]
        assert rows["missing.png"]["status"] == "failed"
        assert rows["missing.png"]["reason"] == "no such file or folder"
        assert rows["broken.jpg"]["status"] == "failed" and rows["broken.jpg"]["labels"] == ""
        for name in ("p0", "p1", "p2"):
            row = rows[f"{name}.png"]
            labels = read_label_png(out / f"{name}.png")
            assert row["status"] == "ok" and row["reason"] == ""
            assert (row["labels"], row["overlay"]) == (
                str(out / f"{name}.png"), str(out / f"{name}_overlay.jpg")
            )  # fmt: skip
            assert (int(row["height"]), int(row["width"])) == labels.shape
            assert int(row["bytes"]) == (src / f"{name}.png").stat().st_size
            fractions = [float(row[k]) for k in row if k.startswith("fraction_")]
            assert len(fractions) == 21
            expected = np.bincount(labels.ravel(), minlength=21) / labels.size
            np.testing.assert_allclose(fractions, expected, rtol=1e-5)


def test_a_killed_run_leaves_the_rows_of_what_it_wrote(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGKILL: the journal holds a row for every result written (flushed as each finished);
    SIGTERM: the manifest is published with them."""
    model, src = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in"
    src.mkdir()
    for i in range(80):
        cv2.imwrite(str(src / f"{i:03d}.png"), scene(96, 128, i))
    for sig in (signal.SIGKILL, signal.SIGTERM):
        out, table = tmp_path / f"out{sig}", tmp_path / f"m{sig}.csv"
        process = subprocess.Popen(
            [FCN_PREDICT, src, "-o", out, "--model", model, "--manifest", table],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 3:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        written = {str(p) for p in out.glob("*.png")}
        assert 3 <= len(written) < 80
        if sig == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL and not table.exists()
            rows = read_rows(journal_path(table))
        else:
            assert process.returncode == 143 and stderr.strip() == "terminated", stderr
            assert not journal_path(table).exists()
            rows = read_rows(table)
        assert {r["labels"] for r in rows} <= written and len(rows) >= len(written) - 1
        assert all(r["status"] == "ok" for r in rows)


def test_the_manifest_is_never_an_input_nor_in_a_result_s_way(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from test_video import write_clip

    model, src, out = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in", tmp_path / "out"
    src.mkdir()
    table = src / "list.csv"
    table.write_text("a user's table\n")
    refused = run(table, "-o", out, "--model", model, "--manifest", table)
    assert refused.returncode == 2 and "--manifest" in refused.stderr, refused.stderr
    assert table.read_text() == "a user's table\n" and not out.exists()
    names = tmp_path / "names.csv"  # nor the class names it would be written with
    names.write_text("".join(f"c{i}\n" for i in range(21)))
    refused = run(table, "-o", out, "--model", model, "--classes", names, "--manifest", names)
    assert refused.returncode == 2 and "the input --classes" in refused.stderr, refused.stderr
    assert names.read_text().startswith("c0\nc1\n") and not out.exists()

    write_clip(src / "run.csv.mp4", 2, fourcc="mp4v")  # its frames would go to out/run.csv/
    result = run(src / "run.csv.mp4", "-o", out, "--model", model, "--manifest", out / "run.csv")
    assert result.returncode == 0, result.stderr
    assert "is written as run.csv-2/" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["run.csv", "run.csv-2"]
    (row,) = read_rows(out / "run.csv")
    assert row["status"] == "ok" and row["labels"] == str(out / "run.csv-2")
    assert row["frames"] == "2" and int(row["bytes"]) == (src / "run.csv.mp4").stat().st_size


def test_a_name_that_is_not_utf8_is_escaped_in_both_formats(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Before: UnicodeEncodeError from the CSV writer and a cut manifest (Parquet likewise)."""
    import pyarrow.parquet as pq

    model, src = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in"
    src.mkdir()
    png = cv2.imencode(".png", scene(16, 16, 1))[1].tobytes()
    (src / os.fsdecode(b"raw\xff.png")).write_bytes(png)  # cv2.imwrite segfaults on the name
    for suffix in ("csv", "parquet"):
        table = tmp_path / f"m.{suffix}"
        result = run(src, "-o", tmp_path / suffix, "--model", model, "--manifest", table)
        assert result.returncode == 0, result.stderr
        rows = read_rows(table) if suffix == "csv" else pq.read_table(table).to_pylist()
        assert [(r["input"], r["status"]) for r in rows] == [(f"{src}/raw\\udcff.png", "ok")]


def test_a_video_s_row_has_its_class_fractions(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from test_video import write_clip

    from fcn_deploy.bulk.video import VideoResult, frame_file

    if "class_pixels" not in {f.name for f in dataclasses.fields(VideoResult)}:
        pytest.skip("VideoResult.class_pixels (pixels per class over a video) is not here yet")
    model, out = make_checkpoint("fcn8s", width=0.0625), tmp_path / "out"
    clip = write_clip(tmp_path / "clip.mp4", 3, fourcc="mp4v")
    result = run(clip, "-o", out, "--model", model, "--manifest", tmp_path / "m.csv")
    assert result.returncode == 0, result.stderr
    (row,) = read_rows(tmp_path / "m.csv")
    counts = sum(
        np.bincount(read_label_png(out / "clip" / frame_file(i)).ravel(), minlength=21)
        for i in range(3)
    )
    fractions = [float(row[k]) for k in row if k.startswith("fraction_")]
    np.testing.assert_allclose(fractions, counts / counts.sum(), rtol=1e-5)
    assert os.path.samefile(row["labels"], out / "clip")
