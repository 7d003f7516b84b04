"""The calibration study in benchmarks/int8.md: INT8 label agreement of the full-size random-weight
FCN-8s against its FP32 export, by calibration images, method and layers kept in FP32.

    .venv/bin/python benchmarks/int8_calibration.py --size 500 --images 4

Scored on two of fcn-bench's inputs (`random_images`, seeds 100 and 101) under ONNX Runtime.
Calibrated on the built-in synthetic scenes (``synthetic``) or on images drawn like fcn-bench's
inputs from other seeds (``bench``: what ``fcn-bench --calibration bench`` uses). The ORT
calibrator keeps every activation of every image: ~1.4 GB per 500×500 image for this net.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from fcn_deploy.bench import random_model
from fcn_deploy.bench.scenarios import calibration_images, random_images
from fcn_deploy.export import export_onnx, ort_run, ort_session
from fcn_deploy.export.quantize import CalibrationSource, quantize_qdq

log = logging.getLogger("int8_calibration")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=500, help="side of the scored images")
    p.add_argument("--images", type=int, default=4, help="calibration images")
    p.add_argument("--methods", default="minmax,percentile,entropy")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    net = random_model("fcn8s", 1.0, 21)
    pre = net.info.preprocessing
    s = args.size
    tests = [pre.apply(random_images(1, s, s, seed=100 + i)) for i in range(2)]
    sources = {
        "synthetic": [
            pre.apply(im[None])
            for im in CalibrationSource.parse("synthetic").calibration_images(args.images)
        ],
        "bench": [pre.apply(im[None]) for im in calibration_images([(s, s)], 0, args.images)],
    }
    with tempfile.TemporaryDirectory(prefix="int8-study-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(net, fp32, precision="fp32", max_batch=1, verify=False, progress=False)
        session = ort_session(fp32)
        reference = [ort_run(session, x).argmax(1) for x in tests]
        print(f"| calibrated on | method | FP32 layers | label agreement at {s}×{s} |")
        print("|---|---|---|---:|")
        runs = [("synthetic", "minmax", ())]
        runs += [("bench", m, ex) for m in args.methods.split(",") for ex in ((), ("upscore8",))]
        for source, method, exclude in runs:
            t0 = time.perf_counter()
            graph = quantize_qdq(fp32, sources[source], method, exclude, progress=False)
            path = Path(tmp) / "int8.onnx"
            onnx.save(graph, str(path))
            int8 = ort_session(path)
            agree = np.mean(
                [
                    float((ort_run(int8, x).argmax(1) == r).mean())
                    for x, r in zip(tests, reference, strict=True)
                ]
            )
            log.info("%s/%s/%s: %.1f s", source, method, exclude, time.perf_counter() - t0)
            print(
                f"| {source} | {method} | {', '.join(exclude) or '-'} | {agree:.2%} |", flush=True
            )


if __name__ == "__main__":
    main()
