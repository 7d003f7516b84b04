"""``fcn-predict`` as users run it: a real subprocess on a folder of real, partly broken files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_api import scene

from fcn_deploy.api import Segmenter
from fcn_deploy.cli.predict import collect_inputs, output_names
from fcn_deploy.imageio import read_label_png

FCN_PREDICT = str(Path(sys.executable).with_name("fcn-predict"))


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FCN_PREDICT, *map(str, args)], capture_output=True, text=True, timeout=240
    )


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Good images of odd sizes (grayscale, BGRA, 16-bit, a name used twice) among broken files."""
    root = tmp_path / "photos"
    (root / "day").mkdir(parents=True)
    (root / "night").mkdir()
    cv2.imwrite(str(root / "street.png"), scene(45, 61, 1))
    cv2.imwrite(str(root / "day" / "gray.png"), cv2.cvtColor(scene(33, 50, 2), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "day" / "alpha.png"), cv2.cvtColor(scene(40, 40, 3), cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(root / "day" / "deep.tif"), scene(31, 47, 4).astype(np.uint16) * 257)
    cv2.imwrite(str(root / "night" / "street.jpg"), scene(45, 61, 5))  # same stem as street.png
    good = (root / "street.png").read_bytes()
    (root / "night" / "corrupt.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "night" / "fake.jpg").write_bytes(b"this is text, not a JPEG\n")
    (root / "notes.txt").write_text("not an image, and not named like one\n")
    return root


def test_folder_with_broken_files(
    photo_folder: Path, make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    model, out = make_checkpoint("fcn8s"), tmp_path / "out"
    result = run(
        photo_folder, "-o", out, "--model", model, "--overlay", "--batch", "2", "--device", "cpu"
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "corrupt.png" in errors[0] and "fake.jpg" in errors[1], (
        result.stderr
    )
    assert "notes.txt" not in result.stderr and "WARN" not in result.stderr
    assert "photos/street.png is written as street-2.png" in result.stderr  # night/ sorts first
    assert "5 image(s)" in result.stdout and "2 failed" in result.stdout and "MP/s" in result.stdout

    written = sorted(p.name for p in out.iterdir())
    stems = ["alpha", "deep", "gray", "street", "street-2"]
    assert written == sorted(
        [f"{s}.png" for s in stems] + [f"{s}_overlay.jpg" for s in stems]
    )  # no temp files
    seg = Segmenter.load(model, device="cpu")
    sources = {
        "street": "night/street.jpg",
        "street-2": "street.png",
        "gray": "day/gray.png",
        "alpha": "day/alpha.png",
        "deep": "day/deep.tif",
    }
    for stem, source in sources.items():
        with Image.open(out / f"{stem}.png") as png:
            assert png.mode == "P"  # a palette PNG: opens coloured, reads back as ids
        labels = read_label_png(out / f"{stem}.png")
        np.testing.assert_array_equal(labels, seg.predict(photo_folder / source), err_msg=stem)
        overlay = cv2.imread(str(out / f"{stem}_overlay.jpg"))
        assert overlay is not None and overlay.shape[:2] == labels.shape


def test_files_globs_and_missing_inputs(
    photo_folder: Path, make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(
        photo_folder / "street.png",
        str(photo_folder / "day" / "*.png"),
        tmp_path / "missing.jpg",
        "-o",
        out,
        "--model",
        make_checkpoint("fcn32s"),
    )
    assert result.returncode == 1
    assert "missing.jpg: no such file or folder" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "gray.png", "street.png"]


def test_bad_model_or_option_exits_2_with_one_line(
    photo_folder: Path, tmp_path: Path, make_checkpoint: Callable[..., Path]
) -> None:
    out = tmp_path / "out"
    for args, message in [
        (["--model", tmp_path / "none.pt"], "no such model file"),
        (["--model", photo_folder / "notes.txt"], "notes.txt"),
        (["--model", make_checkpoint("fcn32s"), "--batch", "0"], "--batch"),
    ]:
        result = run(photo_folder, "-o", out, *args)
        assert result.returncode == 2, result.stderr
        assert (
            result.stderr.count("\n") == 1
            and message in result.stderr
            and "Traceback" not in result.stderr
        )
    assert not out.exists()


def test_collect_inputs_and_output_names(photo_folder: Path) -> None:
    files, problems, skipped = collect_inputs(
        [str(photo_folder), str(photo_folder / "street.png"), "nowhere/*.png"]
    )
    assert len(files) == 7 and skipped == 1  # street.png listed once; notes.txt ignored
    assert problems == ["nowhere/*.png: no image files match"]
    names = output_names([Path("a/x.png"), Path("b/x.jpg"), Path("x-2.png"), Path("c/x.png")])
    assert names == ["x", "x-2", "x-2-2", "x-3"]  # inputs stream in: only earlier ones count


@pytest.mark.slow
def test_onnx_model_with_an_image_too_large_for_it(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    from fcn_deploy.export import export_onnx

    model = tmp_path / "fcn8s-image.onnx"
    export_onnx(
        make_checkpoint("fcn8s"),
        model,
        io="image",
        max_size=(128, 160),
        max_batch=2,
        verify=False,
        progress=False,
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "small.png"), scene(60, 90, 1))
    cv2.imwrite(str(photos / "large.png"), scene(200, 260, 2))

    refused = run(photos, "-o", tmp_path / "plain", "--model", model)
    assert refused.returncode == 1 and "large.png" in refused.stderr and "--tile" in refused.stderr
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["small.png"]

    tiled = run(photos, "-o", tmp_path / "tiled", "--model", model, "--tile", "--overlap", "64")
    assert tiled.returncode == 0, tiled.stderr
    seg = Segmenter.load(model, tile=True, overlap=64)
    for name in ["small", "large"]:
        np.testing.assert_array_equal(
            read_label_png(tmp_path / "tiled" / f"{name}.png"), seg.predict(photos / f"{name}.png")
        )


def test_symlink_cycles_end_and_each_folder_is_read_once(photo_folder: Path) -> None:
    """``d/self → .`` and ``d/sub/up → ..`` made recursive globs exponential (they never ended)."""
    import threading

    from fcn_deploy._walk import glob_files, walk_files

    (photo_folder / "self").symlink_to(".")
    (photo_folder / "day" / "up").symlink_to("..")
    real = sorted(
        p.resolve() for p in photo_folder.rglob("*") if p.is_file() and not p.is_symlink()
    )
    found: dict[str, list[Path]] = {}

    def walk() -> None:
        found["walk"] = walk_files(photo_folder)
        found["glob"] = glob_files(f"{photo_folder}/**/*")
        found["inputs"] = collect_inputs([f"{photo_folder}/**/*.png"])[0]

    worker = threading.Thread(target=walk, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the walk over symlink cycles did not end"
    for key in ("walk", "glob"):
        assert sorted(p.resolve() for p in found[key]) == real, key
    assert {p.name for p in found["inputs"]} == {
        "street.png",
        "gray.png",
        "alpha.png",
        "corrupt.png",
    }


def test_results_never_read_back_and_replacements_said(
    photo_folder: Path, make_checkpoint: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``fcn-predict DIR -o DIR/out`` twice: the second run reads the same inputs (not its own
    results), writes the same files, and says it replaces the first run's."""
    from fcn_deploy.cli.predict import main

    model, out = make_checkpoint("fcn32s", width=0.0625), photo_folder / "out"
    argv = [str(photo_folder / "day"), "-o", str(out), "--model", str(model), "--overlay"]
    assert main(argv) == 0
    first = sorted(p.name for p in out.iterdir())
    assert first == sorted(
        f"{n}{s}" for n in ("gray", "alpha", "deep") for s in (".png", "_overlay.jpg")
    )
    capsys.readouterr()
    assert main([*argv[:1], str(photo_folder / "day" / "gray.png"), *argv[1:]]) == 0
    assert sorted(p.name for p in out.iterdir()) == first  # no _overlay_overlay.jpg, no gray-2
    assert "warning: 6 earlier result(s)" in capsys.readouterr().err


def test_an_image_and_a_video_whose_results_would_share_a_name(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """``x.jpg`` writes ``x.png``, and the video ``x.png.mp4`` would write its frames into the
    folder ``x.png/``: names are decided on every file an input writes, so the video becomes
    ``x.png-2/``, and a second run replaces both (the folder once replaced the label map, and the
    re-run was refused)."""
    from test_video import write_clip

    model, src, out = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "x.jpg"), scene(24, 32, 1))
    write_clip(src / "x.png.mp4", 2, fourcc="mp4v")
    for again in (False, True):
        result = run(src, "-o", out, "--model", model, "--device", "cpu")
        assert result.returncode == 0, result.stderr
        assert "x.png.mp4 is written as x.png-2/" in result.stderr
        assert ("2 earlier result(s)" in result.stderr) is again, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "x.png-2"]
    assert read_label_png(out / "x.png").shape == (24, 32)
    assert sorted(p.name for p in (out / "x.png-2").glob("*.png")) == ["000000.png", "000001.png"]


def test_long_names_are_written_and_names_too_long_refused_alone(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """A 240-character name fits every result; one whose overlay's name would pass 255 bytes is
    one line, and the others still run."""
    model, src, out = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in", tmp_path / "out"
    src.mkdir()
    long, too_long = "a" * 240, "b" * 250
    cv2.imwrite(str(src / f"{long}.png"), scene(20, 24, 1))
    cv2.imwrite(str(src / f"{too_long}.png"), scene(20, 24, 2))
    result = run(src, "-o", out, "--model", model, "--device", "cpu", "--overlay")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and too_long in errors[0] and "shorter name" in errors[0], errors
    assert sorted(p.name for p in out.iterdir()) == [f"{long}.png", f"{long}_overlay.jpg"]


def test_the_summary_line_escapes_the_output_folder(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), scene(20, 24, 1))
    out = tmp_path / "out\nerror: FORGED"
    result = run(tmp_path / "a.png", "-o", out, "--model", make_checkpoint("fcn8s", width=0.0625))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "out\\nerror: FORGED" in result.stdout
    assert (out / "a.png").is_file()


def test_a_result_in_the_way_of_an_input_found_in_a_folder_fails_that_input_alone(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Inputs found in folders are checked as their turn comes: the one whose result would
    replace a user's file is one line; the others are written (named inputs are checked before
    any work: test_owned.test_image_results_in_the_way)."""
    model, src, out = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(src / f"{name}.png"), scene(20, 24, 1))
    (out / "a.png").write_bytes(b"a user's notes")
    result = run(src, "-o", out, "--model", model, "--device", "cpu")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a.png is not an fcn-deploy output" in errors[0], errors
    assert (out / "a.png").read_bytes() == b"a user's notes" and (out / "b.png").is_file()


def test_links_into_the_output_folder_are_never_inputs(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """Nothing inside OUTDIR is read as input, whatever path leads there."""
    model, src = make_checkpoint("fcn8s", width=0.0625), tmp_path / "in"
    out = src / "results"
    src.mkdir()
    cv2.imwrite(str(src / "real.png"), scene(20, 24, 1))
    assert run(src, "-o", out, "--model", model, "--device", "cpu").returncode == 0
    (src / "link.png").symlink_to(out / "real.png")  # a label map, through a file link
    (src / "sub").mkdir()
    (src / "sub" / "into").symlink_to(out)  # the results folder, through a folder link
    again = run(src, "-o", out, "--model", model, "--device", "cpu")
    assert again.returncode == 0, again.stderr
    assert "1 image(s)" in again.stdout and "link.png" not in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["real.png"]


def test_progress_shows_rate_done_of_total_and_time_left(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """On a terminal the bar counts images against the total once all inputs are found."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import termios

    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        cv2.imwrite(str(src / f"{i}.png"), scene(20, 24, i))
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    process = subprocess.Popen(
        [FCN_PREDICT, src, "-o", tmp_path / "out", "--model", make_checkpoint("fcn8s", 0.0625)],
        stdout=subprocess.PIPE, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal's other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert process.wait(timeout=240) == 0
    text = shown.decode(errors="replace")
    assert re.search(r"predicting: 100%.*\b5/5 \[[\d:]+<[\d:]+, +[\d.]+img/s", text), text
