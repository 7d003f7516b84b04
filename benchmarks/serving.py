"""Serving vs in-process: full FCN-8s at 500×500 under ONNX Runtime (CPU), fcn-serve on Triton.

Run it on an otherwise idle machine: ``python benchmarks/serving.py``. Weights are random (no
downloads here); speed does not depend on them. Writes benchmarks/results/serving-<host>.json
and .png; benchmarks/serving.md holds the table.

Measured end to end as a user sees it: in-process is ``Segmenter.predict`` on a decoded BGR
image; serving is a tritonclient HTTP request carrying the same pixels (UINT8 [1, 500, 500, 3])
to ``fcn-serve`` on 127.0.0.1 and the labels back. Throughput at concurrency C: C client threads,
each with its own connection, sending back to back; images answered per second of wall time.

A second, small model (width 0.125, same 500×500 image) isolates the fixed cost of serving
(HTTP, PyTriton's shared-memory hop to the Python process, batching queue): the basis for what
the overhead would be next to a GPU's few-millisecond model time.
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
from typing import Any

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


def summary(seconds: list[float]) -> dict[str, float]:
    return {"p50_ms": 1e3 * percentile(seconds, 50), "p99_ms": 1e3 * percentile(seconds, 99),
            "throughput_img_s": len(seconds) / sum(seconds)}  # fmt: skip


def measure(onnx_path: Path, image: np.ndarray, latency_n: int, throughput_n: int,
            levels: tuple[int, ...], log_path: Path) -> dict[str, Any]:  # fmt: skip
    """In-process latencies, then fcn-serve's latencies and throughput at each concurrency."""
    import tritonclient.http as http

    from fcn_deploy.api import Segmenter

    seg = Segmenter.load(onnx_path, device="cpu")
    for _ in range(2):
        want = seg.predict(image)
    local = []
    for _ in range(latency_n):
        t = time.perf_counter()
        seg.predict(image)
        local.append(time.perf_counter() - t)
    seg.close()
    del seg

    ports = free_ports(3)
    log = open(log_path, "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("fcn-serve")), str(onnx_path), "--device", "cpu",
         "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port",
         str(ports[2]), "--max-batch", "4"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"127.0.0.1:{ports[0]}"
    client = http.InferenceServerClient(url)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("fcn"):
                    break
            except Exception:
                pass
            if server.poll() is not None:
                raise SystemExit(f"fcn-serve exited {server.returncode}; see {log_path}")
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
            assert np.array_equal(request(client), want), "server labels differ from local"
        remote = []
        for _ in range(latency_n):
            t = time.perf_counter()
            request(client)
            remote.append(time.perf_counter() - t)
        throughput = {"1": latency_n / sum(remote)}
        for concurrency in levels:
            count = max(throughput_n // concurrency, 1)
            threads = [threading.Thread(target=send, args=(count,)) for _ in range(concurrency)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            throughput[str(concurrency)] = count * concurrency / (time.perf_counter() - t)
    finally:
        client.close()
        server.terminate()
        code = server.wait(120)
        log.close()
    serving = summary(remote)
    serving["throughput_img_s"] = throughput  # type: ignore[assignment]
    return {
        "in_process_s": local,
        "serving_s": remote,
        "in_process": summary(local),
        "serving": serving,
        "p50_overhead_ms": serving["p50_ms"] - percentile(local, 50) * 1e3,
        "p50_overhead": serving["p50_ms"] / (percentile(local, 50) * 1e3) - 1,
        "fcn_serve_exit_code": code,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--latency-requests", type=int, default=20)
    p.add_argument("--throughput-requests", type=int, default=12, help="per concurrency level")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fcn-serving-bench")
    args = p.parse_args()

    import torch

    import fcn_deploy
    from fcn_deploy.export import export_onnx
    from fcn_deploy.models import create_model

    args.work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, width in (("full", 1.0), ("w0.125", 0.125)):
        paths[name] = args.work / f"fcn8s-{name}.onnx"
        if not paths[name].exists():
            torch.manual_seed(0)
            pt = args.work / f"fcn8s-{name}.pt"
            fcn_deploy.save_checkpoint(create_model("fcn8s", num_classes=21, width=width), pt)
            export_onnx(pt, paths[name], max_size=(512, 512), max_batch=4, verify=False,
                        progress=False)  # fmt: skip
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
        "model": f"FCN-8s full width, ONNX FP32, ONNX Runtime CPU, {args.size}x{args.size}",
    }
    result.update(measure(paths["full"], image, args.latency_requests, args.throughput_requests,
                          (2, 4), args.work / "serve-full.log"))  # fmt: skip
    small = measure(paths["w0.125"], image, 3 * args.latency_requests, 0, (),
                    args.work / "serve-small.log")  # fmt: skip
    result["fixed_overhead_small_model"] = {
        k: small[k] for k in ("in_process", "serving", "p50_overhead_ms", "p50_overhead")
    }
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    out = ROOT / "results" / f"serving-{socket.gethostname()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_s")}, indent=2))


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.boxplot([np.array(result["in_process_s"]) * 1e3, np.array(result["serving_s"]) * 1e3],
              tick_labels=["in-process", "fcn-serve (HTTP)"])  # fmt: skip
    a.set_ylabel("latency per 500×500 image (ms)")
    a.set_title("concurrency 1")
    levels = sorted(int(k) for k in result["serving"]["throughput_img_s"])
    b.bar([str(c) for c in levels], [result["serving"]["throughput_img_s"][str(c)] for c in levels],
          label="fcn-serve")  # fmt: skip
    b.axhline(result["in_process"]["throughput_img_s"], color="k", linestyle="--",
              label="in-process, batch 1")  # fmt: skip
    b.set_xlabel("client concurrency")
    b.set_ylabel("images / s")
    b.set_title("throughput")
    b.legend(loc="lower right")
    fig.suptitle(result["model"] + " — " + result["machine"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
