"""``fcn-serve``: serve a model on NVIDIA Triton Inference Server (HTTP, gRPC, metrics).

Two Triton models: NAME takes ``image`` (UINT8 [batch, H, W, 3] BGR) and returns ``labels``
(UINT8 [batch, H, W]), with equal sizes batched together; NAME_encoded takes ``image_bytes``
(a JPEG/PNG file as BYTES, shape [1]) and returns ``labels`` [H, W]. Class names, palette and
size bounds are in each model's config (GET /v2/models/NAME/config, "parameters"). SIGTERM or
Ctrl-C stops accepting requests, finishes the ones in flight and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..imageio import DEFAULT_MAX_MEGAPIXELS
from ..runtime import BACKENDS
from ._common import (
    OneLineParser,
    add_allow_unverified,
    add_verbosity,
    non_negative_int,
    parse_args,
    positive_float,
    positive_int,
    run_cli,
    say,
)

__all__ = ["build_parser", "main"]


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1..65535, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fcn-serve",
        description="Serve an FCN (.pt, .onnx or .engine) on a Triton Inference Server.",
        epilog=__doc__.split("\n\n", 1)[1].replace("``", ""),
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="checkpoint, ONNX file or engine")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--http-port", type=port, default=8000, metavar="PORT", help="default 8000")
    p.add_argument("--grpc-port", type=port, default=8001, metavar="PORT", help="default 8001")
    p.add_argument("--metrics-port", type=port, default=8002, metavar="PORT", help="default 8002")
    p.add_argument("--model-name", default="fcn", help="Triton model name (default fcn)")
    p.add_argument(
        "--max-batch", type=positive_int, default=8, metavar="N",
        help="largest batch the dynamic batcher forms from equal-size requests (default 8)",
    )  # fmt: skip
    p.add_argument(
        "--queue-delay", type=non_negative_int, default=100, metavar="US",
        help="microseconds a request may wait for others to batch with (default 100)",
    )  # fmt: skip
    p.add_argument(
        "--instances", type=positive_int, default=1, metavar="N",
        help="model instances, each a copy of the model running requests in parallel (default 1)",
    )  # fmt: skip
    p.add_argument("--backend", choices=BACKENDS, help="override the backend the suffix implies")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--variant", help="net of a bare PyTorch state dict (fcn8s, ...)")
    p.add_argument(
        "--log-verbose", type=non_negative_int, default=0, metavar="N",
        help="tritonserver's verbose log level (default 0: info, warnings and errors)",
    )  # fmt: skip
    p.add_argument(
        "--exit-timeout", type=positive_int, default=30, metavar="S",
        help="seconds to wait for in-flight requests on SIGTERM/Ctrl-C (default 30)",
    )  # fmt: skip
    p.add_argument(
        "--max-megapixels", type=positive_float, default=DEFAULT_MAX_MEGAPIXELS, metavar="MP",
        help="refuse requests with larger images; encoded files are checked from their header, "
        f"before decoding (default {DEFAULT_MAX_MEGAPIXELS:g})",
    )  # fmt: skip
    add_allow_unverified(p)
    add_verbosity(p)
    return p


_parser = build_parser()


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(_parser, argv)
    if args.log_verbose == 0:  # PyTriton's own notes; tritonserver's log is printed regardless
        logging.getLogger("pytriton").setLevel(logging.WARNING)
    from ..serve.server import FCNServer, ServeConfig, serve

    config = ServeConfig(
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, model_name=args.model_name, max_batch=args.max_batch,
        queue_delay_us=args.queue_delay, instances=args.instances, log_verbose=args.log_verbose,
        exit_timeout=args.exit_timeout, max_megapixels=args.max_megapixels,
        triton_log=os.devnull if args.quiet else None,  # -q: fcn-serve's own warnings and errors
    )  # fmt: skip

    def ready(server: FCNServer) -> None:
        c = server.config
        say(
            f"ready: {c.model_name} and {c.encoded_model_name} on http://{server.http_url} and "
            f"grpc://{server.grpc_url}"
        )

    options: dict[str, object] = {"variant": args.variant} if args.variant else {}
    options["allow_unverified"] = args.allow_unverified
    serve(args.model, config, device=args.device, backend=args.backend, ready=ready, **options)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``fcn-serve MODEL [options]``."""
    return run_cli(_main, argv, _parser)
