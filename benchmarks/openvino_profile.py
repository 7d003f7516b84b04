"""Where OpenVINO spends one call of an ONNX file: per-node times (``PERF_COUNT``), by node type
and for the slowest nodes. The table in benchmarks/int8.md ("Where OpenVINO's INT8 time goes")
comes from this script on the INT8 file fcn-bench makes for the full-size FCN-8s:

    fcn-bench --backends openvino-int8 --sizes 500x500 --iters 1 --e2e-iters 0 --cache-dir c
    python benchmarks/openvino_profile.py c/model-int8.onnx --size 500
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx", help="a tensor-I/O ONNX file (fcn-export or fcn-bench --cache-dir)")
    p.add_argument("--size", type=int, default=500, help="side of the input image")
    p.add_argument("--top", type=int, default=15, help="how many of the slowest nodes to list")
    args = p.parse_args()

    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    request = core.compile_model(core.read_model(args.onnx), "CPU", config).create_infer_request()
    x = np.random.default_rng(0).normal(0, 1, (1, 3, args.size, args.size)).astype(np.float32)
    for _ in range(2):  # warm-up
        request.infer({0: x})
    t0 = time.perf_counter()
    request.infer({0: x})
    print(f"one call: {1000 * (time.perf_counter() - t0):.1f} ms")
    by_kind: collections.Counter[tuple[str, str]] = collections.Counter()
    nodes = []
    for info in request.profiling_info:
        ms = info.real_time.total_seconds() * 1000
        by_kind[(info.node_type, info.exec_type)] += ms
        nodes.append((ms, info.node_type, info.exec_type, info.node_name))
    print("by node type and kernel:")
    for (kind, kernel), ms in by_kind.most_common():
        if ms >= 0.05:
            print(f"  {ms:8.1f} ms  {kind:28s} {kernel}")
    print(f"slowest {args.top} nodes:")
    for ms, kind, kernel, name in sorted(nodes, reverse=True)[: args.top]:
        print(f"  {ms:8.1f} ms  {kind:28s} {kernel:28s} {name[:60]}")


if __name__ == "__main__":
    main()
