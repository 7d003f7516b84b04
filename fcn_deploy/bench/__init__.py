"""fcn-bench: backends against eager PyTorch across input sizes, relative to the machine's limit.

``run_benchmark`` returns a result document (schema: ``report.SCHEMA``) whose rows are the typed
dataclasses of ``results``, serialized by ``results.to_json``; ``report`` prints it as a table,
writes JSON/Markdown and plots it. Everything here uses only the runner interface.
"""

from ..models import FCVGG16  # the sliding-window scenario's classifier, public here as before
from .backends import BENCH_BACKENDS, random_model
from .benchmark import run_benchmark
from .flops import flops_per_image, model_flops
from .report import (
    SCHEMA,
    format_console,
    format_markdown,
    format_summary,
    validate,
    write_json,
    write_markdown,
    write_plot,
)
from .results import (
    SCENARIOS,
    SizeRow,
    Skipped,
    SlidingWindowRow,
    StaticDynamicRow,
    StreamRow,
    to_json,
)
from .scenarios import BenchConfig
from .sliding_window import run_sliding_window

__all__ = [
    "BENCH_BACKENDS",
    "FCVGG16",
    "SCENARIOS",
    "SCHEMA",
    "BenchConfig",
    "SizeRow",
    "Skipped",
    "SlidingWindowRow",
    "StaticDynamicRow",
    "StreamRow",
    "flops_per_image",
    "format_console",
    "format_markdown",
    "format_summary",
    "model_flops",
    "random_model",
    "run_benchmark",
    "run_sliding_window",
    "to_json",
    "validate",
    "write_json",
    "write_markdown",
    "write_plot",
]
