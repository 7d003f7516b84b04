"""Every CLI over bad options and bad files, as real subprocesses (issue 11).

Each case must exit non-zero with one line naming the problem, no traceback, and leave nothing
behind: no output file, no temp file, no empty folder. Then one test per reliability case that
a matrix row cannot show (other images still processed, SIGTERM, stale temp files, ...).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fcn_deploy import FCNError, save_checkpoint
from fcn_deploy._io import atomic_write_bytes, check_output_file, describe_file
from fcn_deploy.api import Segmenter
from fcn_deploy.imageio import (
    decode_image_bytes,
    quiet_opencv_logging,
    read_image,
    read_label_png,
)
from fcn_deploy.models import create_model

BIN = Path(sys.executable).parent


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width×height`` and (almost) no pixel data: a tiny 'bomb'."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good and bad inputs, shared read-only by every case."""
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    save_checkpoint(create_model("fcn32s", num_classes=7, width=0.0625), root / "m7.pt")
    save_checkpoint(create_model("fcn32s", num_classes=21, width=0.0625), root / "m21.pt")
    payload = torch.load(root / "m7.pt", weights_only=True)  # metadata: 21 classes; weights: 7
    payload["info"].update(num_classes=21, class_names=[], palette=None)
    torch.save(payload, root / "bad-meta.pt")
    cv2.imwrite(str(root / "ok.png"), np.full((40, 56, 3), 90, np.uint8))
    (root / "huge.png").write_bytes(png_header(20000, 20000))  # 74 bytes, 400 megapixels
    (root / "text.pt").write_text("these are not weights\n")
    (root / "empty.onnx").write_bytes(b"")
    (root / "folder.onnx").mkdir()
    (root / "a-file").write_text("x")
    # ONNX files naming external data outside their folder (a secret beside the folder)
    from conftest import with_external_data

    from fcn_deploy.export import export_onnx

    export_onnx(root / "m7.pt", root / "m7.onnx", max_size=(64, 64), max_batch=2, verify=False,
                progress=False)  # fmt: skip
    (root / "photos" / "a").mkdir(parents=True)  # pictures of which results would replace some
    for name in ("holiday.png", "cat.jpg", "cat_overlay.jpg", "a/b.png"):
        cv2.imwrite(str(root / "photos" / name), np.full((16, 16, 3), 60, np.uint8))
    edit_onnx(root / "m7.onnx", root / "five.onnx", info={"num_classes": 5})
    (root / "m7-link.onnx").symlink_to(root / "m7.onnx")
    (root / "run").mkdir()  # an earlier training run whose weights start the next one
    (root / "run" / "best.pt").write_bytes((root / "m7.pt").read_bytes())
    (root / "picture.onnx").write_bytes((root / "ok.png").read_bytes())
    (root / "secret.txt").write_text("root:secret\n")
    evil = root / "evil"
    with_external_data(root / "m7.onnx", evil / "up.onnx", "../secret.txt", write=False)
    with_external_data(root / "m7.onnx", evil / "abs.onnx", str(root / "secret.txt"), write=False)
    (evil / "link.bin").symlink_to(root / "secret.txt")
    with_external_data(root / "m7.onnx", evil / "link.onnx", "link.bin", write=False)
    return root


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The per-case output area; it must be empty again when the case is over."""
    return tmp_path


def run(cli: str, *args: object, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / cli), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))  # hidden files too


def edit_onnx(
    source: Path, dest: Path, info: dict | None = None, dims: dict | None = None, **props: str
) -> Path:
    """``source`` with its metadata changed: ``info`` fields, raw ``fcn_deploy.*`` values, or
    fixed input ``dims`` ({index: size})."""
    import onnx

    model = onnx.load(str(source))
    entries = {p.key: p for p in model.metadata_props}
    if info:
        fields = json.loads(entries["fcn_deploy.info"].value)
        fields.update(info, class_names=None, palette=None)
        entries["fcn_deploy.info"].value = json.dumps(fields)
    for key, value in props.items():
        entries[f"fcn_deploy.{key}"].value = value
    for index, size in (dims or {}).items():
        model.graph.input[0].type.tensor_type.shape.dim[index].dim_value = size
    onnx.save(model, str(dest))
    return dest


def contents(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (nothing replaced, not just nothing added)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# (cli, arguments with {f} = the inputs folder and {w} = the work folder, text the line must hold)
CASES = [
    # fcn-export
    ("fcn-export", "{f}/missing.pt -o {w}/m.onnx", "no such file"),
    ("fcn-export", "{f}/text.pt -o {w}/m.onnx", "is a text file, not a PyTorch checkpoint"),
    ("fcn-export", "{f}/bad-meta.pt -o {w}/m.onnx", "metadata says num_classes=21"),
    ("fcn-export", "{f}/m7.pt -o {f}/folder.onnx", "is a folder"),
    ("fcn-export", "{f}/m7.pt -o {w}/name", "must end in .onnx"),
    ("fcn-export", "{f}/m7.pt -o {w}/no/such/m.onnx", "does not exist"),
    ("fcn-export", "{f}/m7.pt -o {f}/a-file/m.onnx", "is not a folder"),
    ("fcn-export", "{f}/m7.pt -o /proc/m.onnx", "not writable"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --max-batch 0", "--max-batch"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --max-size 0x5", "--max-size"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --opset 5", "opset"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --seed x", "--seed"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --fp16-io", "--fp16-io"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --engine {w}/m.txt", "must end in .engine"),
    ("fcn-export", "{f}/empty.onnx --engine {w}/m.engine", "empty file (0 bytes)"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --engine {w}/m.engine --gate-threshold 0", "--gate"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --engine {w}/m.engine --workspace -1", "--workspace"),
    (
        "fcn-export",
        "{f}/m7.pt -o {w}/m.onnx --engine {w}/m.engine --min-shape 1x4x64x64 --max-shape 1x3x9x9",
        "channel dim must be 3",
    ),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --triton-repo {f}/a-file", "is a file"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --triton-repo {w}/r --triton-instances 0", "--triton"),
    ("fcn-export", "{f}/m7.pt -o {w}/m.onnx --triton-repo {w}/r --triton-queue-delay -1", "delay"),
    # fcn-predict
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/missing.pt", "no such model file"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/text.pt", "is a text file"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/empty.onnx", "empty file (0 bytes)"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/bad-meta.pt", "metadata says"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/folder.onnx", "is a folder"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/m7.pt --batch 0", "--batch"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/m7.pt --alpha 2", "--alpha"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/m7.pt --max-megapixels 0", "--max-mega"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/m7.pt --overlap -1", "--overlap"),
    ("fcn-predict", "{f}/ok.png -o {f}/a-file --model {f}/m7.pt", "is a file"),
    ("fcn-predict", "{f}/ok.png -o /proc/x --model {f}/m7.pt", "cannot create output folder"),
    ("fcn-predict", "{f}/huge.png -o {w}/out --model {f}/m7.pt", "400.0 megapixels"),
    ("fcn-predict", "{w}/nothing.png -o {w}/out --model {f}/m7.pt", "no such file"),
    ("fcn-predict", "{f}/ok.png -o {w}/out", "no inputs after the model"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/m7.pt --server x:1", "pass either"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --server 127.0.0.1:1", "no Triton server answers"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --server 127.0.0.1:1 --tile", "the server decides"),
    # fcn-serve (each fails before a server starts)
    ("fcn-serve", "{f}/missing.pt", "no such model file"),
    ("fcn-serve", "{f}/text.pt", "is a text file"),
    ("fcn-serve", "{f}/m7.pt --http-port 70000", "--http-port"),
    ("fcn-serve", "{f}/m7.pt --grpc-port 0", "--grpc-port"),
    ("fcn-serve", "{f}/m7.pt --max-batch 0", "--max-batch"),
    ("fcn-serve", "{f}/m7.pt --queue-delay -1", "--queue-delay"),
    ("fcn-serve", "{f}/m7.pt --instances 0", "--instances"),
    ("fcn-serve", "{f}/m7.pt --max-megapixels 0", "--max-megapixels"),
    ("fcn-serve", "{f}/m7.pt --model-name a/b", "model_name='a/b'"),
    # fcn-bench
    ("fcn-bench", "--sizes 64y64", "--sizes"),
    ("fcn-bench", "--batch 0", "--batch"),
    ("fcn-bench", "--iters 0", "--iters"),
    ("fcn-bench", "--threads 0", "--threads"),
    ("fcn-bench", "--min-time nan", "--min-time"),
    ("fcn-bench", "--stream 0:1-2", "--stream"),
    ("fcn-bench", "--json {w}/no/such/r.json", "does not exist"),
    ("fcn-bench", "--markdown {f}/folder.onnx", "is a folder"),
    # fcn-train
    ("fcn-train", "--out {w}/run --lr -1", "lr must be a number > 0"),
    ("fcn-train", "--out {w}/run --lr nan", "lr must be a number > 0"),
    ("fcn-train", "--out {w}/run --batch-size 0", "batch_size must be a whole number"),
    ("fcn-train", "--out {w}/run --iterations 0", "iterations"),
    ("fcn-train", "--out {w}/run --momentum 1.5", "momentum"),
    ("fcn-train", "--out {w}/run --width 0", "width"),
    ("fcn-train", "--out {w}/run --lr many", "--lr"),
    ("fcn-train", "--out {f}/a-file", "is a file"),
    ("fcn-train", "--out {w}/run --init checkpoint:{f}/text.pt", "is a text file"),
    ("fcn-train", "--resume {w}/nowhere", "no such checkpoint"),
    # fcn-eval
    ("fcn-eval", "--model {f}/m21.pt --num-images 2", "predicts 21 classes but synthetic"),
    ("fcn-eval", "--model {f}/text.pt", "is a text file"),
    ("fcn-eval", "--model {f}/m7.pt --num-images 0", "--num-images"),
    ("fcn-eval", "--model {f}/m7.pt --max-megapixels -1", "--max-megapixels"),
    ("fcn-eval", "--model {f}/m7.pt --json {w}/no/such/r.json", "does not exist"),
    ("fcn-eval", "--model {f}/m7.pt --trimap -1", "--trimap"),
    # fcn-pretrain
    ("fcn-pretrain", "--out {w}/c.pth --iterations 0", "--iterations"),
    ("fcn-pretrain", "--out {w}/c.pth --width 1.5", "got 1.5 (option --width)"),
    ("fcn-pretrain", "--out {w}/c.pth --lr nan", "--lr"),
    ("fcn-pretrain", "--out {w}/c.pth --margin -1", "--margin"),
    ("fcn-pretrain", "--out {f}/folder.onnx", "is a folder"),
    ("fcn-pretrain", "--out /proc/x/c.pth", "cannot create output folder"),
    ("fcn-pretrain", "--out {w}/c.pth --json {w}/no/such/r.json", "does not exist"),
]


@pytest.mark.parametrize(("cli", "args", "expected"), CASES, ids=[f"{c}:{a}" for c, a, _ in CASES])
def test_bad_option_or_file_is_one_line_and_leaves_nothing(
    files: Path, work: Path, cli: str, args: str, expected: str
) -> None:
    before = listing(files)
    argv = args.format(f=files, w=work).split()
    if cli == "fcn-train":  # a small net; the case's own options come last and win
        argv = ["--variant", "fcn32s", "--width", "0.0625", "--iterations", "1", *argv]
    result = run(cli, *argv, cwd=work)
    err = result.stderr
    assert result.returncode in (1, 2), err
    assert "Traceback" not in err, err
    assert expected in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert listing(work) == [] and listing(files) == before  # no output, temp file or folder
    if cli == "fcn-export":  # options and outputs are checked before the checkpoint loads
        assert "loaded" not in err, err


# Cases run in one Python process (one torch import for all): each CLI's main() in turn.
BATCH = r"""
import contextlib, io, json, sys, traceback
from importlib.metadata import entry_points

results = []
for cli, argv in json.loads(sys.argv[1]):
    main = entry_points(group="console_scripts")[cli].load()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except BaseException:
            traceback.print_exc()
            code = -1
    results.append([code, err.getvalue()])
print("\nRESULTS " + json.dumps(results))
"""

BATCHED = [
    # ONNX external data outside the model's folder: never copied, never read
    ("fcn-export", "{f}/evil/up.onnx --triton-repo {w}/r", "outside the model's folder"),
    ("fcn-export", "{f}/evil/abs.onnx --triton-repo {w}/r", "outside the model's folder"),
    ("fcn-export", "{f}/evil/link.onnx --triton-repo {w}/r", "outside the model's folder"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/evil/up.onnx", "outside the model's"),
    (
        "fcn-predict",
        "{f}/ok.png -o {w}/out --model {f}/evil/link.onnx --backend openvino",
        "outside the model's",
    ),
    ("fcn-serve", "{f}/evil/abs.onnx", "outside the model's folder"),
    ("fcn-bench", "--model {f}/evil/up.onnx --sizes 32x32 --iters 1", "outside the model's"),
    ("fcn-bench", "--model {f}/picture.onnx --sizes 32x32 --iters 1", "is a PNG image"),
    ("fcn-export", "{f}/m7.onnx --triton-repo {w}/r --triton-name 'a b'", "--triton-name"),
    ("fcn-bench", "--sizes 64x64,99999x99999", "99999x99999 (WxH) is 9999.8 megapixels"),
    ("fcn-bench", "--stream 2:64-20000", "20000x20000 (WxH) is 400.0 megapixels"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --model {f}/five.onnx", "the graph computes 7"),
    ("fcn-eval", "--model {f}/five.onnx", "the graph computes 7"),
    ("fcn-predict", "{f}/ok.png -o {w}/out --server 127.0.0.1:99999", "port must be 1..65535"),
    # fcn-predict: results never mix with (or replace) the images
    ("fcn-predict", "{f}/photos -o {f}/photos --model {f}/m7.pt", "is the input folder"),
    ("fcn-predict", "{f}/photos/a -o {f} --model {f}/m7.pt", "holds the input folder"),
    (
        "fcn-predict",
        "{f}/photos/cat.jpg {f}/photos/cat_overlay.jpg -o {f}/photos --overlay --model {f}/m7.pt",
        "cat_overlay.jpg would be replaced by the result",
    ),
    (
        "fcn-predict",
        "{f}/photos/holiday.png -o {f}/photos --model {f}/m7.pt",
        "holiday.png would be replaced",
    ),
    # an output that is an input (or another output) would replace it
    ("fcn-bench", "--model {f}/m7.onnx --json {f}/evil/../m7.onnx", "same file as the input"),
    ("fcn-bench", "--model {f}/m7.onnx --plot {f}/m7-link.onnx", "same file as the input"),
    ("fcn-bench", "--json {w}/r.json --markdown {w}/r.json", "same file as the output --json"),
    ("fcn-eval", "--model {f}/m7.pt --json {f}/m7.pt", "same file as the input --model"),
    ("fcn-export", "{f}/m7.onnx --engine {f}/m7.onnx", "same file as the input SOURCE"),
    ("fcn-pretrain", "--out {w}/c.pth --json {w}/c.pth", "same file as the output --out"),
    (
        "fcn-train",
        "--variant fcn32s --width 0.0625 --iterations 1 --out {f}/run --overwrite "
        "--init checkpoint:{f}/run/best.pt",
        "same file as the input --init",
    ),
]


def test_batched_bad_inputs_are_one_line_and_leave_nothing(files: Path, work: Path) -> None:
    """More rows of the matrix above, run by one interpreter (see BATCH)."""
    before = contents(files)
    cases = [(cli, shlex.split(args.format(f=files, w=work))) for cli, args, _ in BATCHED]
    result = subprocess.run(
        [sys.executable, "-c", BATCH, json.dumps(cases)],
        capture_output=True, text=True, timeout=600, cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.split("\nRESULTS ", 1)[1])
    for (cli, args, expected), (code, err) in zip(BATCHED, results, strict=True):
        case = f"{cli} {args}: {err}"
        assert code in (1, 2) and "Traceback" not in err and expected in err, case
        assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, case
    assert listing(work) == [] and contents(files) == before


def test_external_data_outside_the_folder_is_refused_by_every_reader(files: Path) -> None:
    from fcn_deploy.export import ort_session

    for name in ("up", "abs", "link"):
        model = files / "evil" / f"{name}.onnx"
        with pytest.raises(FCNError, match="outside the model's folder"):
            ort_session(model)
        with pytest.raises(FCNError, match="outside the model's folder"):
            Segmenter.load(model, device="cpu")


def test_predict_goes_on_after_an_unreadable_file(files: Path, work: Path) -> None:
    """A file whose read fails with PermissionError (even for root) is named; the rest is done.

    As root, ``chmod 000`` does not stop reading, so the unreadable file is ``/proc/1/mem``
    (another process's memory: EACCES for root in a container) or, where it reads, a folder
    named like an image; the file case is skipped where /proc/1/mem is readable.
    """
    unreadable = Path("/proc/1/mem")
    try:
        unreadable.open("rb").close()
        pytest.skip("/proc/1/mem is readable here; no file to simulate PermissionError with")
    except PermissionError:
        pass
    except OSError:
        pytest.skip("/proc/1/mem is not available here")
    result = run(
        "fcn-predict", unreadable, files / "ok.png", "-o", work / "out", "--model", files / "m7.pt",
        cwd=work,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "/proc/1/mem: cannot read (Permission denied)" in result.stderr
    assert "Traceback" not in result.stderr
    assert listing(work / "out") == ["ok.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod-000 files")
def test_predict_goes_on_after_a_chmod_000_file(files: Path, work: Path) -> None:
    locked = work / "locked.png"
    cv2.imwrite(str(locked), np.zeros((8, 8, 3), np.uint8))
    locked.chmod(0)
    result = run(
        "fcn-predict", locked, files / "ok.png", "-o", work / "out", "--model", files / "m7.pt",
        cwd=work,
    )  # fmt: skip
    assert result.returncode == 1 and "Permission denied" in result.stderr
    assert listing(work / "out") == ["ok.png"]


def test_unreadable_inputs_in_the_library_are_one_fcn_error(files: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(FCNError, match="is a folder, not an image file"):
        read_image(folder)
    seg = Segmenter.load(files / "m7.pt", device="cpu")
    with pytest.raises(FCNError, match="is a folder"):
        seg.predict(folder)
    text = tmp_path / "notes.png"
    text.write_text("hello\n")
    with pytest.raises(FCNError, match="not a readable image \\(a text file\\)"):
        read_image(text)


def test_fcn_train_refuses_an_earlier_runs_folder_unless_resume_or_overwrite(
    work: Path,
) -> None:
    small = ["--variant", "fcn32s", "--width", "0.0625", "--val-images", "2"]
    first = run("fcn-train", "--out", "run", "--iterations", "1", *small, cwd=work)
    assert first.returncode == 0, first.stderr
    last = (work / "run" / "last.pt").read_bytes()
    again = run("fcn-train", "--out", "run", "--iterations", "1", *small, cwd=work)
    assert (
        again.returncode == 2 and "is not empty" in again.stderr and "--overwrite" in again.stderr
    )
    assert (work / "run" / "last.pt").read_bytes() == last  # untouched
    resumed = run("fcn-train", "--resume", "run", "--iterations", "2", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    replaced = run(
        "fcn-train", "--out", "run", "--iterations", "1", "--overwrite", *small, cwd=work
    )
    assert replaced.returncode == 0, replaced.stderr
    log = (work / "run" / "log.csv").read_text().splitlines()
    assert log[-1].startswith("1,")  # a new run from iteration 1, not the resumed run's 2


def _export_until_killed(files: Path, work: Path, sig: int) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "fcn-export"), str(files / "m21.pt"), "-o", str(work / "m.onnx")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until the export is under way (it says so), then stop it
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("loaded"):
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "".join(seen) + err)


def test_sigterm_during_export_is_like_ctrl_c(files: Path, work: Path) -> None:
    result = _export_until_killed(files, work, signal.SIGTERM)
    if result.returncode == 0:
        pytest.skip("the export finished before SIGTERM arrived")
    assert result.returncode == 143, result.stderr
    assert "terminated" in result.stderr and "Traceback" not in result.stderr
    assert listing(work) == []  # no .m.onnx.*.tmp.onnx


def test_stale_temp_files_of_the_target_are_removed_at_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    dead = tmp_path / ".m.onnx.999999999.abcdefgh.tmp.onnx"  # a PID no process has
    legacy = tmp_path / ".m.onnx.k2j4_x9z.tmp.onnx"  # written before temp names held a PID
    live = tmp_path / f".m.onnx.{os.getppid()}.qwertyui.tmp.onnx"  # a writer still running
    other = tmp_path / ".n.onnx.999999999.abcdefgh.tmp.onnx"  # another target's
    for p in (dead, legacy, live, other):
        p.write_bytes(b"half")
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and other.exists()


def test_kill_9_leftover_is_cleaned_by_the_next_export(files: Path, work: Path) -> None:
    result = _export_until_killed(files, work, signal.SIGKILL)
    if result.returncode == 0:
        pytest.skip("the export finished before SIGKILL arrived")
    leftovers = [p for p in work.iterdir() if p.name.startswith(".m.onnx.")]
    again = run("fcn-export", files / "m7.pt", "-o", work / "m.onnx", "--no-verify", cwd=work)
    assert again.returncode == 0, again.stderr
    assert listing(work) == ["m.onnx"], leftovers


def tiff_claiming(path: Path, width: int, height: int) -> bytes:
    """A little-endian TIFF file whose first IFD's width and height tags are replaced."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    (offset,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[offset : offset + 2])
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[at : at + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            data[at + 8 : at + 12] = packed
    return bytes(data)


def test_image_size_limit_is_read_from_the_header(files: Path, tmp_path: Path) -> None:
    with pytest.raises(FCNError, match=r"400\.0 megapixels, over the limit max_megapixels=100"):
        read_image(files / "huge.png")  # 74 bytes; decoding would take 1.2 GB
    mid = tmp_path / "mid.png"
    mid.write_bytes(png_header(12000, 10000))
    with pytest.raises(FCNError, match=r"12000x10000 \(WxH\) is 120\.0 megapixels"):
        read_image(mid)
    with pytest.raises(FCNError, match=r"max_megapixels=0\.001"):
        read_image(files / "ok.png", max_megapixels=0.001)
    assert read_image(files / "ok.png", max_megapixels=None).shape == (40, 56, 3)
    # formats Pillow cannot open: the size comes from their own headers, never from decoding
    floats = np.random.default_rng(0).random((30, 40, 3)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "small.hdr"), floats)
    hdr = (tmp_path / "small.hdr").read_bytes().replace(b"-Y 30 +X 40", b"-Y 10000 +X 12000")
    (tmp_path / "big.hdr").write_bytes(hdr)
    cv2.imwrite(str(tmp_path / "small.tif"), floats)  # float32 RGB: Pillow cannot identify it
    (tmp_path / "big.tif").write_bytes(tiff_claiming(tmp_path / "small.tif", 12000, 10000))
    for big in ("big.hdr", "big.tif"):
        with pytest.raises(FCNError, match=r"12000x10000 \(WxH\) is 120\.0 megapixels"):
            read_image(tmp_path / big)
    with pytest.raises(FCNError, match=r"12000x10000 \(WxH\)"):  # fcn-serve's encoded model
        decode_image_bytes(hdr, 100)
    assert read_image(tmp_path / "small.tif").shape == read_image(tmp_path / "small.hdr").shape
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01binary of no known format" * 8)
    with pytest.raises(FCNError, match="no image size in its header"):
        read_image(tmp_path / "odd.bin")
    label = tmp_path / "label.png"
    from PIL import Image

    Image.new("P", (8, 8)).save(tmp_path / "anim.gif")
    with pytest.raises(FCNError, match="a GIF image; GIFs are not supported"):
        read_image(tmp_path / "anim.gif")

    Image.new("P", (300, 200)).save(label)
    with pytest.raises(FCNError, match="a label map of 300x200"):
        read_label_png(label, max_megapixels=0.01)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_segmenter_applies_the_limit_on_every_backend(
    files: Path, tmp_path: Path, backend: str
) -> None:
    model = files / "m7.pt"
    if backend == "onnxruntime":
        from fcn_deploy.export import export_onnx

        model = tmp_path / "m7.onnx"
        export_onnx(files / "m7.pt", model, verify=False, progress=False)
    seg = Segmenter.load(model, device="cpu", max_megapixels=0.002)  # 2000 pixels
    with pytest.raises(FCNError, match=r"max_megapixels=0\.002"):
        seg.predict(np.zeros((40, 56, 3), np.uint8))  # an array: 2240 pixels
    with pytest.raises(FCNError, match=r"max_megapixels=0\.002"):
        seg.predict(files / "ok.png")
    assert seg.predict(np.zeros((40, 50, 3), np.uint8)).shape == (40, 50)
    with pytest.raises(FCNError, match=r"400\.0 megapixels"):
        Segmenter.load(model, device="cpu").predict(files / "huge.png")
    with pytest.raises(FCNError, match="max_megapixels must be a positive number"):
        Segmenter.load(model, device="cpu", max_megapixels=0)


def test_output_checks() -> None:
    with pytest.raises(FCNError, match=r"must end in \.onnx"):
        check_output_file("model", (".onnx",))
    with pytest.raises(FCNError, match="is a folder"):
        check_output_file("/tmp")


def test_describe_file(tmp_path: Path) -> None:
    cases = {
        b"": "an empty file (0 bytes)",
        b"hello\n": "a text file",
        b"\x89PNG\r\n\x1a\n....": "a PNG image",
        b"PK\x03\x04....": "a ZIP archive (PyTorch's torch.save format)",
    }
    for data, what in cases.items():
        (tmp_path / "f").write_bytes(data)
        assert describe_file(tmp_path / "f") == what


def test_a_corrupt_image_is_named_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """OpenCV's own "PNG input buffer is incomplete" line is not printed before ours, in any
    process that decodes (fcn-serve and fcn-eval too, not just fcn-predict)."""
    cv2.setLogLevel(3)  # OpenCV's default (warnings), as in a fresh process
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(FCNError, match="not a readable image"):
        read_image(tmp_path / "cut.png")
    assert decode_image_bytes(data[: len(data) // 2], 100) is None
    assert "WARN" not in capfd.readouterr().err


def test_quiet_opencv_logging_works_on_this_opencv() -> None:
    """opencv 4.x wheels lack cv2.utils.logging; both 4.x and 5.x must work (issue 11, case 11)."""
    quiet_opencv_logging()
    assert (
        cv2.imdecode(np.frombuffer(b"\x89PNG\r\n\x1a\nbroken", np.uint8), cv2.IMREAD_COLOR) is None
    )


def test_exif_orientation_is_applied_wherever_a_file_is_decoded(
    files: Path, tmp_path: Path
) -> None:
    """A JPEG stored 100 wide × 60 high with Orientation 6 is shown 60 × 100 by every viewer and
    by ``cv2.imread``; labels must line up with that, from a path, bytes, or the server."""
    from PIL import Image

    from fcn_deploy.meta import SizeBounds
    from fcn_deploy.serve.server import decode_image

    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 255, (60, 100, 3), dtype=np.uint8))
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.jpg"
        exif = Image.Exif()
        exif[274] = orientation
        stored.save(path, exif=exif, quality=95)
        shown = cv2.imread(str(path), cv2.IMREAD_COLOR)  # OpenCV applies the orientation here
        np.testing.assert_array_equal(read_image(path), shown, err_msg=str(orientation))
        decoded = decode_image_bytes(path.read_bytes(), 100)
        assert decoded is not None
        np.testing.assert_array_equal(decoded, shown)
        served = decode_image(path.read_bytes(), SizeBounds(min_hw=(1, 1), max_hw=(512, 512)))
        np.testing.assert_array_equal(served, shown)
    assert read_image(tmp_path / "o6.jpg").shape == (100, 60, 3)
    seg = Segmenter.load(files / "m7.pt", device="cpu")
    assert seg.predict(tmp_path / "o6.jpg").shape == (100, 60)


def test_onnx_metadata_is_checked_against_the_graph_at_load(files: Path, tmp_path: Path) -> None:
    from fcn_deploy.export import export_onnx, read_onnx_metadata

    image = tmp_path / "image.onnx"
    export_onnx(files / "m7.pt", image, io="image", max_size=(64, 64), max_batch=2, verify=False,
                progress=False)  # fmt: skip
    assert read_onnx_metadata(image).info.num_classes == 7
    tensor = files / "m7.onnx"
    nested = "[" * 100000 + "]" * 100000
    negative = json.dumps({"min_hw": [-5, 1], "max_hw": [64, 64], "min_batch": 1, "max_batch": 2})
    damaged = [
        (edit_onnx(image, tmp_path / "a.onnx", info={"num_classes": 5}), "the graph computes 7"),
        (
            edit_onnx(tensor, tmp_path / "b.onnx", io="image"),
            "io=image takes uint8 input, the graph takes float32",
        ),
        (edit_onnx(tensor, tmp_path / "c.onnx", dims={2: 100000}), "height is fixed at 100000"),
        (edit_onnx(tensor, tmp_path / "d.onnx", bounds=nested), r"damaged .*nested too deeply"),
        (edit_onnx(tensor, tmp_path / "e.onnx", bounds=negative), r"damaged .*min_hw must be"),
    ]
    for path, fragment in damaged:
        with pytest.raises(FCNError, match=fragment):
            read_onnx_metadata(path)


def test_a_failed_checkpoint_write_is_one_line(files: Path, work: Path) -> None:
    """A full disk (here a 64 KiB file size limit) while torch writes weights: one line, exit 2,
    no temp file; an earlier file of the same name is left as it was."""
    import resource

    (work / "w.pth").write_bytes(b"the earlier weights")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    result = subprocess.run(
        [str(BIN / "fcn-pretrain"), "--out", "w.pth", "--iterations", "1", "--width", "0.0625",
         "--val-images", "1", "--batch-size", "2"],
        capture_output=True, text=True, timeout=240, cwd=work, preexec_fn=limit,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: cannot write w.pth: the write failed" in result.stderr, result.stderr
    assert listing(work) == ["w.pth"] and (work / "w.pth").read_bytes() == b"the earlier weights"


def test_file_names_cannot_forge_error_lines(
    files: Path, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name holding a newline is escaped: each problem stays one ``error:`` line."""
    from fcn_deploy.cli.predict import main

    forged = work / "x.png\nerror: forged"
    forged.write_text("not an image")
    missing = str(work / "gone\nerror: forged too.png")
    code = main([str(forged), missing, str(files / "ok.png"), "-o", str(work / "out"),
                 "--model", str(files / "m7.pt"), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("\\nerror: forged" in line for line in errors), err
