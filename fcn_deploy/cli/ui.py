"""``fcn-ui``: a page in the browser showing what a model does, image by image, frame by frame.

Open http://127.0.0.1:7860/ (the default), drop images or a short video: the overlay beside the
input with an opacity slider, the classes present with their pixel shares, the class under the
cursor, the time each step took, the label PNG and the overlay to download; a video's overlay
plays with its class shares per frame. The model runs in this process (MODEL), or on a running
fcn-serve (--server), which then checks every file again itself. Files go through fcn-serve's
checks (size bounds, --max-megapixels, the decoders') and nothing is kept on disk. SIGTERM or
Ctrl-C stops the page and exits 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..imageio import DEFAULT_MAX_MEGAPIXELS
from ..runtime import BACKENDS
from ._common import (
    OneLineParser,
    add_allow_unverified,
    add_verbosity,
    fraction,
    parse_args,
    positive_float,
    positive_int,
    run_cli,
)
from .serve import port

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="fcn-ui",
        description="A page in the browser showing what a model (or a running fcn-serve) does.",
        epilog=__doc__.split("\n\n", 1)[1].replace("``", ""),
    )
    p.add_argument("model", nargs="?", type=Path, metavar="MODEL",
                   help="checkpoint, ONNX file or engine to run in this process")  # fmt: skip
    p.add_argument(
        "--server", metavar="ADDRESS",
        help="use a running fcn-serve instead of MODEL: HOST:PORT, http://HOST:PORT or "
        "grpc://HOST:PORT",
    )  # fmt: skip
    p.add_argument("--model-name", default="fcn", help="fcn-serve's model name (default fcn)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=7860, help="default 7860")
    p.add_argument("--backend", choices=BACKENDS, help="override the backend the suffix implies")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--variant", help="net of a bare PyTorch state dict (fcn8s, ...)")
    p.add_argument(
        "--max-megapixels", type=positive_float, default=DEFAULT_MAX_MEGAPIXELS, metavar="MP",
        help=f"refuse larger images, from their header (default {DEFAULT_MAX_MEGAPIXELS:g})",
    )  # fmt: skip
    p.add_argument(
        "--max-upload-mb", type=positive_float, default=50.0, metavar="MB",
        help="the most one upload's files may weigh together (default 50)",
    )  # fmt: skip
    p.add_argument("--max-files", type=positive_int, default=8, metavar="N",
                   help="files per upload (default 8)")  # fmt: skip
    p.add_argument("--max-video-frames", type=positive_int, default=300, metavar="N",
                   help="the longest video the page takes, in frames (default 300)")  # fmt: skip
    p.add_argument(
        "--concurrency", type=positive_int, default=2, metavar="N",
        help="uploads worked on at once; more wait in a queue (default 2)",
    )  # fmt: skip
    p.add_argument("--queue", type=positive_int, default=16, metavar="N",
                   help="uploads that may wait; more are refused (default 16)")  # fmt: skip
    p.add_argument("--opacity", type=fraction, default=0.5, metavar="A",
                   help="the overlay's opacity at first, 0..1 (default 0.5)")  # fmt: skip
    add_allow_unverified(p)
    add_verbosity(p)
    return p


_parser = build_parser()


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(_parser, argv)
    if (args.model is None) == (args.server is None):
        _parser.error("give either MODEL or --server ADDRESS")
    local_only = {"--backend": args.backend, "--device": args.device, "--variant": args.variant,
                  "--allow-unverified": args.allow_unverified}  # fmt: skip
    given = [flag for flag, value in local_only.items() if value]
    if args.server is not None and given:
        _parser.error(f"{', '.join(given)}: for MODEL only (fcn-serve runs its own model)")
    from ..serve.ui import PageModel, PageServer, UIConfig, serve_page

    config = UIConfig(
        host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
        max_files=args.max_files, max_video_frames=args.max_video_frames,
        concurrency=args.concurrency, queue_size=args.queue, opacity=args.opacity,
    )  # fmt: skip
    if args.server is not None:
        model = PageModel.connect(args.server, args.model_name, args.max_megapixels)
    else:
        options: dict[str, object] = {"variant": args.variant} if args.variant else {}
        model = PageModel.load(
            args.model, args.max_megapixels, device=args.device, backend=args.backend,
            allow_unverified=args.allow_unverified, **options,
        )  # fmt: skip

    def ready(server: PageServer) -> None:
        print(f"ready: {server.url} ({model.source})", flush=True)

    try:
        serve_page(model, config, ready)
    finally:
        model.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``fcn-ui MODEL`` or ``fcn-ui --server ADDRESS``."""
    return run_cli(_main, argv, _parser)


if __name__ == "__main__":
    raise SystemExit(main())
