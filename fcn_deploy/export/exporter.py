"""Checkpoint → verified, self-describing, dynamic-shape ONNX.

Settings are explicit rather than left to defaults that changed across torch releases: the dynamo
exporter, opset 20, one self-contained file (``external_data=False``; full FCN-8s is ~537 MB in
FP32, well under protobuf's 2 GB), batch/height/width dynamic from 1 to a declared maximum.

Publication is atomic with the verification outcome inside: the file is written under a temp
name beside the target, verified there, its verification record appended, and only then renamed
into place. A crash, an out-of-memory kill or SIGTERM at any point leaves nothing under the final
name (an earlier file there stays as it was), so no reader can take an unverified model for a
verified one.

Each step is sized for a full FCN-8s (0.5 GB of weights) on a small machine: the weights exist
once, as the PyTorch net's tensors, until ONNX Runtime loads the written file. The exported
module shares them, the graph holds them aside (`fcn_deploy.export.proto`: no ModelProto with
weights is built, and the file is streamed from the tensors), the checks run on the graph
without them, the PyTorch references are computed before tracing so that the net is released
before ONNX Runtime loads the file, and the record is appended rather than the file rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import io as _io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from .._io import atomic_path, check_output_file, sha256_file
from .._progress import heartbeat
from ..caffemodel import is_caffe_file
from ..checkpoint import load_model
from ..errors import FCNError
from ..imageio import DEFAULT_MAX_MEGAPIXELS
from ..meta import ModelInfo, SizeBounds
from .checks import GraphSummary, check_graph, finish_graph
from .graph import DeployModule, Fp16Plan, copy_module, probe_fp16_plan
from .image_io import MAX_IMAGE_CLASSES, add_image_io
from .metadata import (
    IO_MODES,
    NOT_VERIFIED,
    PASSED,
    PRECISIONS,
    OnnxMetadata,
    append_verification,
    graph_digest,
)
from .proto import hold_weights, weightless, write_model
from .quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_HELD_OUT_IMAGES,
    CalibrationSource,
    Int8Accuracy,
    Int8Options,
    int8_accuracy,
    quantization_aware_finetune,
    quantize_model,
)
from .verify import (
    INT8_LABEL_AGREEMENT,
    Probe,
    VerifyRow,
    choose_sizes,
    compare_onnx,
    format_rows,
    reference_probes,
)

__all__ = ["MAX_PROTO_BYTES", "ExportReport", "export_onnx", "model_sha256"]

log = logging.getLogger(__name__)

Source = Union[str, "os.PathLike[str]", nn.Module]
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's hard limit for one self-contained file


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how well it matched PyTorch."""

    path: Path
    metadata: OnnxMetadata
    file_size: int
    export_seconds: float  # tracing, conversion, checks and writing (not loading or verification)
    graph: GraphSummary
    rows: list[VerifyRow] = field(default_factory=list)  # empty when verification was skipped
    seed: int | None = None
    fp32_layers: list[str] = field(default_factory=list)  # FP16/INT8 export: layers kept in FP32
    activation_peak: float | None = None  # FP16 export: largest |activation| on the probes
    int8: Int8Accuracy | None = None  # INT8 export: against FP32 on the source's held-out images

    @property
    def passed(self) -> bool:
        """Every verification row within tolerance (True when verification was skipped)."""
        return all(r.passed for r in self.rows) and (self.int8 is None or self.int8.passed)

    @property
    def fp16_label_agreement(self) -> float | None:
        """FP16 export: the worst label agreement with FP32 PyTorch over the verified sizes."""
        if self.metadata.precision != "fp16" or not self.rows:
            return None
        return min(r.label_agreement for r in self.rows)

    def table(self) -> str:
        return format_rows(self.rows, self.metadata)

    def failures(self) -> str:
        """What failed, in a few words ("" when everything passed)."""
        failed = sum(not r.passed for r in self.rows)
        parts = [f"{failed} of {len(self.rows)} probe sizes"] if failed else []
        if self.int8 is not None and not self.int8.passed:
            parts.append(f"INT8 on {self.int8.data}")
        return " and ".join(parts)


def model_sha256(model: nn.Module) -> str:
    """sha256 over an in-memory net's state dict (names, dtypes, shapes and bytes, in key order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_options(
    precision: str, io: str, fp16_io: bool, max_size: Sequence[int], max_batch: int, opset: int
) -> None:
    if precision not in PRECISIONS:
        raise FCNError(
            f"unknown precision={precision!r}; choose 'fp32', 'fp16' or 'int8'", param="precision"
        )
    if io not in IO_MODES:
        raise FCNError(f"unknown io={io!r}; choose 'tensor' or 'image'", param="io")
    if fp16_io and (precision != "fp16" or io != "tensor"):
        raise FCNError(
            "fp16_io=True needs precision='fp16' and io='tensor' (image I/O takes uint8 and "
            "returns uint8)",
            param="fp16_io",
        )
    if len(max_size) != 2 or any(int(v) < 1 for v in max_size):
        raise FCNError(
            f"max_size must be two positive numbers (H, W), got {'x'.join(map(str, max_size))}",
            param="max_size",
        )
    if int(max_batch) < 1:
        raise FCNError(f"max_batch must be at least 1, got {max_batch}", param="max_batch")
    if not 18 <= opset <= 23:
        raise FCNError(f"opset={opset} is not supported; use 18..23 (default 20)", param="opset")


def _load(source: Source, variant: str | None) -> tuple[nn.Module, ModelInfo, str]:
    if isinstance(source, nn.Module):
        info = getattr(source, "info", None)
        if not isinstance(info, ModelInfo):
            raise FCNError(
                "the module to export has no .info (ModelInfo); build it with fcn_deploy.models "
                "or load_model"
            )
        # a copy sharing FP32 weights: the caller's net is never changed, nor its weights doubled
        return copy_module(source, torch.float32).eval(), info, model_sha256(source)
    path = Path(source)
    if path.suffix.lower() == ".onnx" and not is_caffe_file(path):  # a caffemodel by its bytes
        raise FCNError(f"{path} is already ONNX; pass the checkpoint it was exported from")
    model = load_model(path, variant=variant)
    return model, model.info, sha256_file(path)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx prints step banners and registry warnings; we print our own progress instead."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _trace(module: DeployModule, meta: OnnxMetadata, opset: int) -> tuple[Any, dict[str, Any]]:
    """torch.onnx.export with dynamo, the opset and dynamic dims stated explicitly: the ModelProto
    with its large weights held aside (`hold_weights`), and those weights."""
    from torch.export import Dim

    (max_h, max_w), max_n = meta.bounds.max_hw or (4096, 4096), meta.bounds.max_batch or 1
    shape = (min(2, max_n), 3, min(64, max_h), min(64, max_w))
    example = torch.zeros(shape, dtype=torch.float16 if meta.fp16_io else torch.float32)
    dims: dict[int, Any] = {}
    for axis, name, top in ((0, "batch", max_n), (2, "height", max_h), (3, "width", max_w)):
        if top > 1:  # a dim with max 1 is static
            dims[axis] = Dim(name, min=1, max=top)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                external_data=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes=(dims,),
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # torch.export raises many types; all mean "this net did not export"
        cause: BaseException | None = e
        for _ in range(20):  # torch wraps even Ctrl-C/SIGTERM; that is a stop, not a failure
            if cause is None:
                break
            if isinstance(cause, KeyboardInterrupt):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise FCNError(f"torch.onnx.export failed: {first[:300]}") from None
    import onnx_ir as ir

    # held aside before serializing: no copy of the weights in the proto, and none kept alive by
    # the graph itself (onnxscript's rewrite rules hold on to the last graph they matched)
    weights = hold_weights(program.model)  # type: ignore[union-attr]  # dynamo=True: a program
    return ir.serde.serialize_model(program.model), weights  # type: ignore[union-attr]


def export_onnx(
    source: Source,
    output: str | os.PathLike[str],
    *,
    variant: str | None = None,
    precision: str = "fp32",
    io: str = "tensor",
    fp16_io: bool = False,
    max_size: Sequence[int] = (4096, 4096),
    max_batch: int = 32,
    opset: int = 20,
    verify: bool = True,
    verify_sizes: Sequence[tuple[int, int, int]] | None = None,
    seed: int | None = None,
    progress: bool = True,
    calibration: str | CalibrationSource = "synthetic",
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    calibration_method: str = "minmax",
    int8_target: str = "cpu",
    int8_options: Int8Options | None = None,
    min_label_agreement: float = INT8_LABEL_AGREEMENT,
    max_iu_drop: float = 1.0,
    held_out_images: int = DEFAULT_HELD_OUT_IMAGES,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
) -> ExportReport:
    """Export ``source`` (any file `load_model` reads, or a net with ``.info``) to ``output``.

    FP16 computes in half precision between explicit casts (FP32 I/O unless ``fp16_io``), with
    any layer whose activations on image-like probes come near FP16's range kept in FP32.
    ``io="image"`` folds the checkpoint's preprocessing and the argmax into the graph. With
    ``verify`` the written file runs under ONNX Runtime against PyTorch at ``verify_sizes``
    (N, H, W), or at sizes drawn from ``seed`` (random and reported when None); the report says
    whether every size was within tolerance. Each step is logged (``fcn_deploy`` logger, INFO);
    ``progress`` shows bars while the references are computed and the file is verified.

    INT8 (``precision="int8"``) puts Q/DQ pairs around the convolutions, with activation ranges
    calibrated on ``calibration_images`` images of ``calibration`` (``synthetic``, ``voc:ROOT``,
    ``sbd:ROOT`` or a folder/glob; each image read refused above ``max_megapixels``) by
    ``calibration_method`` (minmax, entropy, percentile), in the form ``int8_target`` runs
    fastest and best (``cpu``: uint8 activations for ONNX Runtime/OpenVINO; ``tensorrt``:
    symmetric int8, zero point 0); see `fcn_deploy.export.quantize`. Its verification adds label
    agreement with FP32 (and mean IU when the source has labels) on ``held_out_images`` images
    the calibration never saw; the report fails below ``min_label_agreement`` or past
    ``max_iu_drop`` points of mean IU. The random-size probes check INT8's shapes and values
    (finite, right size), not its accuracy: random pixels are not what a calibrated net is for.

    The file appears under ``output`` only once complete, with its verification status inside
    (`OnnxMetadata.verification`: ``"passed"``, ``"failed: ..."``, or ``"not verified"`` without
    ``verify``); an interrupted export leaves nothing there. A failed verification does not
    raise: the file stays for inspection (``report.passed`` is False), and `Segmenter.load`,
    `load_runner`, fcn-predict, fcn-serve and fcn-bench refuse it unless given
    ``allow_unverified=True`` / ``--allow-unverified``.
    """
    _check_options(precision, io, fp16_io, max_size, max_batch, opset)
    source_int8 = None
    if precision == "int8":
        source_int8 = (
            calibration
            if isinstance(calibration, CalibrationSource)
            else CalibrationSource.parse(calibration, max_megapixels)
        )
        _check_int8_options(calibration_images, min_label_agreement, max_iu_drop, held_out_images)
    output = check_output_file(output, (".onnx",))  # before the work, not after it
    start = time.perf_counter()
    model, info, sha = _load(source, variant)
    if io == "image" and info.num_classes > MAX_IMAGE_CLASSES:
        raise FCNError(
            f"image I/O returns uint8 labels, so at most {MAX_IMAGE_CLASSES} classes; this model "
            f"has {info.num_classes}: export with io='tensor' (float logits)",
            param="io",
        )
    params = sum(p.numel() for p in model.parameters())
    log.info(
        f"loaded {info.variant} (width {info.width:g}, {params / 1e6:.1f}M parameters) in "
        f"{time.perf_counter() - start:.1f}s"
    )
    bounds = SizeBounds((1, 1), (int(max_size[0]), int(max_size[1])), 1, int(max_batch))
    bytes_per_weight = {"fp16": 2, "int8": 1}.get(precision, 4)
    weight_bytes = sum(p.numel() * bytes_per_weight for p in model.parameters())
    if weight_bytes >= MAX_PROTO_BYTES:
        raise FCNError(
            f"weights take {weight_bytes / 2**30:.1f} GiB, over ONNX's 2 GiB single-file limit; "
            "export a smaller width or in fp16"
        )

    fp32_layers: list[str] = []
    peak: float | None = None
    plan = Fp16Plan()
    if precision == "fp16":
        log.info("measuring activation ranges for FP16 on image-like probes ...")
        plan = probe_fp16_plan(model)
        peak, fp32_layers = plan.peak, list(plan.fp32_layers)
        if fp32_layers:
            log.info(
                f"keeping {len(fp32_layers)} layer(s) in FP32 (near or past FP16's range): "
                f"{', '.join(fp32_layers)}"
            )

    import onnx

    calibration_batches: list[np.ndarray] = []
    options = int8_options or Int8Options(method=calibration_method, target=int8_target)
    if source_int8 is not None:
        log.info(f"reading {calibration_images} calibration image(s) from {source_int8.spec} ...")
        calibration_batches = _calibration_batches(
            source_int8.calibration_images(calibration_images),
            info,
            bounds,
            same_size=options.method != "minmax",
        )

    meta = OnnxMetadata(
        info=info,
        io=io,
        precision=precision,
        fp16_io=fp16_io,
        bounds=bounds,
        input_name="image" if io == "image" else "x",
        output_name="labels" if io == "image" else "logits",
        source_sha256=sha,
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        opset=opset,
    )
    report_seed: int | None = None
    probes: list[Probe] = []
    if verify:  # the PyTorch side now, while the net is held anyway
        if verify_sizes is None:
            report_seed = int(np.random.default_rng().integers(2**31) if seed is None else seed)
            log.info(
                f"verification seed {report_seed} (pass --seed {report_seed} to repeat these sizes)"
            )
            verify_sizes = choose_sizes(
                bounds, np.random.default_rng(report_seed), 640 if info.width <= 0.25 else 512
            )
        rng = np.random.default_rng(report_seed if report_seed is not None else seed)
        log.info(f"computing PyTorch references at {len(verify_sizes)} size(s) ...")
        probes = reference_probes(model, meta, verify_sizes, rng, progress=progress)
    with tempfile.TemporaryDirectory(prefix="fcn-export-") as scratch:
        fp32_graph = Path(scratch) / "fp32.onnx"  # INT8: the FP32 graph, scored against
        with atomic_path(output) as tmp:  # entered first: an unwritable path fails early
            log.info(f"exporting {info.variant} ({precision}, {io} I/O, opset {opset}, dynamo) ...")
            start = time.perf_counter()
            with heartbeat(f"exporting {info.variant}"):
                proto, weights = _trace(DeployModule(model, precision, fp16_io, plan), meta, opset)
            if source_int8 is not None:
                write_model(proto, fp32_graph, weights)  # the reference for INT8's accuracy
                weights = {}  # the quantized graph holds its own
                with heartbeat("quantizing to INT8"):
                    proto, fp32_layers, meta = _quantize(
                        model,
                        meta,
                        opset,
                        source_int8,
                        calibration_batches,
                        options,
                        Path(scratch),
                        progress,
                    )
            if io == "image":
                add_image_io(proto, info.preprocessing, meta.input_name, meta.output_name)
            finish_graph(proto, meta, same_size_output=info.variant != "vgg16")
            log.info("checking the graph (onnx.checker, shape inference, dtypes) ...")
            summary = check_graph(proto)
            structure = weightless(proto)  # what the file holds, without the weights' bytes
            meta = dataclasses.replace(meta, graph_sha256=graph_digest(proto))
            log.info(f"writing {output.name} (under a temp name until it is verified) ...")
            with heartbeat(f"writing {output.name}"):
                write_model(proto, tmp, weights)
            del model, proto, weights  # the PyTorch weights, before ONNX Runtime loads the file's
            gc.collect()  # torch.export's programs hold modules in reference cycles
            seconds = time.perf_counter() - start
            report = ExportReport(
                output, meta, 0, seconds, summary, seed=report_seed, fp32_layers=fp32_layers,
                activation_peak=peak,
            )  # fmt: skip
            if verify:
                # the file's external data are the structure's: none (parsed again otherwise)
                report.rows = compare_onnx(tmp, meta, probes, progress=progress, model=structure)
                if source_int8 is not None:
                    log.info(f"scoring INT8 against FP32 on {source_int8.spec} held-out images ...")
                    report.int8 = int8_accuracy(
                        fp32_graph,
                        tmp,
                        info,
                        io,
                        source_int8,
                        held_out_images,
                        skip=len(calibration_batches),
                        min_agreement=min_label_agreement,
                        max_iu_drop=max_iu_drop,
                        progress=progress,
                    )
            status = NOT_VERIFIED if not verify else PASSED
            if not report.passed:
                status = f"failed: {report.failures()}"
                log.info(f"verification failed ({report.failures()}): recorded in the file")
            report.metadata = dataclasses.replace(meta, verification=status)
            append_verification(tmp, report.metadata)
        report.file_size = output.stat().st_size
        log.debug(f"wrote {output} ({report.file_size / 2**20:.1f} MiB) in {seconds:.1f}s")
        return report


def _check_int8_options(
    calibration_images: int, min_label_agreement: float, max_iu_drop: float, held_out_images: int
) -> None:
    if calibration_images < 1:
        raise FCNError(
            f"calibration_images must be ≥ 1, got {calibration_images}", param="calibration_images"
        )
    if not 0.0 <= min_label_agreement <= 1.0:
        raise FCNError(
            f"min_label_agreement must be in 0..1, got {min_label_agreement}",
            param="min_label_agreement",
        )
    if not max_iu_drop >= 0.0:  # NaN too
        raise FCNError(f"max_iu_drop must be ≥ 0, got {max_iu_drop}", param="max_iu_drop")
    if held_out_images < 1:
        raise FCNError(
            f"held_out_images must be ≥ 1, got {held_out_images}", param="held_out_images"
        )


def _quantize(
    model: nn.Module,
    meta: OnnxMetadata,
    opset: int,
    source: CalibrationSource,
    batches: list[np.ndarray],
    options: Int8Options,
    scratch: Path,
    progress: bool,
) -> tuple[Any, list[str], OnnxMetadata]:
    """The INT8 Q/DQ graph of the FP32 graph saved at scratch/fp32.onnx, its FP32 layers and
    the metadata that records how it was calibrated."""
    log.info(
        f"quantizing to INT8 (Q/DQ; {options.method} ranges from {len(batches)} image(s) of "
        f"{source.spec}) ..."
    )
    overrides: dict[str, float] | None = None
    quantize_from = scratch / "fp32.onnx"
    if options.finetune_iterations > 0:
        log.info(f"quantization-aware fine-tuning, {options.finetune_iterations} steps ...")
        tuned, overrides = quantization_aware_finetune(
            model,
            source,
            batches,
            options.finetune_iterations,
            options.finetune_lr,
            progress=progress,
        )
        quantize_from = scratch / "finetuned.onnx"
        tuned_proto, tuned_weights = _trace(DeployModule(tuned), meta, opset)
        write_model(tuned_proto, quantize_from, tuned_weights)
    quantized, fp32_layers = quantize_model(quantize_from, batches, options, progress, overrides)
    meta = dataclasses.replace(
        meta,
        calibration={
            "source": source.spec,
            "method": options.method,
            "target": options.target,
            "finetune_iterations": options.finetune_iterations,
            "images": len(batches),
            "fp32_layers": fp32_layers,
        },
    )
    return quantized, fp32_layers, meta


def _calibration_batches(
    images: Sequence[np.ndarray], info: ModelInfo, bounds: SizeBounds, same_size: bool = False
) -> list[np.ndarray]:
    """Preprocessed 1×3×H×W batches, one per image; a clear error for one the model cannot take.

    ``same_size``: resize every image to the first one's size (ONNX Runtime's histogram
    calibrators, entropy and percentile, stack all activations and need equal shapes).
    """
    import cv2

    batches = []
    for k, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FCNError(
                f"calibration image {k} is {image.dtype} {image.shape}; expected uint8 H×W×3 BGR",
                param="calibration",
            )
        problem = bounds.violation(1, image.shape[0], image.shape[1])
        if problem:
            raise FCNError(
                f"calibration image {k}: {problem}; raise max_size or use smaller images",
                param="calibration",
            )
        if same_size and image.shape != images[0].shape:
            image = cv2.resize(image, (images[0].shape[1], images[0].shape[0]))
        batches.append(info.preprocessing.apply(image[None]))
    return batches
