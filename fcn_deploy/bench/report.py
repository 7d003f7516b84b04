"""Benchmark results as JSON (with its schema), a console or Markdown table, and a PNG plot."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any, get_args

from .._io import atomic_path, atomic_write_text
from .results import SCENARIOS, SkipStatus

log = logging.getLogger(__name__)

__all__ = [
    "SCHEMA",
    "format_console",
    "format_markdown",
    "format_summary",
    "noise_notes",
    "table",
    "validate",
    "write_json",
    "write_markdown",
    "write_plot",
]

_NUM = {"type": "number"}
_OPT_NUM = {"type": ["number", "null"]}
_LATENCY = {
    "type": "object",
    "required": ["mean", "p50", "p90", "p99"],
    "properties": {k: _NUM for k in ("mean", "p50", "p90", "p99")},
}

#: JSON Schema (draft 2020-12 subset) of what ``--json`` writes.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema_version", "scenario", "machine", "results", "skipped"],
    "properties": {
        "schema_version": {"type": "integer", "enum": [1]},
        "scenario": {"type": "string", "enum": list(SCENARIOS)},
        "config": {
            "type": "object",
            # what "fp32" arithmetic means in this run (IEEE: TF32 off; see machine.FP32_MATH)
            "properties": {"fp32_math": {"type": "string"}},
        },
        "machine": {
            "type": "object",
            "required": ["cpu", "logical_cores", "versions", "peaks"],
            "properties": {
                "cpu": {"type": "string"},
                "gpu": {"type": ["object", "null"]},
                "versions": {"type": "object"},
                "peaks": {"type": "object"},
            },
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "backend",
                    "height",
                    "width",
                    "batch",
                    "precision",
                    "latency_ms",
                    "images_per_s",
                    "megapixels_per_s",
                    "gflops_per_image",
                    "achieved_gflops_per_s",
                    "peak_fraction",
                    "max_abs_err",
                    "label_agreement",
                    "e2e_latency_ms",
                    "peak_host_mb",
                    "peak_gpu_mb",
                ],
                "properties": {
                    "backend": {"type": "string"},
                    # what the runner says it is; TensorRT: the inspector's label, "mixed" (layers
                    # in more than one precision) or "unknown" (Myelin nodes hide it). The peak a
                    # row is held to follows compute_precision, from the precision asked for
                    "precision": {
                        "type": "string",
                        "enum": ["fp32", "fp16", "int8", "mixed", "unknown"],
                    },
                    "height": {"type": "integer", "minimum": 1},
                    "width": {"type": "integer", "minimum": 1},
                    "batch": {"type": "integer", "minimum": 1},
                    "latency_ms": _LATENCY,
                    "e2e_latency_ms": {
                        "type": ["object", "null"],
                        "required": ["mean", "p50", "p90", "p99"],
                    },
                    "images_per_s": _NUM,
                    "megapixels_per_s": _NUM,
                    "gflops_per_image": _NUM,
                    "achieved_gflops_per_s": _NUM,
                    "peak_fraction": _OPT_NUM,
                    "max_abs_err": _OPT_NUM,
                    "label_agreement": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "peak_host_mb": _OPT_NUM,
                    "peak_gpu_mb": _OPT_NUM,
                },
            },
        },
        "skipped": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["backend", "reason", "status"],
                "properties": {
                    "backend": {"type": "string"},
                    "reason": {"type": "string"},
                    "status": {"enum": list(get_args(SkipStatus))},
                },
            },
        },
        "compile": {  # torch-compile only: results.CompileRow
            "type": "array",
            "items": {
                "type": "object",
                "required": ["backend", "compilations", "compile_s", "shapes"],
                "properties": {
                    "backend": {"type": "string"},
                    "compilations": {"type": "integer", "minimum": 1},
                    "compile_s": {"type": "number", "minimum": 0},
                    "shapes": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def validate(doc: Any, schema: dict[str, Any] = SCHEMA) -> list[str]:
    """The schema violations in ``doc`` (empty when valid), one line each with its JSON path.

    The check needs ``jsonschema`` (a development dependency, not a run-time one): without it this
    logs one warning and finds nothing, so a benchmark still runs where only the run-time
    packages are installed.
    """
    try:
        import jsonschema
    except ImportError:
        log.warning("jsonschema is not installed: the result was not checked against its schema")
        return []
    return [
        "$" + "".join(f"/{part}" for part in e.absolute_path) + f": {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)
    ]


# a row whose p90 exceeds its p50 by more than this is marked unstable: its p50 is not a rate
UNSTABLE_SPREAD = 1.25
# a matmul peak that moved by more than this between the start and the end of the sweep
PEAK_DRIFT = 0.10


def spread(row: dict[str, Any]) -> float:
    """p90 / p50 of a row's latency: how far its calls scatter."""
    latency = row["latency_ms"]
    return latency["p90"] / latency["p50"] if latency["p50"] > 0 else float("inf")


def noise_notes(doc: dict[str, Any]) -> list[str]:
    """Lines that say which rows and peaks of a ``sizes`` run are too noisy to read as rates."""
    lines = []
    rows = doc["results"] if doc["scenario"] == "sizes" else []
    unstable = [r for r in rows if spread(r) > UNSTABLE_SPREAD]
    if unstable:
        names = ", ".join(f"{r['backend']} {r['height']}x{r['width']}" for r in unstable)
        lines.append(
            f"unstable (marked !, p90 over {UNSTABLE_SPREAD:g}x p50): {names}; the machine was "
            "busy or the calls too few (--iters, --min-time)"
        )
    for name, peak in doc["machine"]["peaks"].items():
        start, end = peak.get("start_gflops_per_s"), peak.get("end_gflops_per_s")
        if start and end and abs(start - end) > PEAK_DRIFT * max(start, end):
            lines.append(
                f"peak {name} drifted from {start:.1f} to {end:.1f} GFLOP/s during the run: the "
                "machine's rate changed, so ratios between rows measured at different times are "
                "unreliable"
            )
    return lines


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The scenario's rows as (header, cells): one layout for the console and Markdown."""
    if doc["scenario"] == "sliding-window":
        header = [
            "size",
            "windows",
            "one pass ms",
            "all windows ms",
            "speedup",
            "GFLOPs pass/windows",
            "corr",
            "top-1 agree",
            "max |diff|",
            "equal",
        ]
        rows = [
            [
                f"{r['height']}x{r['width']}",
                str(r["windows"]),
                _fmt(r["conv_ms"], ".1f"),
                _fmt(r["fc_windows_ms"], ".1f"),
                f"{r['speedup']:.2f}x",
                f"{r['conv_gflops']:.1f}/{r['fc_windows_gflops']:.1f}",
                f"{r['score_correlation']:.6f}",
                _pct(r["top1_agreement"]),
                f"{r['max_abs_diff']:.2e}",
                "-" if r["equal"] is None else str(r["equal"]).lower(),
            ]
            for r in doc["sliding_window"]
        ]
        return header, rows
    if doc["scenario"] == "static-vs-dynamic":
        header = [
            "size",
            "dynamic p50 ms",
            "static p50 ms",
            "dynamic/static",
            "static build s",
            "static build s (cache)",
        ]
        rows = [
            [
                f"{r['height']}x{r['width']}",
                f"{r['dynamic_p50_ms']:.2f}",
                f"{r['static_p50_ms']:.2f}",
                f"{r['dynamic_over_static']:.2f}",
                f"{r['static_build_s']:.1f}",
                f"{r['static_build_cached_s']:.1f}",
            ]
            for r in doc.get("static_vs_dynamic", {}).get("rows", [])
        ]
        return header, rows
    if doc["scenario"] == "stream":
        header = [
            "backend",
            "frames",
            "shapes",
            "total s",
            "img/s",
            "MP/s",
            "first/repeat",
            "label agree",
        ]
        rows = [
            [
                r["backend"],
                str(r["frames"]),
                str(r["distinct_shapes"]),
                f"{r['total_s']:.2f}",
                f"{r['images_per_s']:.2f}",
                f"{r['megapixels_per_s']:.3f}",
                _fmt(r["first_call_over_repeat"], ".2f"),
                _pct(r["label_agreement"]),
            ]
            for r in doc["stream"]
        ]
        return header, rows
    header = [
        "backend",
        "size",
        "batch",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p90/p50",
        "img/s",
        "MP/s",
        "e2e p50 ms",
        "GFLOPs/img",
        "GFLOP/s",
        "% peak",
        "speedup",
        "max |err|",
        "label agree",
        "peak RSS MB",
    ]
    rows = [
        [
            r["backend"],
            f"{r['height']}x{r['width']}",
            str(r["batch"]),
            f"{r['latency_ms']['p50']:.1f}",
            f"{r['latency_ms']['p90']:.1f}",
            f"{r['latency_ms']['p99']:.1f}",
            f"{spread(r):.2f}" + (" !" if spread(r) > UNSTABLE_SPREAD else ""),
            f"{r['images_per_s']:.2f}",
            f"{r['megapixels_per_s']:.3f}",
            _fmt((r["e2e_latency_ms"] or {}).get("p50"), ".1f"),
            f"{r['gflops_per_image']:.1f}",
            f"{r['achieved_gflops_per_s']:.1f}",
            _pct(r["peak_fraction"]),
            _fmt(r["speedup_vs_torch"], ".2f"),
            _fmt(r["max_abs_err"], ".2e"),
            _pct(r["label_agreement"]),
            _fmt(r["peak_host_mb"], ".0f"),
        ]
        for r in doc["results"]
    ]
    return header, rows


def _footer(doc: dict[str, Any]) -> list[str]:
    lines = [f"skipped {s['backend']}: {s['reason']}" for s in doc["skipped"]]
    for name, peak in doc["machine"]["peaks"].items():
        rate = _fmt(peak["gflops_per_s"], ".1f")
        lines.append(f"peak {name}: {rate} GFLOP/s ({peak['method']})")
    return lines + noise_notes(doc) + list(doc.get("notes", []))


def format_console(doc: dict[str, Any]) -> str:
    header, rows = table(doc)
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *rows]
    ]
    return "\n".join([*lines[:1], "  ".join("-" * w for w in widths), *lines[1:], *_footer(doc)])


def format_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "no GPU"
    lines = [
        f"### `{doc['scenario']}` on {m['cpu']} ({m['usable_cores']} cores), {gpu}",
        "",
        f"Model: {doc['model']['label']}. Command: `{doc['command']}`",
        "",
        *_md_table(*table(doc)),
        "",
        *(f"- {line}" for line in _footer(doc)),
    ]
    return "\n".join(lines) + "\n"


def format_summary(docs: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> str:
    """One Markdown page over several ``sizes`` runs (batch 1 and 8, say): the machine once, their
    rows in one table (it has a batch column), every skipped backend, then ``notes``."""
    lines = ["# fcn-bench summary", ""]
    if docs:
        m = docs[0]["machine"]
        gpu = m["gpu"]["name"] if m.get("gpu") else "no GPU"
        lines += [f"Machine: {gpu}; {m['cpu']} ({m['usable_cores']} cores).", ""]
        lines += [f"Model: {docs[0]['model']['label']}.", ""]
        rows = [row for doc in docs for row in table(doc)[1]]
        lines += [*_md_table(table(docs[0])[0], rows), ""]
        for doc in docs:
            batch = doc.get("config", {}).get("batch")
            lines += [f"- batch {batch}: {line}" for line in _footer(doc)]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]


def write_json(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def write_markdown(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, format_markdown(doc))


def write_plot(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """PNG. Sizes: latency against megapixels per backend (log-log) and speedup over eager FP32
    per size. Sliding window: both approaches' time per image size. Stream: throughput per
    backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if doc["scenario"] == "sizes":
        _plot_sizes(doc["results"], left, right)
    elif doc["scenario"] == "sliding-window":
        rows = doc["sliding_window"]
        mp = [r["height"] * r["width"] / 1e6 for r in rows]
        left.loglog(mp, [r["conv_ms"] for r in rows], "o-", label="convolutionalized, one pass")
        left.loglog(
            mp, [r["fc_windows_ms"] for r in rows], "s-", label="FC classifier per 224×224 window"
        )
        left.set(xlabel="megapixels", ylabel="ms per image", title="dense scoring time")
        left.legend()
        right.bar([f"{r['height']}x{r['width']}" for r in rows], [r["speedup"] for r in rows])
        right.set(ylabel="speedup of one pass", title="one pass vs sliding window")
    elif doc["scenario"] == "static-vs-dynamic":
        rows = doc.get("static_vs_dynamic", {}).get("rows", [])
        names = [f"{r['height']}x{r['width']}" for r in rows]
        left.bar(names, [r["dynamic_over_static"] for r in rows])
        left.set(ylabel="dynamic / static p50", title="run-time cost of one dynamic engine")
        right.bar(names, [r["static_build_s"] for r in rows], label="no timing cache")
        right.bar(names, [r["static_build_cached_s"] for r in rows], label="warm timing cache")
        right.set(ylabel="static engine build s", title="per-shape builds")
        right.legend()
        for s in doc["skipped"]:
            left.text(0.02, 0.5, f"skipped: {s['reason']}", transform=left.transAxes, fontsize=8)
    else:
        rows = doc["stream"]
        left.bar([r["backend"] for r in rows], [r["images_per_s"] for r in rows])
        left.set(ylabel="images/s", title="stream throughput")
        right.bar([r["backend"] for r in rows], [r["first_call_over_repeat"] or 0 for r in rows])
        right.set(ylabel="first call / repeat (median)", title="cost of a new shape")
    machine = doc["machine"]["gpu"]["name"] if doc["machine"].get("gpu") else doc["machine"]["cpu"]
    fig.suptitle(f"fcn-bench {doc['scenario']}: {doc['model']['label']} on {machine}")
    drift = [line for line in noise_notes(doc) if line.startswith("peak ")]
    if drift:
        fig.text(0.5, 0.005, drift[0], ha="center", fontsize=7, color="firebrick")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_sizes(rows: list[dict[str, Any]], left: Any, right: Any) -> None:
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    sizes = list(dict.fromkeys(f"{r['height']}x{r['width']}" for r in rows))
    bar = 0.8 / max(1, len(backends))
    for i, name in enumerate(backends):
        mine = sorted(
            (r for r in rows if r["backend"] == name), key=lambda r: r["height"] * r["width"]
        )
        mp = [r["height"] * r["width"] / 1e6 for r in mine]
        p50 = [r["latency_ms"]["p50"] / r["batch"] for r in mine]
        p90 = [r["latency_ms"]["p90"] / r["batch"] for r in mine]
        line = left.errorbar(  # the bar reaches p90: the spread, not only the median
            mp, p50, yerr=[[0.0] * len(p50), [b - a for a, b in zip(p50, p90, strict=True)]],
            fmt="o-", capsize=3, label=name,
        )  # fmt: skip
        for x, y, r in zip(mp, p50, mine, strict=True):
            if spread(r) > UNSTABLE_SPREAD:
                left.annotate("unstable", (x, y), fontsize=7, color=line[0].get_color())
        speed = {f"{r['height']}x{r['width']}": r["speedup_vs_torch"] or 0 for r in mine}
        right.bar(
            [j + i * bar for j in range(len(sizes))],
            [speed.get(s, 0) for s in sizes],
            bar,
            label=name,
        )
    left.set(
        xlabel="megapixels per image", ylabel="p50 ms per image", title="latency against input size"
    )
    left.legend()
    right.axhline(1.0, color="gray", lw=0.8)
    right.set_ylim(
        0, 1.35 * max([r["speedup_vs_torch"] or 0 for r in rows] + [1.0])
    )  # room for the legend
    right.set_xticks([j + bar * (len(backends) - 1) / 2 for j in range(len(sizes))], sizes)
    right.set(ylabel="speedup over eager FP32 (p50)", title="speedup per size")
    right.legend()
