"""fcn-bench: FLOPs against a hand count, the CLI as a real subprocess, the schema, the
scenarios."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from fcn_deploy.bench import BenchConfig, flops_per_image, run_benchmark, validate
from fcn_deploy.errors import FCNError
from fcn_deploy.meta import ModelInfo

TINY = [
    "--width",
    "0.0625",
    "--matmul-size",
    "256",
    "--warmup",
    "1",
    "--iters",
    "3",
    "--e2e-iters",
    "1",
]


def fcn_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from fcn_deploy.cli.bench import main; sys.exit(main())",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def conv(h: int, w: int, cin: int, cout: int, k: int) -> int:
    """FLOPs of a stride-1 conv producing h×w: 2 · outputs · (cin·k·k) multiply-adds."""
    return 2 * h * w * cout * cin * k * k


def test_flops_match_a_hand_count_of_fcn32s() -> None:
    # FCN-32s at width 1/16 (channels 4, 8, 16, 32, 32; fc 256), 21 classes, on a 64×64 input.
    c1, c2, c3, c4, c5, fc, n = 4, 8, 16, 32, 32, 256, 21
    s1 = 64 + 2 * 100 - 2  # conv1_1: pad 100, 3×3 → 262; every later conv keeps the size (pad 1)
    s2 = math.ceil(s1 / 2)  # ceil-mode pools: 131, 66, 33, 17, 9
    s3 = math.ceil(s2 / 2)
    s4 = math.ceil(s3 / 2)
    s5 = math.ceil(s4 / 2)
    p5 = math.ceil(s5 / 2)
    f = p5 - 6  # fc6 7×7 without padding: 3×3
    expected = (
        conv(s1, s1, 3, c1, 3) + conv(s1, s1, c1, c1, 3)
        + conv(s2, s2, c1, c2, 3) + conv(s2, s2, c2, c2, 3)
        + conv(s3, s3, c2, c3, 3) + 2 * conv(s3, s3, c3, c3, 3)
        + conv(s4, s4, c3, c4, 3) + 2 * conv(s4, s4, c4, c4, 3)
        + 3 * conv(s5, s5, c4, c5, 3)
        + conv(f, f, c5, fc, 7) + conv(f, f, fc, fc, 1) + conv(f, f, fc, n, 1)
        + 2 * f * f * n * n * 64 * 64  # upscore: each input value scattered over 64×64 per class
    )  # fmt: skip
    assert flops_per_image(ModelInfo("fcn32s", n, 0.0625), 64, 64) == expected


@pytest.mark.parametrize(
    "size,gflops",
    [((224, 224), 125.7), ((500, 500), 363.1), ((512, 1024), 670.0), ((1024, 2048), 2205.7)],
)
def test_full_fcn8s_flops_match_the_published_counts(size: tuple[int, int], gflops: float) -> None:
    assert flops_per_image(ModelInfo("fcn8s", 21, 1.0), *size) / 1e9 == pytest.approx(
        gflops, abs=0.1
    )


def check_rows(doc: dict[str, Any]) -> None:
    assert validate(doc) == [], validate(doc)
    for row in doc["results"]:
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert row["iters"] >= 3
        assert row["images_per_s"] == pytest.approx(1e3 * row["batch"] / lat["p50"])
        info = ModelInfo(
            doc["model"]["variant"], doc["model"]["num_classes"], doc["model"]["width"]
        )
        assert row["gflops_per_image"] == pytest.approx(
            flops_per_image(info, row["height"], row["width"]) / 1e9
        )
        assert row["peak_fraction"] > 0
        assert row["peak_host_mb"] > 0


@pytest.mark.slow
def test_cli_sweep_writes_valid_json_markdown_and_png(tmp_path: Path, make_checkpoint: Any) -> None:
    ckpt = make_checkpoint("fcn8s", width=0.0625)
    out = tmp_path / "out.json"
    result = fcn_bench(
        "--model",
        str(ckpt),
        "--backends",
        "torch,torch-fp16,tensorrt",
        "--sizes",
        "64x64,48x80",
        "--device",
        "cpu",
        *TINY,
        "--json",
        str(out),
        "--markdown",
        str(tmp_path / "out.md"),
        "--plot",
        str(tmp_path / "out.png"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    check_rows(doc)
    assert [(r["backend"], r["height"], r["width"]) for r in doc["results"]] == [
        ("torch", 64, 64),
        ("torch", 48, 80),
    ]
    assert all(
        r["label_agreement"] == 1.0 and r["max_abs_err"] == 0.0 for r in doc["results"]
    )  # the reference itself
    assert all(r["e2e_latency_ms"]["p50"] > 0 for r in doc["results"])
    reasons = {s["backend"]: s["reason"] for s in doc["skipped"]}
    assert set(reasons) == {"torch-fp16", "tensorrt"} and all(reasons.values())
    assert "skipped tensorrt:" in result.stdout and "p50 ms" in result.stdout
    assert "| torch | 64x64 |" in (tmp_path / "out.md").read_text()
    png = tmp_path / "out.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(png)).shape[2] == 3


@pytest.mark.slow
def test_onnxruntime_rows_agree_with_eager(make_model: Any) -> None:
    doc = run_benchmark(
        "sizes",
        backends="torch,onnxruntime",
        width=0.0625,
        matmul_size=256,
        config=BenchConfig(sizes=[(64, 64), (48, 80)], iters=3, e2e_iters=1),
        device="cpu",
    )
    assert doc["skipped"] == []
    ort = [r for r in doc["results"] if r["backend"] == "onnxruntime"]
    assert len(ort) == 2 and all(
        r["label_agreement"] >= 0.999 and r["max_abs_err"] < 1e-3 for r in ort
    )
    assert all(r["speedup_vs_torch"] > 0 for r in ort) and doc["prepare_s"]["onnxruntime"] > 0


@pytest.mark.slow
def test_int8_openvino_and_compile_rows_are_typed_and_valid() -> None:
    """The INT8 backends calibrate their own file; their rows are held to the INT8 matmul rate;
    torch-compile's compilations are a typed list of the document."""
    doc = run_benchmark(
        "sizes",
        backends="torch,onnxruntime-int8,openvino-int8,torch-compile",
        width=0.0625,
        matmul_size=256,
        config=BenchConfig(sizes=[(64, 64), (48, 80)], iters=3, e2e_iters=1),
        device="cpu",
    )
    check_rows(doc)
    assert doc["skipped"] == [], doc["skipped"]
    assert doc["config"]["calibration"] == "bench"  # the default: images like the inputs
    assert doc["machine"]["peaks"]["int8"]["precision"] == "int8"
    for name in ("onnxruntime-int8", "openvino-int8"):
        rows = [r for r in doc["results"] if r["backend"] == name]
        assert len(rows) == 2 and all(
            r["precision"] == r["compute_precision"] == "int8" for r in rows
        )
        assert all(r["label_agreement"] > 0.5 for r in rows)
    (compiled,) = doc["compile"]
    assert compiled["backend"] == "torch-compile" and compiled["compilations"] >= 1
    assert set(compiled["shapes"]) >= {"1x64x64", "1x48x80"}


def test_bad_sizes_exit_2_with_one_line_and_no_file(tmp_path: Path) -> None:
    result = fcn_bench("--sizes", "64y64", "--json", str(tmp_path / "x.json"), cwd=tmp_path)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert (
        err.startswith("error: argument --sizes: expected HxW")
        and "'64y64'" in err
        and len(err.splitlines()) == 1
    )
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_is_an_error() -> None:
    from fcn_deploy.bench.backends import parse_backends

    with pytest.raises(FCNError, match="unknown backend"):
        parse_backends("torch,tvm")


def test_validate_reports_what_is_wrong() -> None:
    doc = {
        "schema_version": 1,
        "scenario": "sizes",
        "machine": {"cpu": "x", "logical_cores": 2, "versions": {}, "peaks": {}},
        "results": [{"backend": "torch", "height": 0}],
        "skipped": [{"backend": "tensorrt"}],
    }
    problems = "\n".join(validate(doc))
    assert "$/results/0/height: 0 is less than the minimum" in problems
    assert "$/results/0: 'latency_ms' is a required property" in problems
    assert "$/skipped/0: 'reason' is a required property" in problems
    doc["skipped"] = [{"backend": "tensorrt", "reason": "x", "status": "broken"}]
    assert "$/skipped/0/status: 'broken' is not one of ['unavailable', 'failed']" in validate(doc)


def test_sliding_window_equal_on_one_window_and_close_on_more() -> None:
    cfg = BenchConfig(sizes=[(224, 224), (288, 256)], warmup=0, iters=1)
    doc = run_benchmark("sliding-window", width=0.0625, config=cfg, device="cpu", matmul_size=256)
    assert validate(doc) == []
    one, many = doc["sliding_window"]
    assert one["windows"] == 1 and one["equal"] is True and one["top1_agreement"] == 1.0
    assert many["windows"] == 3 * 2 and many["equal"] is None
    assert many["score_correlation"] > 0.99 and 0 <= many["top1_agreement"] <= 1
    assert (
        many["fc_windows_gflops"] == pytest.approx(6 * one["conv_gflops"]) and many["speedup"] > 0
    )


def test_sliding_window_rejects_sizes_that_do_not_tile() -> None:

    with pytest.raises(FCNError, match="224 \\+ 32"):
        run_benchmark(
            "sliding-window",
            width=0.0625,
            config=BenchConfig(sizes=[(230, 224)]),
            device="cpu",
            matmul_size=256,
        )


def test_stream_one_runner_serves_every_shape() -> None:
    doc = run_benchmark(
        "stream",
        backends="torch,tensorrt",
        width=0.0625,
        stream=(4, 32, 72),
        device="cpu",
        matmul_size=256,
    )
    (row,) = doc["stream"]
    assert row["frames"] == 4 and row["distinct_shapes"] == 2 and row["runners_opened"] == 1
    assert all(s["first_call_ms"] > 0 and s["repeat_ms"] > 0 for s in row["shapes"])
    ((skipped, reason, status),) = [
        (s["backend"], s["reason"], s["status"]) for s in doc["skipped"]
    ]
    assert skipped == "tensorrt" and reason.startswith("TensorRT is not installed")
    assert status == "unavailable"  # not a failure: fcn-bench still exits 0


def test_static_vs_dynamic_is_skipped_with_its_reason_without_tensorrt(tmp_path: Path) -> None:
    from fcn_deploy.engine._trt import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is installed here: the scenario runs instead (needs a GPU)")
    doc = run_benchmark("static-vs-dynamic", width=0.0625, device="cpu", matmul_size=256)
    assert validate(doc) == [] and doc["skipped"] == [
        {"backend": "tensorrt", "reason": doc["skipped"][0]["reason"], "status": "unavailable"}
    ]
    assert doc["skipped"][0]["reason"].startswith("TensorRT is not installed")


def test_bench_calibration_images_are_like_the_inputs_but_never_them() -> None:
    """Drawn by the measured inputs' recipe at the sweep's sizes (capped at 500 per side), from
    seeds the sweep does not use; the same on every run."""
    from fcn_deploy.bench.scenarios import calibration_images, random_images

    cfg = BenchConfig(sizes=[(64, 96), (1024, 2048)], seed=3)
    images = calibration_images(cfg.sizes, cfg.seed)
    assert [im.shape for im in images] == [(64, 96, 3), (500, 500, 3)] * 2
    assert all(im.dtype == np.uint8 for im in images)
    measured = [random_images(1, *size, seed=cfg.seed + i)[0] for i, size in enumerate(cfg.sizes)]
    assert not any(np.array_equal(a, b) for a in images for b in measured)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(images, calibration_images(cfg.sizes, cfg.seed), strict=True)
    )


def test_files_exported_for_a_run_are_removed_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without cache_dir the ONNX files a run exports (670 MB for the full net) do not stay."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    doc = run_benchmark(
        "sizes",
        backends="torch,onnxruntime",
        width=0.0625,
        matmul_size=128,
        config=BenchConfig(sizes=[(48, 48)], iters=1, e2e_iters=0),
        device="cpu",
    )
    assert [r["backend"] for r in doc["results"]] == ["torch", "onnxruntime"]
    assert list(tmp_path.glob("fcn-bench-*")) == []  # (torch keeps its own inductor cache)
    kept = tmp_path / "new" / "cache"  # a cache_dir is created, and its files stay
    run_benchmark(
        "sizes",
        backends="onnxruntime",
        width=0.0625,
        matmul_size=128,
        config=BenchConfig(sizes=[(48, 48)], iters=1, e2e_iters=0),
        device="cpu",
        cache_dir=kept,
    )
    assert len(list(kept.glob("model-fp32-*.onnx"))) == 1
    (tmp_path / "file").write_text("")
    with pytest.raises(FCNError, match="cache_dir") as info:
        run_benchmark("sizes", backends="torch", cache_dir=tmp_path / "file" / "cache")
    assert info.value.param == "cache_dir"


def test_noisy_rows_and_a_drifting_peak_are_marked(tmp_path: Path) -> None:
    from fcn_deploy.bench.report import format_console, format_markdown, noise_notes, write_plot

    doc = run_benchmark(
        "sizes",
        backends="torch",
        width=0.0625,
        matmul_size=256,
        config=BenchConfig(sizes=[(32, 32), (40, 48)], iters=3, e2e_iters=0),
        device="cpu",
    )
    steady, noisy = doc["results"]
    steady["latency_ms"].update(p50=100.0, p90=110.0)
    noisy["latency_ms"].update(p50=100.0, p90=400.0)  # as seen on a busy machine: p90 = 4x p50
    peak = doc["machine"]["peaks"]["fp32"]
    peak.update(start_gflops_per_s=200.0, end_gflops_per_s=99.0)
    notes = noise_notes(doc)
    assert notes[0].startswith("unstable (marked !, p90 over 1.25x p50): torch 40x48;")
    assert notes[1].startswith("peak fp32 drifted from 200.0 to 99.0 GFLOP/s")
    console = format_console(doc)
    assert " 1.10 " in console and " 4.00 !" in console and all(n in console for n in notes)
    assert "| 4.00 ! |" in format_markdown(doc)
    write_plot(doc, tmp_path / "noisy.png")  # the spread as error bars, the drift as a note
    assert cv2.imread(str(tmp_path / "noisy.png")).shape[2] == 3
    peak.update(end_gflops_per_s=195.0)
    noisy["latency_ms"].update(p90=120.0)
    assert noise_notes(doc) == []


# --- the machine's limit, measured within a time budget -----------------------------------------

CPU = torch.device("cpu")


def _sleeping_kernel(seconds_at_512: float, calls: list[int]) -> Any:
    """A stand-in matmul whose call at n×n takes ``seconds_at_512 · (n/512)³`` (sleeping, so a
    busy machine barely changes it)."""

    def make(n: int) -> Any:
        def call() -> None:
            calls.append(n)
            time.sleep(seconds_at_512 * (n / 512) ** 3)

        return call

    return make


def test_a_peak_probe_is_sized_from_a_first_short_call_to_fit_its_budget() -> None:
    from fcn_deploy.bench.machine import probe_size, timed_probe

    # 3 repetitions at 2048 take 3 · 0.001 · 64 = 0.19 s, twice that with the margin; at 4096
    # 3.1 s: over 1 s
    assert probe_size(0.001, 512, 4096, 3, 1.0) == 2048
    assert probe_size(0.001, 512, 4096, 3, 100.0) == 4096
    assert probe_size(0.001, 512, 3000, 3, 100.0) == 3000  # never past the largest
    assert probe_size(2.0, 512, 4096, 3, 1.0) == 512  # nothing larger fits
    calls: list[int] = []  # 2048 fits 8 s while a call at 512 takes < 21 ms, 4096 only under
    # 2.6 ms: a 5 ms call leaves a wide margin either way on a busy machine
    probe = timed_probe("stub", _sleeping_kernel(0.005, calls), CPU, budget_s=8.0)
    assert (probe.size, probe.reps, probe.skipped) == (2048, 3, None) and probe.rate
    assert calls == [512, 512, 2048, 2048, 2048]  # first: warm-up + 1; then the 3 repetitions
    calls.clear()  # a kernel too slow for more: its first call is its one repetition
    slow = timed_probe("slow", _sleeping_kernel(0.4, calls), CPU, budget_s=1.0)
    assert (slow.size, slow.reps) == (512, 1) and calls == [512, 512]
    calls.clear()  # a size given is used as it is, repetitions still within the budget
    fixed = timed_probe("fixed", _sleeping_kernel(0.4, calls), CPU, size=512, budget_s=1.0)
    assert fixed.size == 512 and fixed.reps == 1 and calls == [512, 512]


def test_a_slow_fallback_kernel_is_skipped_not_measured() -> None:
    """torch._int_mm on an AMD EPYC without VNNI ran at 0.3-0.6 GOP/s (FP32: 4-18 GFLOP/s): at
    4096x4096 each call took minutes, and its rate said nothing about the machine."""
    from fcn_deploy.bench.machine import timed_probe

    calls: list[int] = []
    probe = timed_probe("int8 stub", _sleeping_kernel(0.01, calls), CPU, floor=1000.0)
    assert probe.rate is None and calls == [512, 512]  # never at a larger size
    assert probe.skipped is not None and "slow fallback kernel" in probe.skipped
    assert "skipped" in probe.line()


def test_peaks_name_every_probe_and_log_what_each_measured(caplog: Any) -> None:
    from fcn_deploy.bench.machine import matmul_peak

    with caplog.at_level("INFO", logger="fcn_deploy.bench.machine"):
        fp32 = matmul_peak(CPU, "fp32", budget_s=0.5)
        int8 = matmul_peak(CPU, "int8", budget_s=0.5)
    assert [p["kernel"] for p in fp32["probes"]] == ["torch.mm FP32", "numpy matmul FP32"]
    assert fp32["gflops_per_s"] == max(p["rate"] for p in fp32["probes"])
    assert [p["kernel"] for p in int8["probes"]] == [
        "torch._int_mm",
        "onnxruntime MatMulInteger u8s8",
    ]
    for probe in [*fp32["probes"], *int8["probes"]]:  # a rate, or why there is none
        assert (probe["rate"] is None) != (probe["skipped"] is None), probe
        assert probe["kernel"] in (fp32["method"] + int8["method"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("peak probe:")]
    assert len(lines) == 4 and all(line.endswith(" s)") for line in lines), lines


# --- exports given to run as they are -------------------------------------------------------------


def test_given_exports_are_one_verified_file_per_precision_of_the_same_weights(
    tmp_path: Path,
) -> None:
    from test_engine_build import _tiny_onnx

    from fcn_deploy.bench.backends import ModelSource, given_exports

    folder = tmp_path / "exports"
    folder.mkdir()
    fp32 = _tiny_onnx(folder / "a.onnx")
    int8 = _tiny_onnx(folder / "b.onnx", "int8", {"source": "synthetic", "method": "minmax"})
    (folder / "notes.txt").write_text("not a model")
    assert given_exports([folder]) == {"fp32": fp32, "int8": int8}
    assert given_exports([fp32]) == {"fp32": fp32}
    weights = ModelSource("ckpt.pt", module=torch.nn.Identity(), sha256="0" * 64)
    assert given_exports([folder], source=weights) == {"fp32": fp32, "int8": int8}
    other = ModelSource("other.pt", module=torch.nn.Identity(), sha256="1" * 64)
    with pytest.raises(FCNError, match=r"a\.onnx was exported from other weights than other\.pt"):
        given_exports([fp32], source=other)
    with pytest.raises(FCNError, match="two fp32 exports given"):
        given_exports([folder, Path(shutil.copy(fp32, tmp_path / "c.onnx"))])
    unverified = _tiny_onnx(
        tmp_path / "d.onnx", "int8", {"source": "synthetic", "method": "minmax"},
        verification="failed: labels 91.2% < 98%",
    )  # fmt: skip
    with pytest.raises(FCNError, match="failed verification"):
        given_exports([unverified])
    assert given_exports([unverified], allow_unverified=True) == {"int8": unverified}
    alone = ModelSource.open(None, None, 1.0, 21, onnx=[folder])  # the exports without weights
    assert alone.module is None and alone.exports == {"fp32": fp32, "int8": int8}
    with pytest.raises(FCNError, match=r"MODEL .*a\.onnx is the fp32 file already"):
        ModelSource.open(str(fp32), None, 1.0, 21, onnx=[folder])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FCNError, match=r"empty holds no \.onnx files") as info:
        given_exports([tmp_path / "empty"])
    assert info.value.param == "onnx"
    with pytest.raises(FCNError, match=r"notes\.txt is not an \.onnx file or a folder"):
        given_exports([folder / "notes.txt"])


def test_default_backends_are_what_is_fast_on_the_device() -> None:
    import importlib.util

    from fcn_deploy.bench.backends import default_backends

    cpu = default_backends(CPU)
    assert cpu[:3] == ["torch", "onnxruntime", "onnxruntime-int8"] and not any(
        "fp16" in name for name in cpu
    )  # FP16 graphs run at half the FP32 speed on a CPU
    openvino = importlib.util.find_spec("openvino") is not None
    assert (cpu[3:] == ["openvino", "openvino-int8"]) == openvino and len(cpu) in (3, 5)
    assert default_backends(torch.device("cuda", 0)) == [
        "torch",
        "torch-fp16",
        "onnxruntime",
        "tensorrt",
    ]


@pytest.mark.slow
def test_the_cli_runs_given_exports_and_prints_a_line_per_row(
    tmp_path: Path, make_checkpoint: Any
) -> None:
    """The demo's benchmark: its own verified exports, not three more; the CPU defaults; a line
    per finished row and per peak probe on stderr (a log, not a bar)."""
    from fcn_deploy.export import export_onnx

    ckpt = make_checkpoint("fcn8s", width=0.0625)
    folder = tmp_path / "exports"
    folder.mkdir()
    for precision in ("fp32", "int8"):
        export_onnx(ckpt, folder / f"m-{precision}.onnx", precision=precision, max_size=(128, 128),
                    max_batch=2, progress=False, calibration_images=2, held_out_images=1,
                    min_label_agreement=0.0)  # fmt: skip
    cache = tmp_path / "cache"
    out = tmp_path / "out.json"
    result = fcn_bench(str(ckpt), "--onnx", str(folder), "--device", "cpu", "--sizes", "64x64",
                       "--iters", "3", "--e2e-iters", "1", "--peak-seconds", "0.5",
                       "--cache-dir", str(cache), "--json", str(out), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    check_rows(doc)
    names = [r["backend"] for r in doc["results"]]
    assert names[:3] == ["torch", "onnxruntime", "onnxruntime-int8"]
    assert doc["config"]["onnx"] == {p: str(folder / f"m-{p}.onnx") for p in ("fp32", "int8")}
    assert list(cache.iterdir()) == []  # nothing exported again
    assert "prepare_s" not in doc or not doc["prepare_s"]
    rows = [line for line in result.stderr.splitlines() if " 64x64 batch 1: p50 " in line]
    assert len(rows) == len(names), result.stderr
    assert sum("peak probe:" in line for line in result.stderr.splitlines()) >= 4
