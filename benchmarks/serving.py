"""Serving vs in-process: full FCN-8s at 500×500 under ONNX Runtime (CPU), fcn-serve on Triton.

Run under the shared lock (the machine is shared): ``flock /tmp/fcn-heavy.lock python
benchmarks/serving.py``. Weights are random (no downloads here); speed does not depend on them.
Writes benchmarks/results/serving-<host>.json and .png; benchmarks/serving.md holds the table.

Measured end to end as a user sees it: in-process is ``Segmenter.predict`` on a decoded BGR
image; serving is a tritonclient HTTP request carrying the same pixels (UINT8 [1, 500, 500, 3])
to ``fcn-serve`` on 127.0.0.1 and the labels back. Throughput at concurrency C: C client threads,
each with its own connection, sending back to back; images answered per second of wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--latency-requests", type=int, default=20)
    p.add_argument("--throughput-requests", type=int, default=12, help="per concurrency level")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fcn-serving-bench")
    args = p.parse_args()

    import torch
    import tritonclient.http as http

    import fcn_deploy
    from fcn_deploy.api import Segmenter
    from fcn_deploy.export import export_onnx
    from fcn_deploy.models import create_model

    args.work.mkdir(parents=True, exist_ok=True)
    onnx_path = args.work / "fcn8s-full.onnx"
    if not onnx_path.exists():
        torch.manual_seed(0)
        fcn_deploy.save_checkpoint(create_model("fcn8s", num_classes=21), args.work / "fcn8s.pt")
        export_onnx(args.work / "fcn8s.pt", onnx_path, max_size=(512, 512), max_batch=4,
                    verify=False, progress=False)  # fmt: skip
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    load_before = os.getloadavg()

    # in-process
    seg = Segmenter.load(onnx_path, device="cpu")
    for _ in range(2):
        seg.predict(image)
    local = []
    for _ in range(args.latency_requests):
        t = time.perf_counter()
        want = seg.predict(image)
        local.append(time.perf_counter() - t)
    seg.close()
    del seg

    # serving
    ports = free_ports(3)
    log = open(args.work / "serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("fcn-serve")), str(onnx_path), "--device", "cpu",
         "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port",
         str(ports[2]), "--max-batch", "4"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"127.0.0.1:{ports[0]}"
    try:
        client = http.InferenceServerClient(url)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("fcn"):
                    break
            except Exception:
                pass
            if server.poll() is not None:
                raise SystemExit(f"fcn-serve exited {server.returncode}; see {log.name}")
            time.sleep(1)

        def request(c: http.InferenceServerClient) -> np.ndarray:
            tensor = http.InferInput("image", [1, *image.shape], "UINT8")
            tensor.set_data_from_numpy(image[None])
            return c.infer("fcn", [tensor]).as_numpy("labels")[0]

        def send(count: int) -> None:
            c = http.InferenceServerClient(url)  # one per thread: the clients are not thread-safe
            try:
                for _ in range(count):
                    request(c)
            finally:
                c.close()

        for _ in range(2):
            assert np.array_equal(request(client), want)
        remote = []
        for _ in range(args.latency_requests):
            t = time.perf_counter()
            request(client)
            remote.append(time.perf_counter() - t)

        throughput = {1: args.latency_requests / sum(remote)}
        for concurrency in (2, 4):
            count = max(args.throughput_requests // concurrency, 1)
            threads = [threading.Thread(target=send, args=(count,)) for _ in range(concurrency)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            throughput[concurrency] = count * concurrency / (time.perf_counter() - t)
    finally:
        server.terminate()
        code = server.wait(120)
        log.close()

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU "
        "(shared with other jobs)",
        "model": f"FCN-8s full width, ONNX FP32, ONNX Runtime CPU, {args.size}x{args.size}",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "in_process_s": local,
        "serving_s": remote,
        "in_process": {"p50_ms": 1e3 * percentile(local, 50), "p99_ms": 1e3 * percentile(local, 99),
                       "throughput_img_s": len(local) / sum(local)},
        "serving": {"p50_ms": 1e3 * percentile(remote, 50), "p99_ms": 1e3 * percentile(remote, 99),
                    "throughput_img_s": {str(k): v for k, v in throughput.items()}},
        "fcn_serve_exit_code": code,
    }  # fmt: skip
    result["p50_overhead"] = result["serving"]["p50_ms"] / result["in_process"]["p50_ms"] - 1
    out = ROOT / "results" / f"serving-{socket.gethostname()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_s")}, indent=2))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.boxplot([np.array(result["in_process_s"]) * 1e3, np.array(result["serving_s"]) * 1e3],
              tick_labels=["in-process", "fcn-serve (HTTP)"])  # fmt: skip
    a.set_ylabel("latency per 500×500 image (ms)")
    a.set_title("concurrency 1")
    levels = sorted(int(k) for k in result["serving"]["throughput_img_s"])
    a_tp = result["in_process"]["throughput_img_s"]
    b.bar([str(c) for c in levels], [result["serving"]["throughput_img_s"][str(c)] for c in levels],
          label="fcn-serve")  # fmt: skip
    b.axhline(a_tp, color="k", linestyle="--", label="in-process, batch 1")
    b.set_xlabel("client concurrency")
    b.set_ylabel("images / s")
    b.set_title("throughput")
    b.legend()
    fig.suptitle(result["model"] + " — " + result["machine"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
