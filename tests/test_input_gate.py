"""The untrusted-input gate: images decoded only after their header, in a process a crash cannot
take down where their decoder trusts the file; only regular files read; one escaped line per
input; external data found wherever an ONNX file keeps a tensor.

Each case here failed before the gate existed: a lying JPEG 2000 killed fcn-predict (exit 139), a
PNG text-chunk bomb stopped its run with a ValueError, a FIFO hung it, ``--classes /dev/zero``
read until MemoryError, a file name with a newline forged an ``error:`` line.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from serve_helpers import alive

from fcn_deploy import FCNError, save_checkpoint
from fcn_deploy._decoder import DecodeFailed, decoder_process
from fcn_deploy.imageio import ImageHeader, _decode, decode_image_bytes, read_image, read_label_png
from fcn_deploy.models import create_model
from fcn_deploy.serve.server import process_tree

BIN = Path(sys.executable).parent


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``png`` with ``chunk`` right after its IHDR (where text and ICC chunks sit)."""
    return png[:33] + chunk + png[33:]


def lying_jpeg2000(folder: Path) -> Path:
    """The 1.5 KB JPEG 2000 whose ``ihdr`` box says 64×64 while its codestream is 10500×10500:
    Pillow reads 64×64 and OpenJPEG, decoding it, segfaults."""
    big = folder / "big.jp2"
    cv2.imwrite(str(big), np.full((10500, 10500), 90, np.uint8),
                [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 10])  # fmt: skip
    data = bytearray(big.read_bytes())
    at = data.index(b"ihdr") + 4
    data[at : at + 8] = struct.pack(">II", 64, 64)
    big.unlink()
    lie = folder / "lie.jp2"
    lie.write_bytes(bytes(data))
    return lie


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate")
    torch.manual_seed(0)
    save_checkpoint(create_model("fcn32s", num_classes=7, width=0.0625), root / "m7.pt")
    good = root / "good"
    good.mkdir()
    for k in range(3):
        cv2.imwrite(str(good / f"g{k}.png"), np.full((40, 56, 3), 40 * k, np.uint8))
    lying_jpeg2000(root)
    _, png = cv2.imencode(".png", np.full((8, 8, 3), 7, np.uint8))
    bomb = zlib.compress(b"A" * (4 << 20), 9)  # 4 KB that inflate to 4 MiB
    (root / "ztxt.png").write_bytes(
        with_chunk(png.tobytes(), png_chunk(b"zTXt", b"note\0\0" + bomb))
    )
    (root / "iccp.png").write_bytes(
        with_chunk(png.tobytes(), png_chunk(b"iCCP", b"icc\0\0" + bomb))
    )
    return root


def run(*args: object, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


# -- images ---------------------------------------------------------------------------------------


def test_a_jpeg2000_whose_header_lies_is_refused_and_the_run_goes_on(
    inputs: Path, tmp_path: Path
) -> None:
    """Before: fcn-predict exited 139 (SIGSEGV in OpenJPEG) with 1 of the good images written and
    no summary. Now the file is one error line naming both sizes; the others are written."""
    lie = inputs / "lie.jp2"
    assert len(lie.read_bytes()) < 2000
    with pytest.raises(FCNError, match=r"JP2 header says 64x64 \(WxH\) but its codestream "
                       r"10500x10500"):  # fmt: skip
        read_image(lie)
    folder = tmp_path / "in"
    folder.mkdir()
    for path in (*sorted((inputs / "good").iterdir()), lie):
        (folder / path.name).write_bytes(path.read_bytes())
    result = run(BIN / "fcn-predict", inputs / "m7.pt", folder, "-o", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lie.jp2" in errors[0] and "Traceback" not in result.stderr
    assert "3 image(s)" in result.stdout and "1 failed" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g0.png", "g1.png", "g2.png"]


def test_a_decoder_crash_is_one_error_for_that_file_and_the_next_decodes(inputs: Path) -> None:
    """The decoder process is what keeps a crash from the run: the same lying file sent past the
    header check (as if the check did not know this lie) kills only the decoder process."""
    data = (inputs / "lie.jp2").read_bytes()
    with pytest.raises(FCNError, match=r"lie\.jp2: not a readable JPEG2000 image \(the decoder "
                       r"crashed \(SIG(SEGV|BUS|ABRT)\)"):  # fmt: skip
        _decode(data, ImageHeader("JPEG2000", 64, 64), "lie.jp2")
    picture = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    _, tiff = cv2.imencode(".tif", picture)
    np.testing.assert_array_equal(decode_image_bytes(tiff.tobytes(), 100), picture)
    # pixels of another size than the header's are refused before this process receives them
    with pytest.raises(FCNError, match=r"its header says 10x10 \(WxH\) but its pixels are 40x30"):
        _decode(tiff.tobytes(), ImageHeader("TIFF", 10, 10), "t.tif")


@pytest.mark.parametrize("chunk", ["ztxt", "iccp"])
def test_a_png_text_chunk_bomb_is_one_error_and_the_run_goes_on(
    inputs: Path, tmp_path: Path, chunk: str
) -> None:
    """Before: Pillow's ValueError (MAX_TEXT_CHUNK) stopped fcn-predict's whole run with an
    empty output folder."""
    bomb = inputs / f"{chunk}.png"
    assert len(bomb.read_bytes()) < 5000
    with pytest.raises(FCNError, match="text or colour-profile chunk inflates past 1 MB"):
        read_image(bomb)
    with pytest.raises(FCNError, match="input 'x': not a readable image"):
        decode_image_bytes(bomb.read_bytes(), 100, "input 'x'")
    result = run(BIN / "fcn-predict", inputs / "m7.pt", inputs / "good", bomb, "-o",
                 tmp_path / "out")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1 and bomb.name in result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_the_decoder_process_limits_memory_and_time_and_recovers() -> None:
    """A decode over its memory budget, or its time, fails alone; the next one is answered."""
    process = decoder_process()
    picture = cv2.resize(np.random.default_rng(1).integers(0, 255, (20, 20, 3), np.uint8),
                         (2000, 1500))  # fmt: skip
    _, tiff = cv2.imencode(".tif", picture)
    _, jp2 = cv2.imencode(".jp2", picture)
    with pytest.raises(DecodeFailed, match=r"the decoder failed|out of memory|crashed"):
        process.decode(tiff.tobytes(), 1 << 20, 30.0)  # 1 MiB for 9 MB of pixels
    with pytest.raises(DecodeFailed, match=r"ran out of (CPU )?time"):
        process.decode(jp2.tobytes(), None, 0.02)  # OpenJPEG takes ~0.4 s for these 3 MP
    np.testing.assert_array_equal(process.decode(tiff.tobytes(), None, 30.0), picture)


def test_the_decoder_process_is_shared_by_threads_and_forks() -> None:
    """Threads take turns on one process; a forked child starts its own and leaves the
    parent's alone."""
    rng = np.random.default_rng(2)
    pictures = [rng.integers(0, 255, (20 + k, 30, 3), np.uint8) for k in range(8)]
    files = [cv2.imencode(".tif", p)[1].tobytes() for p in pictures]
    results: dict[int, np.ndarray | None] = {}

    def work(k: int) -> None:
        for _ in range(5):
            results[k] = decode_image_bytes(files[k], 100)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for k, picture in enumerate(pictures):
        np.testing.assert_array_equal(results[k], picture)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: decode through a process of its own, report, leave at once
        try:
            ok = np.array_equal(decode_image_bytes(files[3], 100), pictures[3])
            os.write(writer, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(writer)
    assert os.read(reader, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(reader)
    np.testing.assert_array_equal(decode_image_bytes(files[5], 100), pictures[5])


def test_every_format_fcn_predict_collects_decodes_as_opencv_does(tmp_path: Path) -> None:
    """In-process (PNG, JPEG) or in the decoder process, the pixels are OpenCV's."""
    picture = np.random.default_rng(3).integers(0, 255, (64, 96, 3), np.uint8)
    for suffix in (".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm", ".jp2"):
        path = tmp_path / f"p{suffix}"
        cv2.imwrite(str(path), picture)
        np.testing.assert_array_equal(read_image(path), cv2.imread(str(path)), err_msg=suffix)
    gray = tmp_path / "g.pgm"
    cv2.imwrite(str(gray), picture[:, :, 0])
    assert read_image(gray).shape == (64, 96, 3)


def test_a_progressive_jpeg_is_decoded_in_the_decoder_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: decoded in process, unlimited: a 280 KB progressive JPEG repeating one scan 300
    times kept libjpeg busy 25 s at 64 MP (2,000 scans: 176 s). Its time is limited now."""
    import fcn_deploy._decoder as decoder
    from fcn_deploy.imageio import read_header

    picture = np.random.default_rng(4).integers(0, 255, (48, 64, 3), np.uint8)
    path = tmp_path / "p.jpg"
    cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert read_header(path.read_bytes()).format == "progressive JPEG"
    used, real = [], decoder.decoder_process
    monkeypatch.setattr(decoder, "decoder_process", lambda: used.append(1) or real())
    np.testing.assert_array_equal(read_image(path), cv2.imread(str(path)))
    assert used, "decoded in process"
    cv2.imwrite(str(path), picture)  # baseline: in process, as before
    assert read_header(path.read_bytes()).format == "JPEG"


def test_an_irregular_png_is_decoded_in_the_decoder_process(tmp_path: Path) -> None:
    """Found by the fuzzing campaign: a 1.2 KB grey-and-alpha PNG with a stray animation chunk
    (acTL) and two PLTE chunks made OpenCV segfault in process. A PNG whose chunks libpng would
    take an error path on (or that OpenCV reads as animated) goes to the decoder process."""
    from fcn_deploy.imageio import read_header

    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 38, 8, 4, 0, 0, 0))
    idat = png_chunk(b"IDAT", bytes.fromhex(
        "789cedc13101000000c2a0f54f6d0a3fa00000000000000000000000e06d2ebe0001"))  # fmt: skip
    forged = b"".join([
        b"\x89PNG\r\n\x1a\n", ihdr, png_chunk(b"PLTE", bytes(420)),
        png_chunk(b"acTL", bytes.fromhex("ffffffff00000001")), idat,
        png_chunk(b"PLTE", bytes(669)), png_chunk(b"tEXt", b"k\x00\xbf|\xfe2B"),
        png_chunk(b"IEND", b""),
    ])  # fmt: skip
    assert read_header(forged).format == "irregular PNG"
    with pytest.raises(FCNError, match=r"x\.png: not a readable irregular PNG image"):
        decode_image_bytes(forged, 100, str(tmp_path / "x.png"))  # crashed this process before
    regular = cv2.imencode(".png", np.zeros((38, 1, 4), np.uint8))[1].tobytes()
    assert read_header(regular).format == "PNG"  # in process, as before


def test_a_megapixel_limit_past_any_file_size_is_no_limit(tmp_path: Path) -> None:
    """Before: ``--max-megapixels 1e302`` raised OverflowError (the file-size cap overflowed)."""
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    assert read_image(path, 1e302).shape == (8, 8, 3)


def test_label_maps_pass_the_gate(inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(FCNError, match="text or colour-profile chunk inflates past 1 MB"):
        read_label_png(inputs / "ztxt.png")
    os.mkfifo(tmp_path / "label.png")
    with pytest.raises(FCNError, match="is a named pipe"):
        read_label_png(tmp_path / "label.png")


# -- regular files only ---------------------------------------------------------------------------


@pytest.fixture
def specials(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a character device and a symlink to one, under the names readers expect."""
    made = {}
    for name in ("m.pt", "m.onnx", "m.engine", "m.caffemodel", "c.txt", "i.png", "v.mp4"):
        made[f"fifo {name}"] = tmp_path / f"fifo-{name}"
        os.mkfifo(made[f"fifo {name}"])
        made[f"link {name}"] = tmp_path / f"link-{name}"
        made[f"link {name}"].symlink_to("/dev/zero")
    return made


SPECIAL = r"is (a named pipe \(FIFO\)|a character device \(a symlink to /dev/zero\)), not a " \
          r"regular file"  # fmt: skip


def test_special_files_are_refused_by_every_reader(specials: dict[str, Path]) -> None:
    """Each reader says what the file is, in one line, without opening it to read (a FIFO would
    block: before, the model loaders hung, ``read_classes`` read /dev/zero until MemoryError, and
    videos and engines said "no such file")."""
    from fcn_deploy import load_model
    from fcn_deploy.api import Segmenter
    from fcn_deploy.api.video import open_video
    from fcn_deploy.export import read_onnx_metadata
    from fcn_deploy.meta import read_classes
    from fcn_deploy.runtime.trt_runner import TensorRTRunner

    readers = {
        "m.pt": [load_model, lambda p: Segmenter.load(p, device="cpu")],
        "m.onnx": [read_onnx_metadata, lambda p: Segmenter.load(p, device="cpu")],
        "m.engine": [lambda p: TensorRTRunner(p, device="cpu")],
        "m.caffemodel": [load_model],
        "c.txt": [read_classes],
        "i.png": [read_image, read_label_png],
        "v.mp4": [open_video],
    }
    for name, calls in readers.items():
        for kind in ("fifo", "link"):
            for call in calls:
                with pytest.raises(FCNError, match=SPECIAL):
                    call(specials[f"{kind} {name}"])
    assert "/dev/zero is a character device, not a regular file" in _error(read_classes)


def _error(call: object) -> str:
    try:
        call("/dev/zero")  # type: ignore[operator]
    except FCNError as e:
        return str(e)
    raise AssertionError("no error")


def test_special_files_are_refused_by_the_clis(inputs: Path, specials: dict[str, Path]) -> None:
    """fcn-predict and fcn-export, as subprocesses bounded in time: one line, exit 2, no hang."""
    image = inputs / "good" / "g0.png"
    out = specials["fifo m.pt"].parent / "out"
    cases = [
        (BIN / "fcn-predict", specials["fifo m.pt"], image, "-o", out),
        (BIN / "fcn-predict", specials["link m.onnx"], image, "-o", out),
        (BIN / "fcn-predict", inputs / "m7.pt", image, "-o", out, "--classes",
         specials["fifo c.txt"]),
        (BIN / "fcn-predict", inputs / "m7.pt", image, "-o", out, "--classes", "/dev/zero"),
        (BIN / "fcn-export", specials["fifo m.caffemodel"], "-o", out.parent / "m.onnx"),
    ]  # fmt: skip
    for args in cases:
        result = run(*args, timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "not a regular file" in result.stderr, args
    assert not out.exists() and not (out.parent / "m.onnx").exists()


def test_a_class_file_is_bounded_and_read_in_linear_time(tmp_path: Path) -> None:
    """Before: /dev/zero read until MemoryError; 300,000 names took quadratic time (VOC's colour
    rule recomputed per class); a colour word such as ``²`` or 5000 digits raised ValueError."""
    from fcn_deploy.meta import read_classes

    big = tmp_path / "classes.txt"
    big.write_bytes(b"cat\n" * 300_000)
    with pytest.raises(FCNError, match=r"classes.txt is 1\.2 MB, too large for a class file"):
        read_classes(big)
    many = tmp_path / "many.txt"
    many.write_bytes(b"a\n" * 500_000)
    with pytest.raises(FCNError, match="names more than 100,000 classes"):
        read_classes(many)
    odd = tmp_path / "odd.txt"
    odd.write_text(f"cat 1 2 3\ndog\nsky \u00b2 1 1\nsea {'9' * 5000} 1 1\n")
    names, palette = read_classes(odd)
    assert names[:2] == ["cat", "dog"] and names[2] == "sky \u00b2 1 1"
    assert palette[:2] == [(1, 2, 3), (128, 0, 0)] and len(names) == len(palette) == 4


# -- one line per input ---------------------------------------------------------------------------


def test_under_ray_every_bad_file_is_named_in_one_line_and_the_rest_written(
    inputs: Path, tmp_path: Path
) -> None:
    """Before: a PNG text-chunk bomb's ValueError escaped the replica (6 of 40 images written,
    the file not named), and report errors were printed raw, so a file named
    ``bad\\nerror: FORGED LINE.png`` forged an ``error:`` line."""
    pytest.importorskip("ray", reason="needs the ray extra")
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(6):
        cv2.imwrite(str(folder / f"g{k}.png"), np.full((40, 56, 3), 30 * k, np.uint8))
    (folder / "bad\nerror: FORGED LINE.png").write_bytes(b"not an image")
    (folder / os.fsdecode(b"raw\xff.png")).write_bytes((folder / "g0.png").read_bytes())
    for bad in ("ztxt.png", "lie.jp2"):
        (folder / bad).write_bytes((inputs / bad).read_bytes())
    result = run(BIN / "fcn-predict", inputs / "m7.pt", folder, "-o", tmp_path / "out", "--ray",
                 "--manifest", tmp_path / "m.csv", timeout=600)  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert not any(line.startswith("error: FORGED") for line in errors), errors
    assert sorted(e.split(": ", 2)[1].rsplit("/", 1)[-1] for e in errors) == [
        "bad\\nerror", "lie.jp2", "raw\\udcff.png", "ztxt.png"], errors  # fmt: skip
    assert "is not UTF-8 text" in next(e for e in errors if "raw" in e)
    assert "raw\\udcff.png,failed," in (tmp_path / "m.csv").read_text()  # a manifest row too
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"g{k}.png" for k in range(6)]


def test_a_video_name_cannot_forge_a_line_through_its_progress(
    inputs: Path, tmp_path: Path
) -> None:
    """Its INFO progress line named it raw before (only warnings and errors were escaped)."""
    folder = tmp_path / "in"
    folder.mkdir()
    video = folder / "vid\nerror: FORGED VIDEO.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (32, 24))
    for k in range(3):
        writer.write(np.full((24, 32, 3), 60 * k, np.uint8))
    writer.release()
    out = tmp_path / "out\nerror: FORGED OUTPUT"
    result = run(BIN / "fcn-predict", inputs / "m7.pt", video, "-o", out)
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert not any(line.startswith("error: FORGED") for line in lines), lines
    assert any("vid\\nerror: FORGED VIDEO" in line for line in lines), lines
    assert "out\\nerror: FORGED OUTPUT" in result.stdout  # the summary names the output escaped


def test_every_log_level_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from fcn_deploy.cli._common import OneLineParser, parse_args

    parse_args(OneLineParser(prog="x"), [])
    for level in (logging.INFO, logging.WARNING):
        logging.getLogger("fcn_deploy.test").log(level, "reading %s", "a\nerror: forged")
    err = capsys.readouterr().err.splitlines()
    assert err == ["reading a\\nerror: forged", "warning: reading a\\nerror: forged"]


# -- external data wherever a tensor lives --------------------------------------------------------


def _external(tensor: object, location: str) -> None:
    import onnx

    tensor.ClearField("raw_data")  # type: ignore[attr-defined]
    tensor.data_location = onnx.TensorProto.EXTERNAL  # type: ignore[attr-defined]
    tensor.external_data.add(key="location", value=location)  # type: ignore[attr-defined]


def _tiny_model(where: str, location: str) -> object:
    """A one-node model holding a tensor in external data at ``location``, ``where``: a sparse
    initializer, a Constant's sparse_value, a Constant's value inside an If branch."""
    from onnx import TensorProto, helper, numpy_helper

    values = numpy_helper.from_array(np.ones(2, np.float32), "v")
    indices = numpy_helper.from_array(np.array([0, 3], np.int64), "i")
    sparse = helper.make_sparse_tensor(values, indices, [4])
    _external(sparse.values if where != "indices" else sparse.indices, location)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    nodes, initializers = [helper.make_node("Identity", ["x"], ["y"])], []
    graph_sparse = []
    if where in ("sparse initializer", "indices"):
        sparse.values.name = "w"
        graph_sparse = [sparse]
        nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    elif where == "Constant sparse_value":
        nodes = [helper.make_node("Constant", [], ["c"], sparse_value=sparse),
                 helper.make_node("Add", ["x", "c"], ["y"])]  # fmt: skip
    else:  # a Constant's dense value, in a subgraph
        dense = numpy_helper.from_array(np.ones(4, np.float32), "d")
        _external(dense, location)
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])
        constant = helper.make_node("Constant", [], ["b"], value=dense)
        branch = helper.make_graph([constant], "branch", [], [b])
        cond = numpy_helper.from_array(np.array(True), "cond")
        nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)]
        initializers = [cond]
    graph = helper.make_graph(nodes, "g", [x], [out], initializers, sparse_initializer=graph_sparse)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "where", ["sparse initializer", "indices", "Constant sparse_value", "Constant in a subgraph"]
)
def test_external_data_is_checked_wherever_a_tensor_lives(tmp_path: Path, where: str) -> None:
    import onnx

    from fcn_deploy.export import ort_session
    from fcn_deploy.export.external_data import external_data_files

    (tmp_path / "secret.txt").write_bytes(b"\0" * 64)
    folder = tmp_path / "model"
    folder.mkdir()
    evil = folder / "evil.onnx"
    onnx.save(_tiny_model(where, "../secret.txt"), str(evil))
    with pytest.raises(FCNError, match="outside the model's folder"):
        external_data_files(evil)
    with pytest.raises(FCNError, match="outside the model's folder"):
        ort_session(evil)
    (folder / "w.bin").write_bytes(b"\0" * 64)
    inside = folder / "inside.onnx"
    onnx.save(_tiny_model(where, "w.bin"), str(inside))
    assert external_data_files(inside) == [Path("w.bin")]  # what --triton-repo copies


def test_sigterm_still_stops_a_run_that_uses_the_decoder_process(
    inputs: Path, tmp_path: Path
) -> None:
    """The decoder process never outlives fcn-predict (its input closes at exit)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(40):
        cv2.imwrite(str(folder / f"t{k}.tif"), np.full((40, 56, 3), k, np.uint8))
    proc = subprocess.Popen([BIN / "fcn-predict", inputs / "m7.pt", folder, "-o",
                             tmp_path / "out"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    children: set[int] = set()

    for _ in range(400):
        children |= set(process_tree(proc.pid))
        out = tmp_path / "out"  # made at the start: wait for a result (a decoder has run)
        if children and out.exists() and any(p.suffix == ".png" for p in out.iterdir()):
            break
        if proc.poll() is not None:
            break
        threading.Event().wait(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert proc.returncode in (0, 143), proc.stderr.read() if proc.stderr else ""
    for _ in range(100):
        if not any(alive(pid) for pid in children):
            break
        threading.Event().wait(0.05)
    assert children and not any(alive(pid) for pid in children)
