"""``fcn-serve`` on a real Triton server (PyTriton's bundled tritonserver), loopback only.

One server per model file for the whole module (starting one takes seconds); every load loop is
bounded in count and time. Labels from the server must equal local `Segmenter.predict` pixel for
pixel: the server runs the same Segmenter on the same pixels.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import randomize
from serve_helpers import ServerProcess
from test_api import scene

import fcn_deploy
from fcn_deploy import FCNError
from fcn_deploy.api import Segmenter
from fcn_deploy.models import create_model

http = pytest.importorskip("tritonclient.http", reason="needs the serve extra (tritonclient)")
grpc = pytest.importorskip("tritonclient.grpc", reason="needs the serve extra (tritonclient)")
pytest.importorskip("pytriton", reason="needs the serve extra (nvidia-pytriton)")

from fcn_deploy.serve.client import RemoteSegmenter  # noqa: E402

MAX_SIZE = (256, 320)
FCN_PREDICT = str(Path(sys.executable).with_name("fcn-predict"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A width-0.125 FCN-8s with random score layers, as a checkpoint and as ONNX."""
    from fcn_deploy.export import export_onnx

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = randomize(create_model("fcn8s", num_classes=21, width=0.125))
    fcn_deploy.save_checkpoint(net, root / "fcn8s.pt")
    export_onnx(root / "fcn8s.pt", root / "fcn8s.onnx", max_size=MAX_SIZE, max_batch=8,
                verify=False, progress=False)  # fmt: skip
    return {"pt": root / "fcn8s.pt", "onnx": root / "fcn8s.onnx"}


def _start(model: Path, log: Path, *extra: str) -> Iterator[ServerProcess]:
    server = ServerProcess(model, log, list(extra))
    try:
        server.wait_ready()
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"fcn-serve exited {code}:\n{server.output()[-3000:]}"
        # the bad requests the tests send must not keep a model from unloading at once: before,
        # shutdown waited out both exit timeouts and killed the stubs, leaving their files
        log = server.output()
        assert "still running after" not in log and "Non-graceful" not in log, log[-3000:]


@pytest.fixture(scope="module")
def onnx_server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    # a long queue delay so that concurrent equal-size requests reliably batch
    yield from _start(models["onnx"], tmp_path_factory.mktemp("log") / "onnx.log",
                      "--queue-delay", "50000", "--max-batch", "4")  # fmt: skip


@pytest.fixture(scope="module")
def pt_server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    yield from _start(
        models["pt"], tmp_path_factory.mktemp("log") / "pt.log", "--instances", "2", "-q"
    )


def test_quiet_server_prints_no_triton_log(pt_server: ServerProcess) -> None:
    """-q: tritonserver's own log (start-up tables, CUDA notes on a CPU machine) is not shown."""
    output = pt_server.output()  # read once both models are ready: start-up is over
    assert not re.search(r"(?m)^[IWE]\d{4} ", output) and "+-----" not in output, output
    assert len(output.splitlines()) <= 5, output


def _pictures() -> dict[str, np.ndarray]:
    return {
        "odd 97x131": scene(97, 131, 1),
        "odd 1x7": scene(1, 7, 2),
        "tall 250x33": scene(250, 33, 3),
        "grayscale": cv2.cvtColor(scene(64, 90, 4), cv2.COLOR_BGR2GRAY),
        "largest": scene(*MAX_SIZE, 5),
    }


def _infer(client, module, model: str, name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    tensor = module.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor]).as_numpy("labels")


def _request(address: str, module, model: str, name: str, array: np.ndarray, dtype: str):
    """One request on a connection of its own (tritonclient clients are not thread-safe)."""
    client = module.InferenceServerClient(address)
    try:
        return _infer(client, module, model, name, array, dtype)
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pt", "onnx"])
def test_server_labels_equal_local_predict(
    kind: str, models: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    server: ServerProcess = request.getfixturevalue(f"{kind}_server")
    local = Segmenter.load(models[kind], device="cpu")
    pictures = _pictures()
    h, g = http.InferenceServerClient(server.http), grpc.InferenceServerClient(server.grpc)
    for name, image in pictures.items():
        want = local.predict(image)
        bgr = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        for client, module in ((h, http), (g, grpc)):
            got = _infer(client, module, "fcn", "image", bgr[None], "UINT8")
            assert got.shape == (1, *image.shape[:2]) and got.dtype == np.uint8, name
            np.testing.assert_array_equal(got[0], want, err_msg=f"{kind} {name}")
        _, png = cv2.imencode(".png", image)  # the file as it is: grayscale stays grayscale
        encoded = np.array([png.tobytes()], dtype=np.object_)
        got = _infer(h, http, "fcn_encoded", "image_bytes", encoded, "BYTES")
        np.testing.assert_array_equal(got, want, err_msg=f"{kind} {name} as PNG bytes")

    # one request with a batch of three equal-size images
    base = pictures["odd 97x131"]
    batch = np.stack([base, base[::-1].copy(), base[:, ::-1].copy()])
    for client, module in ((h, http), (g, grpc)):
        got = _infer(client, module, "fcn", "image", batch, "UINT8")
        assert got.shape == (3, 97, 131)
        for k in range(3):
            np.testing.assert_array_equal(got[k], local.predict(batch[k]), err_msg=f"batch #{k}")

    # the client library: mixed sizes in one call, files as bytes, metadata from the config
    with RemoteSegmenter(server.http) as remote:
        assert remote.class_names == local.class_names and remote.palette == local.palette
        images = list(pictures.values())
        for got, image in zip(remote.predict_batch(images), images, strict=True):
            np.testing.assert_array_equal(got, local.predict(image))
    h.close()
    g.close()
    with urllib.request.urlopen(f"http://{server.http}/v2/models/fcn/config") as response:
        groups = json.load(response)["instance_group"]
    assert sum(group["count"] for group in groups) == (2 if kind == "pt" else 1)


def test_config_publishes_classes_palette_and_bounds(
    onnx_server: ServerProcess, models: dict[str, Path]
) -> None:
    local = Segmenter.load(models["onnx"], device="cpu")
    for model in ("fcn", "fcn_encoded"):
        url = f"http://{onnx_server.http}/v2/models/{model}/config"
        with urllib.request.urlopen(url, timeout=30) as response:
            config = json.load(response)
        params = {k: json.loads(v["string_value"]) for k, v in config["parameters"].items()
                  if k.startswith("fcn_deploy.")}  # fmt: skip
        assert params["fcn_deploy.class_names"] == local.class_names
        assert [tuple(c) for c in params["fcn_deploy.palette"]] == local.palette
        assert params["fcn_deploy.max_hw"] == list(MAX_SIZE)
        assert params["fcn_deploy.max_sizes"] == [list(MAX_SIZE)]
        assert params["fcn_deploy.min_hw"] == [1, 1]
        assert params["fcn_deploy.backend"] == "onnxruntime"
        assert params["fcn_deploy.precision"] == "fp32"
        assert params["fcn_deploy.verification"] == "not verified at export"
    assert config["max_batch_size"] == 0  # the encoded model is not batched
    with urllib.request.urlopen(f"http://{onnx_server.http}/v2/models/fcn/config") as response:
        config = json.load(response)
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50000
    assert [int(d) for d in config["input"][0]["dims"]] == [-1, -1, 3]


def _metric(server: ServerProcess, name: str, model: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as response:
        text = response.read().decode()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert match, f"{name} for {model} not in the metrics"
    return float(match.group(1))


@pytest.mark.slow
def test_load_random_sizes_every_response_correct(
    onnx_server: ServerProcess, models: dict[str, Path]
) -> None:
    """4 threads × 12 requests of random sizes (some equal, so they batch), HTTP and gRPC."""
    local = Segmenter.load(models["onnx"], device="cpu")
    rng = np.random.default_rng(7)
    sizes = [(int(rng.integers(1, 257)), int(rng.integers(1, 321))) for _ in range(5)] + [(64, 64)]
    pictures = {k: scene(h, w, 100 + k) for k, (h, w) in enumerate(sizes)}
    expected = {k: local.predict(p) for k, p in pictures.items()}
    executions_before = _metric(onnx_server, "nv_inference_exec_count", "fcn")
    inferences_before = _metric(onnx_server, "nv_inference_count", "fcn")
    answers: dict[tuple[int, int], int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + 240

    def worker(t: int) -> None:
        module, address = (grpc, onnx_server.grpc) if t % 2 else (http, onnx_server.http)
        chooser = random.Random(t)
        for i in range(12):
            if time.monotonic() > deadline:
                return
            k = chooser.choice(list(pictures))
            got = _request(address, module, "fcn", "image", pictures[k][None], "UINT8")
            np.testing.assert_array_equal(got[0], expected[k], err_msg=f"thread {t} request {i}")
            with lock:
                answers[(t, i)] = answers.get((t, i), 0) + 1

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(worker, t) for t in range(4)]:
            future.result()  # re-raises a wrong answer or a failed request
    assert sorted(answers) == [(t, i) for t in range(4) for i in range(12)], "lost requests"
    assert set(answers.values()) == {1}, "a request was answered twice"

    # a burst of equal-size requests is batched: fewer model executions than images
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_request, onnx_server.http, http, "fcn", "image",
                               pictures[5][None], "UINT8") for _ in range(8)]  # fmt: skip
        for f in futures:
            np.testing.assert_array_equal(f.result()[0], expected[5])
    images = _metric(onnx_server, "nv_inference_count", "fcn") - inferences_before
    executions = _metric(onnx_server, "nv_inference_exec_count", "fcn") - executions_before
    assert images == 48 + 8
    assert executions < images, f"{executions} executions for {images} images: nothing batched"


BAD_REQUESTS = [
    # (what, model, input, array, Triton dtype, a fragment of the expected error)
    ("float pixels", "fcn", "image", np.zeros((1, 8, 8, 3), np.float32), "FP32", "data-type"),
    ("rank 2 image", "fcn", "image", np.zeros((1, 8, 8), np.uint8), "UINT8", "shape"),
    ("4 channels", "fcn", "image", np.zeros((1, 8, 8, 4), np.uint8), "UINT8", "shape"),
    # answered before PyTriton's transport, which cannot carry it (it raised: HTTP 500)
    ("zero size", "fcn", "image", np.zeros((1, 0, 8, 3), np.uint8), "UINT8", "zero dimension"),
    ("too large", "fcn", "image", np.zeros((1, 300, 64, 3), np.uint8), "UINT8", "larger than"),
    ("undecodable", "fcn_encoded", "image_bytes", np.array([b"not an image"], dtype=np.object_),
     "BYTES", "do not decode"),
    ("empty file", "fcn_encoded", "image_bytes", np.array([b""], dtype=np.object_), "BYTES",
     "do not decode"),
]  # fmt: skip


@pytest.mark.slow
def test_one_remote_segmenter_shared_by_threads(
    onnx_server: ServerProcess, models: dict[str, Path]
) -> None:
    """One RemoteSegmenter used by 6 threads at once (HTTP deadlocked in gevent's connection
    pool): every answer right, none stuck (daemon threads, a bounded wait)."""
    local = Segmenter.load(models["onnx"], device="cpu")
    pictures = [scene(40 + 7 * k, 52, 200 + k) for k in range(6)]
    expected = [local.predict(p) for p in pictures]
    for protocol, address in (("http", onnx_server.http), ("grpc", onnx_server.grpc)):
        results: dict[int, list[np.ndarray]] = {}
        with RemoteSegmenter(address, protocol=protocol) as seg:

            def work(k: int, seg: RemoteSegmenter = seg, out: dict = results) -> None:
                out[k] = [seg.predict(pictures[k]) for _ in range(4)]

            threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(6)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 120
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            assert not any(t.is_alive() for t in threads), f"{protocol}: threads stuck"
        assert sorted(results) == list(range(6)), f"{protocol}: a thread failed"
        for k, answers in results.items():
            for got in answers:
                np.testing.assert_array_equal(got, expected[k], err_msg=f"{protocol} {k}")


@pytest.mark.slow
def test_a_server_that_loses_its_ports_says_so_and_leaves_the_winner_alone(
    onnx_server: ServerProcess, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fcn-serve started together both find the ports free; the loser's tritonserver cannot
    bind. It must say the ports are taken and never talk to (unload from) the winner."""
    import fcn_deploy.serve.server as module

    monkeypatch.setattr(module, "_check_port_free", lambda *args: None)  # both checked at once
    config = module.ServeConfig(
        http_port=onnx_server.http_port, grpc_port=onnx_server.grpc_port,
        metrics_port=onnx_server.metrics_port, exit_timeout=5,
    )  # fmt: skip
    loser = module.FCNServer([Segmenter.load(models["onnx"], device="cpu")], config)
    with pytest.raises(FCNError, match="in use by another fcn-serve") as caught:
        loser.start()
    assert "403" not in str(caught.value)
    client = http.InferenceServerClient(onnx_server.http)
    try:
        assert client.is_model_ready("fcn") and client.is_model_ready("fcn_encoded")
    finally:
        client.close()


def test_stale_workspaces_of_dead_servers_are_removed(tmp_path: Path) -> None:
    from fcn_deploy.serve.server import WORKSPACE_PREFIX, remove_stale_workspaces

    dead = tmp_path / f"{WORKSPACE_PREFIX}999999999-abcd"  # no process has this pid
    live = tmp_path / f"{WORKSPACE_PREFIX}{os.getpid()}-abcd"
    foreign = tmp_path / "workspace_k2j4x9"  # PyTriton's own naming: not ours to judge
    for folder in (dead, live, foreign):
        (folder / "model-store").mkdir(parents=True)
        (folder / "tritonserver").write_bytes(b"x")
    assert remove_stale_workspaces(tmp_path) == 1
    assert not dead.exists() and live.exists() and foreign.exists()


@pytest.mark.slow
def test_bad_files_leave_nothing_that_delays_shutdown(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """8 threads × 20 files, every third one not an image: each bad one gets its error, and the
    server still unloads at once on SIGTERM (a failed call used to pin its model: shutdown sat out
    both exit timeouts, ~65 s, and killed the stub, leaving its shared memory and files)."""
    _, png = cv2.imencode(".png", scene(40, 50, 3))
    server = ServerProcess(models["pt"], tmp_path / "log.txt")
    try:
        server.wait_ready()

        def work(t: int) -> list[str]:
            client = http.InferenceServerClient(server.http)
            answers = []
            try:
                for i in range(20):
                    data = b"garbage" if i % 3 == 0 else png.tobytes()
                    x = http.InferInput("image_bytes", [1], "BYTES")
                    x.set_data_from_numpy(np.array([data], dtype=np.object_))
                    try:
                        answers.append(
                            str(client.infer("fcn_encoded", [x]).as_numpy("labels").shape)
                        )
                    except Exception as e:
                        answers.append("do not decode" if "do not decode" in str(e) else str(e))
            finally:
                client.close()
            return answers

        with ThreadPoolExecutor(8) as pool:
            answers = [a for f in [pool.submit(work, t) for t in range(8)] for a in f.result()]
        assert sorted(set(answers)) == ["(40, 50)", "do not decode"] and len(answers) == 160
    finally:
        code = server.stop()
    log = server.output()
    assert code == 0 and "still running after" not in log and "Non-graceful" not in log, log[-3000:]


def _send_raw(server: ServerProcess, model: str, name: str, array: np.ndarray, dtype: str):
    """One request as given, wrong dtype included (tritonclient checks only array vs dtype)."""
    return _request(server.http, http, model, name, array, dtype)


@pytest.mark.slow
def test_bad_requests_get_errors_and_good_ones_still_succeed(
    onnx_server: ServerProcess, models: dict[str, Path]
) -> None:
    local = Segmenter.load(models["onnx"], device="cpu")
    good = scene(40, 52, 9)
    want = local.predict(good)
    _, png = cv2.imencode(".png", good)
    jobs = []
    for _ in range(2):  # every bad request twice, each between good ones
        for bad in BAD_REQUESTS:
            jobs.append(("good", "fcn", "image", good[None], "UINT8", None))
            jobs.append(bad)
            jobs.append(("good file", "fcn_encoded", "image_bytes",
                         np.array([png.tobytes()], dtype=np.object_), "BYTES", None))  # fmt: skip

    def run(job):
        _, model, name, array, dtype, _ = job
        try:
            return job, _send_raw(onnx_server, model, name, array, dtype), None
        except Exception as e:
            return job, None, e

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs))
    for (what, _, _, _, _, fragment), labels, error in results:
        if fragment is None:
            assert error is None, f"{what} failed: {error}"
            np.testing.assert_array_equal(labels.reshape(want.shape), want, err_msg=what)
        else:
            assert error is not None, f"{what} was answered with labels"
            assert fragment in str(error), f"{what}: {error}"
    from fcn_deploy.serve.client import server_error_line

    # the error says what is wrong in one line
    for what, model, name, array, dtype, fragment in BAD_REQUESTS:
        with pytest.raises(Exception) as caught:
            _send_raw(onnx_server, model, name, array, dtype)
        line = server_error_line(caught.value)
        assert fragment in line and "\n" not in line, f"{what}: {line!r}"
        assert caught.value.status() == "400", f"{what}: HTTP {caught.value.status()}"
        assert "Traceback" not in str(caught.value), what
    assert _send_raw(onnx_server, "fcn", "image", good[None], "UINT8").shape == (1, 40, 52)


def _file(data: bytes) -> np.ndarray:
    return np.array([data], dtype=np.object_)


@pytest.mark.slow
def test_refusals_are_400_and_one_log_line_and_shutdown_keeps_the_exit_timeout(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """One server for the input gate's request cases, then its shutdown with clients connected.

    Before: a zero-size tensor was HTTP 500 with PyTriton's traceback; a header-only PNG of
    9000x9000 (under the megapixel limit, over the model's bounds) was decoded before the bounds
    were checked (here it does not decode at all, so it was "do not decode"; a real 777 KB one
    cost 26 s and 1.97 GB); every refusal put a traceback in the server log; and tritonserver
    waited out its whole exit timeout for idle client connections after fcn-serve had drained
    its requests, so a shutdown took the timeout twice over."""
    from test_cli_errors import png_header
    from test_input_gate import lying_jpeg2000, png_chunk, with_chunk

    from fcn_deploy.serve.client import server_error_line

    _, png = cv2.imencode(".png", scene(8, 8, 1))
    text_bomb = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"A" * (4 << 20), 9))
    refused = [
        ("zero size", "fcn", "image", np.zeros((1, 0, 8, 3), np.uint8), "UINT8",
         "input 'image' has a zero dimension"),
        ("over the bounds", "fcn_encoded", "image_bytes", _file(png_header(9000, 9000)), "BYTES",
         "9000x9000 (HxW) is larger than this model accepts"),
        ("lying JPEG 2000", "fcn_encoded", "image_bytes",
         _file(lying_jpeg2000(tmp_path).read_bytes()), "BYTES", "JP2 header says 64x64"),
        ("PNG text bomb", "fcn_encoded", "image_bytes",
         _file(with_chunk(png.tobytes(), text_bomb)), "BYTES", "inflates past 1 MB"),
    ]  # fmt: skip
    exit_timeout = 20
    server = ServerProcess(models["onnx"], tmp_path / "serve.log",
                           ["--exit-timeout", str(exit_timeout)])  # fmt: skip
    try:
        server.wait_ready()
        good = scene(40, 52, 9)
        for what, model, name, array, dtype, fragment in refused:
            with pytest.raises(Exception) as caught:
                _send_raw(server, model, name, array, dtype)
            line = server_error_line(caught.value)
            assert caught.value.status() == "400", f"{what}: {caught.value}"
            assert fragment in line and "Traceback" not in str(caught.value), f"{what}: {line}"
            assert _send_raw(server, "fcn", "image", good[None], "UINT8").shape == (1, 40, 52)
        log = server.output()
        assert "Traceback" not in log, log[-3000:]
        assert log.count("refused a request:") == 3, log[-3000:]  # the encoded ones, one line each
        clients = [http.InferenceServerClient(server.http) for _ in range(3)]
        for client in clients:  # each keeps its keep-alive connection open, idle
            x = http.InferInput("image", [1, 40, 52, 3], "UINT8")
            x.set_data_from_numpy(good[None])
            client.infer("fcn", [x])
        start = time.monotonic()
        code = server.stop()
        took = time.monotonic() - start
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert code == 0 and took < exit_timeout, f"exit {code} after {took:.1f} s"
    for client in clients:
        client.close()


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FCN_PREDICT, *map(str, args)], capture_output=True, text=True,
                          timeout=240)  # fmt: skip


@pytest.mark.slow
def test_fcn_predict_server_equals_local(
    onnx_server: ServerProcess, models: dict[str, Path], tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "street.png"), scene(45, 61, 21))
    cv2.imwrite(str(photos / "gray.png"), cv2.cvtColor(scene(33, 50, 22), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(photos / "same.jpg"), scene(45, 61, 23))
    (photos / "broken.png").write_bytes(b"not a png")
    local = _run(photos, "-o", tmp_path / "local", "--model", models["onnx"], "--device", "cpu",
                 "--overlay", "--batch", "2")  # fmt: skip
    for server in (onnx_server.http, f"grpc://{onnx_server.grpc}"):
        out = tmp_path / server.replace(":", "_").replace("/", "")
        remote = _run(photos, "-o", out, "--server", server, "--overlay", "--batch", "2")
        assert remote.returncode == local.returncode == 1, remote.stderr  # broken.png
        assert "broken.png" in remote.stderr and "3 image(s)" in remote.stdout
        names = sorted(p.name for p in (tmp_path / "local").iterdir())
        assert sorted(p.name for p in out.iterdir()) == names
        for name in names:
            assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_fcn_predict_server_down_or_model_missing(
    onnx_server: ServerProcess, tmp_path: Path
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), scene(20, 20, 1))
    from serve_helpers import free_ports

    (port,) = free_ports(1)
    for server in (f"127.0.0.1:{port}", f"grpc://127.0.0.1:{port}"):
        result = _run(tmp_path / "a.png", "-o", tmp_path / "out", "--server", server)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "no Triton server answers" in result.stderr
    result = _run(tmp_path / "a.png", "-o", tmp_path / "out", "--server", onnx_server.http,
                  "--model-name", "nope")  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "no model 'nope'" in result.stderr
    with pytest.raises(FCNError, match="no model 'nope'"):
        RemoteSegmenter(f"grpc://{onnx_server.grpc}", model_name="nope")


@pytest.mark.slow
def test_sigterm_during_load_exits_cleanly(models: dict[str, Path], tmp_path: Path) -> None:
    """SIGTERM while 3 clients send requests: exit 0, nothing left running, no wrong answer.

    Requests in flight at the signal are answered (correctly); later ones are refused.
    """
    server = ServerProcess(models["onnx"], tmp_path / "serve.log")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    local = Segmenter.load(models["onnx"], device="cpu")
    image = scene(*MAX_SIZE, 31)
    want = local.predict(image)
    outcomes: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 60

    def client(t: int) -> None:
        c = http.InferenceServerClient(server.http)
        try:
            for _ in range(200):
                if time.monotonic() > stop_at:
                    return
                try:
                    got = _infer(c, http, "fcn", "image", image[None], "UINT8")
                except Exception:  # the server stopped accepting: go away, as a client would
                    with lock:
                        outcomes.append("refused")
                    return
                np.testing.assert_array_equal(got[0], want)
                with lock:
                    outcomes.append("answered")
        finally:
            c.close()

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(client, t) for t in range(3)]
        while outcomes.count("answered") < 6 and time.monotonic() < stop_at:
            time.sleep(0.05)
        code = server.stop()  # SIGTERM with requests in flight; asserts nothing survives
        for f in futures:
            f.result()
    assert code == 0, server.output()[-3000:]
    assert outcomes.count("answered") >= 6
    assert "stopped" in server.output()


def test_fcn_serve_bad_options_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    """A busy port, a missing model and a bad option: exit 2, one line, nothing started."""
    import socket

    from serve_helpers import FCN_SERVE, free_ports

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FCN_SERVE, *map(str, args)], capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    http_port, grpc_port, metrics_port = free_ports(3)
    ports = ("--http-port", http_port, "--grpc-port", grpc_port, "--metrics-port", metrics_port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", grpc_port))
        busy.listen()
        result = run(models["onnx"], "--device", "cpu", *ports)
    assert result.returncode == 2, result.stderr
    assert f"grpc_port={grpc_port} cannot be used" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr

    result = run(tmp_path / "missing.onnx", *ports)
    assert result.returncode == 2 and result.stderr.strip() == (
        f"error: {tmp_path / 'missing.onnx'}: no such model file"
    )
    result = run(models["onnx"], "--max-batch", "0", *ports)
    assert result.returncode == 2 and "argument --max-batch" in result.stderr


def test_own_libpython_leads_the_library_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend stub must load this interpreter's libpython (pyenv's), not the system's."""
    import os
    import sysconfig

    from fcn_deploy.serve.server import _prefer_own_libpython

    libdir = sysconfig.get_config_var("LIBDIR")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/opt/other:{libdir}:/usr/lib")
    _prefer_own_libpython()
    assert os.environ["LD_LIBRARY_PATH"] == f"{libdir}:/opt/other:/usr/lib"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    _prefer_own_libpython()
    assert os.environ["LD_LIBRARY_PATH"] == libdir


def test_client_address_and_error_lines() -> None:
    from fcn_deploy.serve.client import parse_server, server_error_line

    assert parse_server("127.0.0.1:8000") == ("http", "127.0.0.1:8000")
    assert parse_server("grpc://localhost:8001") == ("grpc", "localhost:8001")
    for bad in ("localhost", "ftp://a:1", "a:b"):
        with pytest.raises(FCNError, match="server="):
            parse_server(bad)
    wrapped = RuntimeError(
        "[500] Failed: TritonModelException: Model execute error: Traceback (most recent call "
        "last):\n  File \"x.py\", line 1\nfcn_deploy.errors.FCNError: input 'image_bytes': 3 "
        "bytes that do not decode as an image\n\n\nAt:\n  model.py(501): execute\n"
    )
    assert (
        server_error_line(wrapped) == "input 'image_bytes': 3 bytes that do not decode as an image"
    )
    assert server_error_line(RuntimeError("[400] unexpected shape")) == "[400] unexpected shape"


def test_encoded_images_over_the_megapixel_limit_are_refused_before_decoding() -> None:
    """A tiny file claiming 400 megapixels is refused from its header; the limit is adjustable."""
    from test_cli_errors import png_header

    from fcn_deploy.meta import SizeBounds
    from fcn_deploy.serve.server import decode_image

    bounds = [SizeBounds(min_hw=(1, 1), max_hw=None, max_batch=1)]
    with pytest.raises(FCNError, match=r"400\.0 megapixels") as info:
        decode_image(png_header(20000, 20000), bounds)
    assert info.value.param == "max_megapixels"
    _, data = cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))
    assert decode_image(data.tobytes(), bounds).shape == (30, 40, 3)
    with pytest.raises(FCNError, match=r"max_megapixels=0\.001"):
        decode_image(data.tobytes(), bounds, max_megapixels=0.001)
    # the model's bounds are checked from the header too: this file has no pixels to decode
    small = SizeBounds(min_hw=(1, 1), max_hw=(256, 320), max_batch=1)
    with pytest.raises(FCNError, match=r"9000x9000 \(HxW\) is larger than this model accepts"):
        decode_image(png_header(9000, 9000), [small])


def test_instance_handshake_race_is_recognised() -> None:
    """The load errors PyTriton 0.7 gives when an instance loses the start-up race (this one
    failed a CI run with --instances 2) restart Triton; other load errors do not."""
    from fcn_deploy.serve.server import instance_race

    refused = (
        "InferenceServerException: [400] load failed for model 'fcn_encoded': version 1 is at "
        "UNAVAILABLE state: Internal: TritonModelException: Model initialize error: Traceback "
        '(most recent call last):\n  File "/tmp/foldern71264/1/model.py", line 425, in '
        "initialize\n    inference_handler_config = get_config_from_handshake_server("
        'handshake_socket)\n  File "/tmp/foldern71264/1/communication.py", line 550, in '
        "get_config_from_handshake_server\n    sock.connect(socket_path.as_posix())\n"
        "ConnectionRefusedError: [Errno 111] Connection refused\n"
    )
    timeout = (
        "TritonModelException: Model initialize error: TimeoutError: Timeout occurred while "
        "waiting for config file /tmp/pytriton_workspace_x/fcn-config.sock"
    )
    assert instance_race(refused) and instance_race(timeout)
    assert not instance_race("model(s) fcn not ready")
    assert not instance_race("InferenceServerException: [400] load failed for model 'fcn'")


@pytest.mark.slow
def test_start_restarts_triton_after_an_instance_race(
    models: dict[str, Path],
    pt_server: ServerProcess,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The restart path: a first start that lost the race (simulated, so that the test starts
    one tritonserver, not two) is stopped, and a real second start then serves correct labels.
    Stopping it leaves alone another server's Triton below this process (it once killed it)."""
    from serve_helpers import alive, free_ports

    from fcn_deploy.serve.server import TRITON_PROCESSES, FCNServer, ServeConfig, process_tree

    others = process_tree(pt_server.proc.pid, TRITON_PROCESSES)
    assert others  # pt_server's tritonserver and stubs, grandchildren of this process

    real_launch = FCNServer._launch
    launches: list[str | None] = []

    def first_loses_the_race(self: FCNServer) -> str | None:
        launches.append(real_launch(self) if launches else "in get_config_from_handshake_server")
        return launches[-1]

    monkeypatch.setattr(FCNServer, "_launch", first_loses_the_race)
    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    segmenter = Segmenter.load(models["pt"], device="cpu", batch_size=config.max_batch)
    image = scene(48, 64)
    with (
        caplog.at_level("WARNING", "fcn_deploy.serve.server"),
        FCNServer([segmenter], config),
        RemoteSegmenter(f"127.0.0.1:{http_port}") as remote,
    ):
        labels = remote.predict(image)
    assert launches == ["in get_config_from_handshake_server", None]
    assert "restarting Triton (attempt 2 of 3)" in caplog.text
    np.testing.assert_array_equal(labels, segmenter.predict(image))
    segmenter.close()
    assert all(alive(pid) for pid in others)
    with RemoteSegmenter(pt_server.http) as remote:
        np.testing.assert_array_equal(remote.predict(image), labels)


def test_served_model_says_precision_and_verification(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """What fcn-serve publishes (and fcn-ui shows) about a model: an unverified export says
    what failed; a checkpoint has nothing to verify; an older server's config still reads."""
    import dataclasses
    import shutil

    from fcn_deploy.export import read_onnx_metadata
    from fcn_deploy.export.metadata import append_verification
    from fcn_deploy.serve.protocol import UNKNOWN, ServedModel
    from fcn_deploy.serve.server import served_model

    shutil.copy(models["onnx"], tmp_path / "bad.onnx")
    meta = read_onnx_metadata(tmp_path / "bad.onnx")
    append_verification(
        tmp_path / "bad.onnx", dataclasses.replace(meta, verification="failed: labels")
    )
    words = {}
    for name, path in (
        ("onnx", models["onnx"]),
        ("pt", models["pt"]),
        ("bad", tmp_path / "bad.onnx"),
    ):
        with Segmenter.load(path, device="cpu", allow_unverified=True) as segmenter:
            served = served_model(segmenter, 4)
        assert ServedModel.from_parameters(served.to_parameters()) == served
        assert served.precision == "fp32"
        words[name] = served.verification
    assert words == {
        "onnx": "not verified at export",
        "pt": "not an export (a PyTorch checkpoint has nothing to verify)",
        "bad": "failed: labels (loaded with allow_unverified)",
    }
    older = {k: v for k, v in served.to_parameters().items()
             if not k.endswith((".precision", ".verification"))}  # fmt: skip
    assert ServedModel.from_parameters(older) == dataclasses.replace(
        served, precision=UNKNOWN, verification=UNKNOWN
    )
