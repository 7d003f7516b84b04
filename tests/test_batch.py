"""fcn-predict on Ray Data: a real local Ray (2 CPUs, no dashboard, shut down at the end), outputs
pixel-equal to plain fcn-predict, re-runs that skip, and a replica killed with SIGKILL mid-run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
import torch
from PIL import Image
from test_api import scene

from fcn_deploy.api import Segmenter
from fcn_deploy.bulk.batch import OWNER_ENV, BatchReport, segment_dataset
from fcn_deploy.cli.predict import collect_inputs, main, output_names
from fcn_deploy.errors import FCNError
from fcn_deploy.imageio import read_label_png

FCN_PREDICT = str(Path(sys.executable).with_name("fcn-predict"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One Ray for the module: starting one costs ~10 s on 2 busy cores."""
    # "local": a Ray of its own, even where `ray start` left one that ray.init() would join
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def fcn_predict(*args: object) -> subprocess.CompletedProcess[str]:
    """With one thread, as each 1-CPU replica runs (Ray sets OMP_NUM_THREADS to its CPUs): sums
    reduced in another order can flip a near-tie pixel's argmax."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [FCN_PREDICT, *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )


def same_outputs(a: Path, b: Path) -> None:
    """The same files, label maps and overlays pixel for pixel."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name.endswith("_overlay.jpg"):
            np.testing.assert_array_equal(cv2.imread(str(a / name)), cv2.imread(str(b / name)))
        else:
            np.testing.assert_array_equal(read_label_png(a / name), read_label_png(b / name))


def same_manifests(plain: Path, ray_table: Path, out: Path) -> None:
    """The same rows but for where the results went and the order they came in."""
    import pyarrow.csv
    import pyarrow.parquet

    rows = {}
    for name, table in (
        ("plain", pyarrow.csv.read_csv(plain)),
        ("ray", pyarrow.parquet.read_table(ray_table)),
    ):
        rows[name] = sorted(
            (r["input"], r["status"], Path(r["labels"] or "-").name, r["bytes"], r["width"],
             tuple(v for k, v in r.items() if k.startswith("fraction_")))
            for r in table.to_pylist()
        )  # fmt: skip
    assert rows["plain"] == rows["ray"] and len(rows["ray"]) == 6
    assert sum(r[1] == "ok" for r in rows["ray"]) == 5
    for _, status, labels, _, _, fractions in rows["ray"]:
        if status == "ok":
            label_map = read_label_png(out / labels)
            counts = np.bincount(label_map.ravel(), minlength=21) / label_map.size
            np.testing.assert_allclose(fractions, counts, rtol=1e-5)


def test_ray_writes_what_plain_fcn_predict_writes(
    make_checkpoint: Callable[..., Path],
    tmp_path: Path,
    local_ray: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, src = make_checkpoint("fcn8s"), tmp_path / "photos"
    (src / "day").mkdir(parents=True)
    for i, (h, w) in enumerate([(40, 52), (40, 52), (33, 47), (64, 48)]):
        cv2.imwrite(str(src / f"p{i}.png"), scene(h, w, i))
    cv2.imwrite(str(src / "day" / "p0.jpg"), scene(45, 61, 7))  # same stem: p0-2
    (src / "day" / "broken.png").write_bytes(b"not a PNG")
    common = ["-o", None, "--model", model, "--overlay", "--batch", "2", "--device", "cpu"]

    plain = fcn_predict(src, *[tmp_path / "plain" if a is None else a for a in common],
                        "--manifest", tmp_path / "plain.csv")  # fmt: skip
    on_ray = fcn_predict(src, *[tmp_path / "ray" if a is None else a for a in common], "--ray",
                         "--replicas", "2", "--manifest", tmp_path / "ray.parquet")  # fmt: skip
    assert plain.returncode == on_ray.returncode == 1, on_ray.stderr
    assert "error: " + str(src / "day" / "broken.png") in on_ray.stderr
    assert "5 image(s) written, 0 already done" in on_ray.stdout and "1 failed" in on_ray.stdout
    same_outputs(tmp_path / "plain", tmp_path / "ray")
    # only fcn-predict's own lines: none of Ray's (its object store, its token, its progress)
    lines = [line.split(":")[0] for line in on_ray.stderr.splitlines()]
    assert [w for w in lines if w != "predicting"] == ["note", "error"]  # progress off a terminal
    assert len(on_ray.stdout.splitlines()) == 1
    same_manifests(tmp_path / "plain.csv", tmp_path / "ray.parquet", tmp_path / "plain")

    # the Python entry point on the running Ray: a re-run finds every output complete
    files, _, _ = collect_inputs([str(src)])
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    report = segment_dataset(
        files, model, tmp_path / "ray", names=output_names(files), replicas=1, batch_size=2,
        overlay_alpha=0.5, load_options={"device": "cpu"},
    )  # fmt: skip
    assert (report.written, report.skipped) == (0, 5)
    assert report.failed == [(str(src / "day" / "broken.png"), report.failed[0][1])]
    assert "not a readable image" in report.failed[0][1]
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}

    # fcn-predict --ray on the running Ray: it says it keeps the earlier results
    assert main([str(src), *map(str, common[:1]), str(tmp_path / "ray"), *map(str, common[2:]),
                 "--ray"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: 5 image(s) already have results" in err and "--ray keeps them" in err
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}


def test_replicas_take_the_drivers_classes_and_limits_and_fail_in_one_line(
    make_checkpoint: Callable[..., Path], tmp_path: Path, local_ray: None
) -> None:
    model, src, out = make_checkpoint("fcn8s"), tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "small.png"), scene(20, 24, 1))
    cv2.imwrite(str(src / "large.png"), scene(60, 80, 2))
    colours = [[i, 255 - i, 7 * i] for i in range(21)]
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"c{i} {r} {g} {b}\n" for i, (r, g, b) in enumerate(colours)))
    dataset = ray.data.read_images(str(src), include_paths=True)  # decoded by Ray: an image column
    report = segment_dataset(
        dataset, model, out, classes=classes,
        load_options={"device": "cpu", "max_megapixels": 30 * 40 / 1e6},
    )  # fmt: skip
    assert report.written == 1 and [Path(p).name for p, _ in report.failed] == ["large.png"]
    assert "over the limit" in report.failed[0][1]
    with Image.open(out / "small.png") as png:
        assert np.array(png.getpalette()[: 3 * 21]).reshape(21, 3).tolist() == colours

    with pytest.raises(FCNError, match=r"^a model replica failed: .*no CUDA GPU") as e:
        segment_dataset([src / "small.png"], model, tmp_path / "gpu",
                        load_options={"device": "cuda"})  # fmt: skip
    assert "\n" not in str(e.value)


def _replica_pids() -> set[int]:
    """PIDs of Ray Data's actor-pool workers (process title ``ray::MapWorker(...)``)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::MapWorker"):
                pids.add(int(entry))
    return pids


def test_a_killed_replica_is_restarted_and_every_output_written_once(
    make_checkpoint: Callable[..., Path], tmp_path: Path, local_ray: None
) -> None:
    model, src, out = make_checkpoint("fcn8s"), tmp_path / "many", tmp_path / "out"
    src.mkdir()
    for i in range(32):
        cv2.imwrite(str(src / f"f{i:02d}.png"), scene(128, 160, i))
    files = sorted(src.iterdir())
    result: dict[str, BatchReport] = {}

    def run() -> None:
        result["report"] = segment_dataset(
            files, model, out, replicas=2, batch_size=1, load_options={"device": "cpu"}
        )

    job = threading.Thread(target=run, daemon=True)
    job.start()
    killed, seen = None, set()
    deadline = time.monotonic() + 240
    while job.is_alive() and time.monotonic() < deadline:
        seen |= _replica_pids()
        if killed is None and out.is_dir() and len(list(out.glob("*.png"))) >= 2:
            killed = min(_replica_pids())
            os.kill(killed, signal.SIGKILL)  # a replica mid-run, as the OOM killer would
        time.sleep(0.02)
    job.join(timeout=max(1.0, deadline - time.monotonic()))
    assert not job.is_alive(), "the Ray job did not finish in 240 s"
    assert killed is not None, "the job finished before a replica could be killed"
    assert len(seen - {killed}) >= 2, "Ray did not start a replica in place of the killed one"

    report = result["report"]
    assert report.failed == [] and report.written + report.skipped == len(files)
    assert sorted(p.name for p in out.iterdir()) == [f"{f.stem}.png" for f in files]  # no temps
    seg, threads = Segmenter.load(model, device="cpu"), torch.get_num_threads()
    torch.set_num_threads(1)  # as the replicas ran (see fcn_predict)
    try:
        for f in files:
            np.testing.assert_array_equal(read_label_png(out / f"{f.stem}.png"), seg.predict(f))
    finally:
        torch.set_num_threads(threads)


def test_without_ray_one_line_says_how_to_install(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    shadow = tmp_path / "no-ray"
    shadow.mkdir()
    (shadow / "ray.py").write_text("raise ImportError('No module named ray')\n")
    cv2.imwrite(str(tmp_path / "a.png"), scene(20, 20))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), *sys.path])}
    result = subprocess.run(
        [FCN_PREDICT, tmp_path / "a.png", "-o", tmp_path / "out", "--model",
         make_checkpoint("fcn8s"), "--ray"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: Ray Data is not installed; install it with: pip install 'fcn-deploy[ray]' "
        "(option --ray)"
    )
    assert not (tmp_path / "out").exists()


def test_model_problems_are_one_line_before_ray_starts(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """The driver opens the model as plain fcn-predict does: no Ray started, no traceback."""
    model, image = make_checkpoint("fcn8s"), tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), scene(20, 24))
    (tmp_path / "damaged.onnx").write_bytes(b"\x08\x07 not a model")
    (tmp_path / "m.engine").write_bytes(b"engine")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    out = tmp_path / "out"
    for args, says in (
        ([tmp_path / "damaged.onnx", image, "--ray"], "damaged.onnx"),
        ([model, image, "--ray", "--variant", "fcn32s"], "fcn32s"),
        ([model, image, "--ray", "--classes", tmp_path / "three.txt"], "names 3 classes"),
        ([tmp_path / "m.engine", image, "--ray"], "TensorRT engine does not run on Ray"),
        (["--ray", model, image], "--ray takes an optional address"),
        ([model, image, "--ray", "--device", "cpu", "-o", f"file://{image.parent}"],
         "a.png would be replaced"),  # file:// is the plain path to every check
        ([model, image, "-o", "s3://bucket/x"], "needs --ray"),
    ):  # fmt: skip
        run = fcn_predict(*args, *([] if "-o" in args else ["-o", out]))
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1, run.stderr
        assert says in run.stderr, (says, run.stderr)
    assert not out.exists() and not any(tmp_path.glob("file:*"))
    assert sorted(p.name for p in image.parent.iterdir()) == ["a.png"]


def test_ray_addresses_are_checked_before_any_work(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """A malformed address is refused by the parser; one nothing answers at, in a line, before
    the model loads (Ray itself retried 127.0.0.1:1 for ever, and ray:// for 41 s)."""
    model, image, out = make_checkpoint("fcn8s"), tmp_path / "a.png", tmp_path / "out"
    cv2.imwrite(str(image), scene(20, 24))
    for address, says in (
        ("bogus", "expected auto, HOST:PORT"),
        ("127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1: Connection refused"),
        ("ray://127.0.0.1:1", "cannot reach a Ray cluster at ray://127.0.0.1:1"),
    ):
        run = fcn_predict(model, image, "-o", out, f"--ray={address}")
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.splitlines()) == 1 and says in run.stderr, run.stderr
    assert not out.exists()


def test_replicas_that_cannot_run_here_are_one_line(
    make_checkpoint: Callable[..., Path], tmp_path: Path, local_ray: None
) -> None:
    """--device cuda without a GPU is refused before Ray starts; replicas that do not fit on the
    Ray started for the job (a GPU each on a CPU-only machine) once the Ray is up: Ray Data would
    wait for them for ever."""
    from fcn_deploy.bulk.batch import _check_resources

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    model, image, out = make_checkpoint("fcn8s"), tmp_path / "a.png", tmp_path / "out"
    cv2.imwrite(str(image), scene(20, 24))
    for args, says in (
        (["--device", "cuda"], "no CUDA GPU"),
        (["--gpus-per-replica", "1"], "do not fit on this machine"),
    ):
        run = fcn_predict(model, image, "-o", out, "--ray", *args)
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.splitlines()) == 1 and says in run.stderr, run.stderr
    assert "(option --gpus-per-replica)" in run.stderr
    assert not out.exists()
    with pytest.raises(FCNError, match=r"3 replica\(s\) of 1 CPU\(s\) each do not fit") as e:
        _check_resources(ray, 3, 1.0, 0.0, local=True)  # the module's Ray: 2 CPUs
    assert e.value.param == "replicas"


def test_an_unreachable_object_store_is_one_line_before_ray_starts(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), scene(20, 24))
    store = "s3://bucket/labels?endpoint_override=127.0.0.1:1&scheme=http"
    run = fcn_predict(make_checkpoint("fcn8s"), image, "-o", store, "--ray")
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert (
        run.stderr.startswith(f"error: cannot write to {store}: ")
        and "(option --output)" in run.stderr
    )


def _owned_by(pid: int) -> list[int]:
    """Processes that carry the token of a Ray that fcn-predict ``pid`` started."""
    token = f"{OWNER_ENV}={pid}-".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if any(part.startswith(token) for part in environ.split(b"\0")):
                found.append(int(entry))
    return found


def test_a_killed_driver_leaves_no_ray_and_a_rerun_resumes(
    make_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """kill -9 and SIGTERM mid-run: no process of the Ray it started is left (Ray's agents
    lingered ~90 s after kill -9; SIGTERM ended in an Abseil stack dump and exit 134), the
    manifest holds what was done, and the next run skips it."""
    model, src, out = make_checkpoint("fcn8s"), tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(40):
        cv2.imwrite(str(src / f"{i:02d}.png"), scene(96, 128, i))
    table = tmp_path / "m.csv"
    command = [FCN_PREDICT, src, "-o", out, "--model", model, "--ray", "--manifest", table]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for sig in (signal.SIGKILL, signal.SIGTERM):
        before = len(list(out.glob("*.png"))) if out.is_dir() else 0
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)  # fmt: skip
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(out.glob("*.png"))) < before + 3:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert _owned_by(process.pid), "no process carries the token of the Ray it started"
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        deadline = time.monotonic() + 30
        while _owned_by(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _owned_by(process.pid) == [], "Ray processes outlived their driver by 30 s"
        if sig == signal.SIGTERM:
            assert process.returncode == 143, stderr
            assert stderr.splitlines()[-1] == "terminated" and "SIGTERM" not in stderr, stderr
            assert not (table.parent / f"{table.name}.partial.csv").exists()
        else:
            assert (table.parent / f"{table.name}.partial.csv").is_file()
    done = len(list(out.glob("*.png")))
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"warning: {done} image(s) already have results" in rerun.stderr
    assert f"{40 - done} image(s) written, {done} already done" in rerun.stdout
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and sum(r["status"] == "skipped" for r in rows) == done
    assert sorted(p.name for p in out.iterdir()) == [f"{i:02d}.png" for i in range(40)]  # no temps
