"""``fcn-ui``: a page in the browser showing what a model does, image by image and frame by frame.

A thin client, built with Gradio (the ``ui`` extra), over one of two models: a `Segmenter` in
this process (`PageModel.load`) or a running ``fcn-serve`` (`PageModel.connect`, through
`RemoteSegmenter`). It has no model logic of its own: every file goes through fcn-serve's own
gate, `fcn_deploy.serve.server.decode_image` (the size bounds, the megapixel limit read from the
header before decoding, the decoders' guard) and a refusal is one line on the page.

Nothing is kept on disk. The page reads the files in the browser and sends them inside its event
request, so they never pass through Gradio's upload folder (its upload routes are refused); the
results come back as data URLs inside the page; a video is written to a private folder only
while it is segmented. Gradio's own folder is a private temporary one, removed on `stop`.
Requests are bounded: the body size (`UIConfig.max_upload_mb`), the files per request, the
frames per video, the requests worked on at once (``concurrency``) and waiting (``queue_size``).
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np

from .._sizes import sizes_text
from ..api import Segmenter
from ..api.video import VIDEO_HEAD_BYTES, looks_like_video, open_video, predict_frames
from ..errors import FCNError
from ..imageio import DEFAULT_MAX_MEGAPIXELS, check_megapixels, encode_label_png
from ..meta import ModelInfo
from .protocol import ServedModel
from .server import (
    _check_port_free,
    check_images,
    decode_image,
    run_until_signalled,
    served_model,
)
from .ui_assets import CSS, OPACITY_JS, RESULT_JS, UPLOAD_JS

if TYPE_CHECKING:
    from .client import RemoteSegmenter

__all__ = [
    "VIDEO_FOURCC",
    "PageModel",
    "PageServer",
    "UIConfig",
    "Upload",
    "parse_uploads",
    "render_image",
    "render_video",
    "serve_page",
]

log = logging.getLogger(__name__)

# The overlay video: VP8, which OpenCV's bundled FFmpeg encodes and browsers play, in Matroska
# (WebM is its subset; OpenCV writing .webm prints a spurious "tag not supported" line per video)
VIDEO_FOURCC = "VP80"
GUARDED_ROUTES = ("/upload", "/process_recording")  # Gradio's routes that write files to disk


@dataclass(frozen=True)
class UIConfig:
    """Where the page listens and how much it takes at once."""

    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 50.0  # the files of one request together
    max_files: int = 8  # files per request
    max_video_frames: int = 300  # a "short video": 10 s at 30 fps
    concurrency: int = 2  # requests worked on at once; the rest wait in the queue
    queue_size: int = 16  # requests that may wait; more are refused ("the queue is full")
    opacity: float = 0.5  # the overlay's opacity when the page opens

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise FCNError(f"port must be 1..65535, got {self.port}", param="port")
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise FCNError(
                f"max_upload_mb must be a number > 0, got {self.max_upload_mb}",
                param="max_upload_mb",
            )
        for name in ("max_files", "max_video_frames", "concurrency", "queue_size"):
            if getattr(self, name) < 1:
                raise FCNError(f"{name} must be at least 1, got {getattr(self, name)}", param=name)
        if not 0.0 <= self.opacity <= 1.0:  # NaN too
            raise FCNError(f"opacity must be in 0..1, got {self.opacity}", param="opacity")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        """The largest request the page accepts: the files in base64, with room for the rest."""
        return 4 * (self.max_upload_bytes // 3 + 1) + 2**20


class PageModel:
    """What the page runs: a local `Segmenter` or a `RemoteSegmenter` on a running fcn-serve.

    A local Segmenter runs one call at a time (a TensorRT context is not thread-safe, and
    ``last_timing`` belongs to the last call); fcn-serve orders and batches remote requests
    itself. ``served`` is what the page shows about the model (``served.bounds``: the sizes it
    takes); images over ``max_megapixels`` (None: no limit) are refused from their header.
    """

    def __init__(
        self,
        segmenter: Segmenter | RemoteSegmenter,
        served: ServedModel,
        source: str,
        max_megapixels: float | None,
    ) -> None:
        self.segmenter, self.served, self.source = segmenter, served, source
        self.max_megapixels = max_megapixels
        self.remote = not isinstance(segmenter, Segmenter)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str],
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
        device: str | None = None,
        backend: str | None = None,
        **runner_options: Any,
    ) -> PageModel:
        """A model file in this process, taking the sizes fcn-serve would serve it at."""
        segmenter = Segmenter.load(
            model, device=device, backend=backend, max_megapixels=max_megapixels, **runner_options
        )
        served = served_model(segmenter, segmenter.batch_size)
        return cls(segmenter, served, Path(model).name, max_megapixels)

    @classmethod
    def connect(
        cls,
        server: str,
        model_name: str = "fcn",
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    ) -> PageModel:
        """The model ``model_name`` of the fcn-serve at ``server`` (HOST:PORT, http:// or grpc://)."""
        from .client import RemoteSegmenter

        remote = RemoteSegmenter(server, model_name, max_megapixels=max_megapixels)
        source = f"{model_name} on fcn-serve at {remote.protocol}://{remote.address}"
        return cls(remote, remote.model, source, max_megapixels)

    @property
    def info(self) -> ModelInfo:
        return self.served.info

    @property
    def batch_size(self) -> int:
        return self.segmenter.batch_size

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Labels of decoded images (video frames), on the model the page shows."""
        if self.remote:
            return self.segmenter.predict_batch(images)
        with self._lock:
            return self.segmenter.predict_batch(images)

    def segment(self, data: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """An image file's bytes → (its pixels, its labels, seconds per step).

        The bytes are decoded by fcn-serve's `decode_image` with the served bounds; a remote
        model gets the file itself, which fcn-serve decodes (and checks) again on its side.
        """
        start = time.perf_counter()
        image = decode_image(data, self.served.ranges, self.max_megapixels)
        steps = {"decode": time.perf_counter() - start}
        if self.remote:
            start = time.perf_counter()
            labels = cast("RemoteSegmenter", self.segmenter).predict_encoded(data)
            steps["fcn-serve (round trip)"] = time.perf_counter() - start
            return image, labels, steps
        segmenter = cast(Segmenter, self.segmenter)
        with self._lock:
            labels = segmenter.predict(image)
            timing = segmenter.last_timing
        steps.update(preprocess=timing.preprocess, model=timing.model, labels=timing.postprocess)
        return image, labels, steps

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
        return self.segmenter.overlay(image, labels, alpha)

    def close(self) -> None:
        self.segmenter.close()


@dataclass(frozen=True)
class Upload:
    """One file the page sent: its name (as the browser gave it) and its bytes."""

    name: str
    data: bytes


def parse_uploads(payload: str | None, max_files: int, max_bytes: int) -> list[Upload]:
    """The page's upload field (a JSON list of ``{"name": ..., "data": <base64>}``) → files.

    Anything else, more than ``max_files`` files or more than ``max_bytes`` bytes in all is an
    `FCNError` with one line; sizes are checked from the base64 lengths, before decoding.
    """
    if not payload:
        return []
    try:
        items = json.loads(payload)
    except (ValueError, RecursionError):
        items = None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("data"), str)
        for i in items
    ):
        raise FCNError(
            "the request does not hold the page's list of files (reload the page and try again)"
        )
    if len(items) > max_files:
        raise FCNError(
            f"{len(items)} files at once; this page takes up to {max_files}", param="max_files"
        )
    total = sum(_decoded_size(i["data"]) for i in items)
    if total > max_bytes:
        raise FCNError(
            f"{_amount(total)} of files at once; this page takes up to {_amount(max_bytes)}",
            param="max_upload_mb",
        )
    uploads = []
    for i in items:
        name = _display_name(i["name"])
        try:
            data = base64.b64decode(i["data"], validate=True)
        except (binascii.Error, ValueError):
            raise FCNError(f"{name}: the file did not arrive whole (not base64)") from None
        uploads.append(Upload(name, data))
    return uploads


def _decoded_size(text: str) -> int:
    """The bytes base64 ``text`` decodes to (when it is base64), from its length alone."""
    return len(text) // 4 * 3 - (text.endswith("==") + text.endswith("="))


def _amount(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 // 10 else f"{size} bytes"


def _display_name(name: str) -> str:
    """A file name as one printable line (control characters escaped), at most 200 characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return (text[:197] + "...") if len(text) > 200 else (text or "unnamed")


def _file_stem(name: str) -> str:
    """A safe stem for download names: ``street view.jpg`` → ``street_view``."""
    return re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")[:80] or "file"


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _attr(value: Any) -> str:
    """A value as a JSON HTML attribute."""
    return html.escape(json.dumps(value, separators=(",", ":")), quote=True)


def _legend(counts: np.ndarray, info: ModelInfo) -> tuple[str, dict[str, list[Any]]]:
    """The legend table of the classes present (most pixels first) and their colour → class map
    (for the class under the cursor)."""
    total = int(counts.sum())
    rows: list[str] = []
    colours: dict[str, list[Any]] = {}
    for c in sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c)):
        r, g, b = info.palette[c]
        name = info.class_names[c]
        colours.setdefault(f"{r},{g},{b}", [int(c), name])
        rows.append(
            f'<tr data-class="{c}" data-pixels="{int(counts[c])}">'
            f'<td><span class="fcn-swatch" style="background: rgb({r}, {g}, {b})"></span></td>'
            f"<td>{html.escape(name)}</td>"
            f'<td class="fcn-share">{_percent(100.0 * counts[c] / total)} %</td></tr>'
        )
    return f'<table class="fcn-legend">{"".join(rows)}</table>', colours


def _percent(value: float) -> str:
    """Two decimals; one significant digit below 0.01 (a class present never shows as 0.00)."""
    return f"{value:.2f}" if value >= 0.01 else f"{value:.1g}"


def _timing(steps: dict[str, float]) -> str:
    parts = [f"{name} {seconds * 1e3:.1f} ms" for name, seconds in steps.items()]
    return f'<p class="fcn-timing">{" · ".join(parts)}</p>'


def render_error(name: str | None, message: str) -> str:
    """One refusal as one line (a message never carries a traceback)."""
    text = " ".join(message.split())
    where = "" if name is None or text.startswith(name) else f"{_display_name(name)}: "
    return f'<p class="fcn-error">error: {html.escape(where + text)}</p>'


def render_image(model: PageModel, upload: Upload) -> str:
    """One image's card: the input beside the overlay, the legend, the timing, the downloads."""
    image, labels, steps = model.segment(upload.data)
    start = time.perf_counter()
    info = model.info
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise FCNError("cannot encode the picture for the page")
    png = encode_label_png(labels, info.palette)
    counts = np.bincount(labels.ravel(), minlength=info.num_classes)
    legend, colours = _legend(counts, info)
    steps["page"] = time.perf_counter() - start
    h, w = labels.shape
    stem = html.escape(_file_stem(upload.name), quote=True)
    return (
        f'<section class="fcn-card fcn-image" data-name="{html.escape(upload.name, quote=True)}"'
        f' data-height="{h}" data-width="{w}">'
        f"<h3>{html.escape(upload.name)} <small>{w}×{h}</small></h3>"
        '<div class="fcn-pair">'
        '<figure><img class="fcn-input" alt="input" '
        f'src="{_data_url("image/jpeg", jpeg.tobytes())}">'
        "<figcaption>input</figcaption></figure>"
        f'<figure><div class="fcn-view" data-classes="{_attr(colours)}">'
        '<img class="fcn-base" alt="">'
        f'<img class="fcn-colours" alt="labels" src="{_data_url("image/png", png)}"></div>'
        '<figcaption class="fcn-hover">overlay: point at a pixel to read its class</figcaption>'
        "</figure></div>"
        f"{legend}{_timing(steps)}"
        '<p class="fcn-downloads">'
        f'<a class="fcn-save-labels" download="{stem}_labels.png" '
        f'href="{_data_url("image/png", png)}">label PNG</a>'
        f'<a class="fcn-save-overlay" download="{stem}_overlay.png" href="#">'
        "overlay PNG (as shown)</a>"
        "</p></section>"
    )


def render_video(
    model: PageModel, upload: Upload, alpha: float, max_frames: int, folder: Path
) -> str:
    """One short video's card: the overlay video, the class fractions per frame as a plot (and
    as exact pixel counts in ``data-counts``), the legend over all frames, the timing."""
    start = time.perf_counter()
    info = model.info
    with tempfile.TemporaryDirectory(dir=folder) as work:
        source, output = Path(work) / "input", Path(work) / "overlay.mkv"
        source.write_bytes(upload.data)
        try:
            reader, video = open_video(source)
        except FCNError as e:
            raise FCNError(str(e).replace(str(source), upload.name)) from None
        indices: list[int] = []
        times: list[float] = []
        counts: list[np.ndarray] = []
        writer = None
        try:
            problem = check_images((1, video.height, video.width), model.served.ranges)
            if problem:
                raise FCNError(f"a frame of {video.width}x{video.height} (WxH): {problem}")
            check_megapixels(video.height, video.width, model.max_megapixels, "a video frame")
            if video.frames > max_frames:
                raise FCNError(_too_long(video.frames, max_frames), param="max_video_frames")
            fourcc = cv2.VideoWriter.fourcc(*VIDEO_FOURCC)
            writer = cv2.VideoWriter(str(output), fourcc, video.fps, (video.width, video.height))
            if not writer.isOpened():
                raise FCNError(f"this OpenCV cannot encode {VIDEO_FOURCC} video")
            frames = predict_frames(cast(Segmenter, model), reader, video)
            try:
                for frame in frames:
                    if len(indices) == max_frames:
                        raise FCNError(_too_long(None, max_frames), param="max_video_frames")
                    writer.write(model.overlay(frame.image, frame.labels, alpha))
                    indices.append(frame.index)
                    times.append(frame.time)
                    counts.append(np.bincount(frame.labels.ravel(), minlength=info.num_classes))
            finally:
                frames.close()
            writer.release()
            encoded = output.read_bytes()
        except FCNError as e:
            raise FCNError(str(e).replace(str(source), upload.name)) from None
        finally:
            reader.close()
            if writer is not None:
                writer.release()
    seconds = time.perf_counter() - start
    table = np.stack(counts)
    present = [int(c) for c in np.flatnonzero(table.sum(0))]
    legend, _ = _legend(table.sum(0), info)
    data = {"frames": indices, "pixels": video.width * video.height, "classes": present,
            "counts": table[:, present].tolist()}  # fmt: skip
    stem = html.escape(_file_stem(upload.name), quote=True)
    return (
        f'<section class="fcn-card fcn-video" data-name="{html.escape(upload.name, quote=True)}"'
        f' data-counts="{_attr(data)}">'
        f"<h3>{html.escape(upload.name)} <small>{video.width}×{video.height}, "
        f"{len(indices)} frames at {video.fps:g} fps</small></h3>"
        f'<video class="fcn-player" controls autoplay loop muted playsinline '
        f'src="{_data_url("video/webm", encoded)}"></video>'
        f'<figure class="fcn-plot">{_fraction_plot(np.array(times), table, present, info)}'
        "<figcaption>share of each class's pixels, frame by frame</figcaption></figure>"
        f"{legend}"
        f'<p class="fcn-timing">{len(indices)} frames in {seconds:.2f} s '
        f"({len(indices) / seconds:.1f} frames/s)</p>"
        f'<p class="fcn-downloads"><a download="{stem}_overlay.mkv" '
        f'href="{_data_url("video/x-matroska", encoded)}">overlay video (VP8)</a></p></section>'
    )


def _too_long(frames: int | None, max_frames: int) -> str:
    what = f"a video of {frames} frames" if frames else f"a video of more than {max_frames} frames"
    return (
        f"{what}; this page takes up to {max_frames} (cut it, or segment it whole with fcn-predict)"
    )


def _fraction_plot(
    times: np.ndarray, counts: np.ndarray, present: list[int], info: ModelInfo
) -> str:
    """Per-frame class shares as an inline SVG line plot (Matplotlib, without pyplot's state)."""
    from matplotlib.figure import Figure

    shares = 100.0 * counts / counts.sum(1, keepdims=True)
    figure = Figure(figsize=(7.0, 2.6), dpi=96)
    axes = figure.add_subplot()
    marker = "o" if len(times) == 1 else None
    for c in present:
        colour = tuple(v / 255 for v in info.palette[c])
        axes.plot(times, shares[:, c], color=colour, marker=marker, lw=1.5,
                  label=info.class_names[c])  # fmt: skip
    axes.set_xlabel("time (s)")
    axes.set_ylabel("pixels (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    text = io.StringIO()
    figure.savefig(text, format="svg", bbox_inches="tight")
    svg = text.getvalue()
    return svg[svg.index("<svg") :]


def render_facts(model: PageModel, config: UIConfig) -> str:
    """What the model is and what the page takes, as a table above the upload field."""
    s, info = model.served, model.info
    sizes = sizes_text(s.ranges, with_min=True)
    top_mp = model.max_megapixels
    limit = "no limit" if top_mp is None else f"{top_mp:g} megapixels"
    names = ", ".join(html.escape(n) for n in info.class_names)
    rows = {
        "model": html.escape(model.source),
        "variant": f"{html.escape(info.variant)} (width {info.width:g})",
        "classes": f"<details><summary>{info.num_classes}</summary>{names}</details>",
        "precision": html.escape(s.precision),
        "backend": html.escape(s.backend),
        "device": html.escape(s.device),
        "verification": html.escape(s.verification),
        "images": f"{sizes} (H×W), at most {limit}",
        "uploads": f"up to {config.max_files} files and {config.max_upload_mb:g} MB at once; "
        f"videos up to {config.max_video_frames} frames",
    }
    body = "".join(f'<tr data-fact="{k}"><th>{k}</th><td>{v}</td></tr>' for k, v in rows.items())
    heading = f"fcn-ui: {html.escape(info.variant)}, {html.escape(model.source)}"
    return f'<div class="fcn-facts"><h2>{heading}</h2><table>{body}</table></div>'


def _drop_zone(config: UIConfig) -> str:
    return (
        f'<div class="fcn-drop" data-max-files="{config.max_files}" '
        f'data-max-bytes="{config.max_upload_bytes}"><label><input type="file" multiple>'
        "Drop images (JPEG, PNG, BMP, TIFF, WebP) or a short video here, or click to choose"
        '</label><p class="fcn-status"></p></div>'
    )


def segment_request(
    model: PageModel, config: UIConfig, folder: Path, payload: str | None, alpha: float
) -> str:
    """The page's one event: every file of the request → its card, or its one-line error."""
    try:
        uploads = parse_uploads(payload, config.max_files, config.max_upload_bytes)
    except FCNError as e:
        return render_error(None, str(e))
    alpha = float(alpha) if 0.0 <= float(alpha) <= 1.0 else config.opacity
    cards = []
    for upload in uploads:
        try:
            if looks_like_video(upload.data[:VIDEO_HEAD_BYTES]):
                cards.append(render_video(model, upload, alpha, config.max_video_frames, folder))
            else:
                cards.append(render_image(model, upload))
        except FCNError as e:
            cards.append(render_error(upload.name, str(e)))
        except Exception as e:  # a bug or a failing server: logged whole here, one line there
            log.exception("%s: failed", upload.name)
            cards.append(render_error(upload.name, f"internal error ({type(e).__name__}: {e})"))
    return "".join(cards)


def build_page(model: PageModel, config: UIConfig, folder: Path) -> Any:
    """The Gradio Blocks of the page (not started); ``folder`` holds videos while they run."""
    import gradio as gr

    def segment(payload: str | None, alpha: float) -> tuple[str, str]:
        return segment_request(model, config, folder, payload, alpha), ""  # "": sent files go

    title = f"fcn-ui: {model.info.variant} ({model.source})"
    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.HTML(render_facts(model, config), elem_id="fcn-facts")
        with gr.Row(equal_height=False):
            drop = gr.HTML(
                "", html_template=_drop_zone(config), js_on_load=UPLOAD_JS,
                elem_id="fcn-upload", scale=3,
            )  # fmt: skip
            opacity = gr.Slider(
                0.0, 1.0, value=config.opacity, step=0.05, label="Overlay opacity",
                elem_id="fcn-opacity", scale=1,
            )  # fmt: skip
        result = gr.HTML("", js_on_load=RESULT_JS, elem_id="fcn-result")
        drop.submit(
            segment, [drop, opacity], [result, drop], api_name="segment",
            concurrency_limit=config.concurrency,
        )  # fmt: skip
        opacity.change(None, opacity, None, js=OPACITY_JS)
    page.queue(max_size=config.queue_size, default_concurrency_limit=config.concurrency)
    return page


class _Guard:
    """ASGI middleware in front of Gradio: refuses its routes that write uploads to disk, and
    request bodies over ``max_body`` bytes (declared or streamed) before they are read whole."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/").endswith(GUARDED_ROUTES):
            await _refuse(send, 403, "this page takes files inside its own requests only")
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_large = f"a request over {self.max_body} bytes"
        if not declared.isdigit() or int(declared) > self.max_body:
            await _refuse(send, 413, too_large)
            return
        received, over = 0, False

        async def counted() -> Any:  # a body without a declared length (chunked) is counted
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def answer(message: Any) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":  # instead of the app's own answer
                await _refuse(send, 413, too_large)

        await self.app(scope, counted, answer)


async def _refuse(send: Any, status: int, line: str) -> None:
    body = f"error: {line}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PageServer:
    """The page on ``config.host:config.port`` until `stop`.

    >>> with PageServer(PageModel.load("fcn8s.onnx"), UIConfig(port=7860)) as page:
    ...     page.wait()        # until request_stop() (a signal handler) is called
    """

    def __init__(self, model: PageModel, config: UIConfig) -> None:
        self.model, self.config = model, config
        self.folder: Path | None = None
        self._page: Any = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.config.port}/"

    def start(self) -> None:
        """Build the page and listen; returns once it answers."""
        c = self.config
        _check_port_free(c.host, c.port, "port")
        self.folder = Path(tempfile.mkdtemp(prefix="fcn-ui-"))
        # Gradio names its folder from these when it is imported and when a page is built
        os.environ["GRADIO_TEMP_DIR"] = str(self.folder / "gradio")
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        try:
            from starlette.middleware import Middleware

            self._page = build_page(self.model, c, self.folder)
            self._page.launch(
                server_name=c.host, server_port=c.port, share=False, prevent_thread_lock=True,
                quiet=True, show_error=False, footer_links=["api"], run_history=False,
                enable_monitoring=False, mcp_server=False, pwa=False, ssr_mode=False,
                max_file_size=0, css=f":root {{ --fcn-alpha: {c.opacity}; }}{CSS}", app_kwargs={
                    "middleware": [Middleware(_Guard, max_body=c.max_body_bytes)]},
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        log.debug("page on %s: %s", self.url, self.model.source)

    def wait(self, poll: float = 0.5) -> None:
        """Block until `request_stop` (or `stop`) is called."""
        while not self._stopped.wait(poll):
            pass

    def request_stop(self) -> None:
        """Make `wait` return (safe from a signal handler); `stop` does the stopping."""
        self._stopped.set()

    def stop(self) -> None:
        """Stop listening (requests in progress are dropped) and remove the page's folder."""
        self._stopped.set()
        page, self._page = self._page, None
        if page is not None:
            page.close(verbose=False)
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> PageServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_page(
    model: PageModel,
    config: UIConfig = UIConfig(),
    ready: Callable[[PageServer], None] | None = None,
) -> None:
    """Serve the page until SIGTERM/SIGINT, then stop; ``ready`` is called once it listens."""
    run_until_signalled(PageServer(model, config), ready)
