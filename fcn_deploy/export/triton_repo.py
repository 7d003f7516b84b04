"""A Triton model repository for the official Triton containers: ``DIR/<name>/config.pbtxt``
plus ``DIR/<name>/1/model.onnx`` (platform ``onnxruntime_onnx``) or ``1/model.plan``
(``tensorrt_plan``).

Writes files and runs nothing. Height and width are ``-1`` (the exports are dynamic), the
batch dimension is Triton's (``max_batch_size`` from the export, so ``dims`` exclude it), the
dynamic batcher is on (it merges requests of equal shape only), and the fcn-deploy metadata
(classes, palette, preprocessing, bounds: the ONNX file's own ``fcn_deploy.*`` properties) is
copied into ``parameters`` so ``GET /v2/models/<name>/config`` shows it. For ONNX, Triton's
TensorRT execution accelerator can be turned on with FP16, with an optimization profile
covering the export's bounds so it builds one engine instead of one per new shape. For a plan,
every instance is given every optimization profile of the engine: without ``profile`` in its
instance group Triton uses profile 0 alone (ModelInstanceGroup.profile, model_config.proto:
"If not specified, the server will select the first optimization profile by default"; the
TensorRT backend's InitOptimizationProfiles creates a context for "default", index 0, only), so
shapes only a later profile holds would fail.

External-data files the ONNX model names are copied with it, keeping their relative layout under
``1/``; only files inside the model's folder are accepted (`external_data_files`).

The model folder is assembled beside its destination and renamed into place: a failure leaves
no half-written model, and an existing one is replaced only once the new one is complete, and
only if fcn-deploy wrote it (its ``.fcn-deploy`` mark lists every file with its size; Triton
reads only ``config.pbtxt`` and numbered version folders there, and allows other files such as
label files beside them: its docs/user_guide/model_repository.md).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .._gate import regular_file
from .._io import current_umask, make_output_dir, os_reason
from .._owned import check_replaceable, publish, temp_name, temp_space, write_folder_mark
from ..errors import FCNError
from .external_data import external_data_files
from .metadata import OnnxMetadata, read_onnx_metadata

__all__ = [
    "INSTANCE_KINDS",
    "MODEL_NAME",
    "TritonRepoReport",
    "triton_model_config",
    "write_triton_repo",
]

log = logging.getLogger(__name__)

INSTANCE_KINDS = ("gpu", "cpu")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_TYPES = {"uint8": "TYPE_UINT8", "fp32": "TYPE_FP32", "fp16": "TYPE_FP16"}
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # what Triton accepts as a model name
OPT_HW = 512  # the size the TensorRT accelerator's profile is tuned for (PASCAL VOC images ≤ 500)


@dataclass(frozen=True)
class TritonRepoReport:
    """What `write_triton_repo` wrote."""

    model_dir: Path
    config_path: Path
    model_file: Path
    platform: str
    max_batch: int

    def summary(self) -> str:
        return (
            f"{self.model_dir}: Triton model ({self.platform}, max batch {self.max_batch}) — "
            f"serve it with tritonserver --model-repository {self.model_dir.parent}"
        )


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _io(meta: OnnxMetadata) -> tuple[str, list[int], str, list[int]]:
    """(input type, input dims, output type, output dims) without the batch dimension."""
    if meta.io == "image":  # uint8 N×H×W×3 BGR → uint8 labels N×H×W
        return _TYPES["uint8"], [-1, -1, 3], _TYPES["uint8"], [-1, -1]
    dtype = _TYPES["fp16" if meta.fp16_io else "fp32"]  # float N×3×H×W → logits N×C×H×W
    return dtype, [3, -1, -1], dtype, [meta.info.num_classes, -1, -1]


def _profile_shapes(meta: OnnxMetadata, max_batch: int) -> dict[str, str]:
    """TensorRT-accelerator profile covering the export's bounds (``name:NxHxWx3`` / NCHW)."""
    b = meta.bounds
    top = b.max_hw or (OPT_HW, OPT_HW)
    opt = (min(OPT_HW, top[0]), min(OPT_HW, top[1]))

    def shape(n: int, hw: tuple[int, int]) -> str:
        dims = [n, hw[0], hw[1], 3] if meta.io == "image" else [n, 3, hw[0], hw[1]]
        return f"{meta.input_name}:{'x'.join(str(d) for d in dims)}"

    return {
        "trt_profile_min_shapes": shape(b.min_batch, b.min_hw),
        "trt_profile_opt_shapes": shape(1, opt),
        "trt_profile_max_shapes": shape(max_batch, top),
    }


def triton_model_config(
    name: str,
    platform: str,
    meta: OnnxMetadata,
    max_batch: int,
    instances: int = 1,
    kind: str = "gpu",
    queue_delay_us: int = 100,
    tensorrt_fp16: bool = False,
    profiles: int = 1,
) -> str:
    """The ``config.pbtxt`` text (Triton's ``ModelConfig`` in protobuf text format); ``profiles``:
    how many optimization profiles a ``tensorrt_plan`` engine has (each instance gets all)."""
    if platform not in ("onnxruntime_onnx", "tensorrt_plan"):
        raise FCNError(f"platform must be onnxruntime_onnx or tensorrt_plan, got {platform!r}")
    if kind not in INSTANCE_KINDS:
        raise FCNError(f"kind must be one of {', '.join(INSTANCE_KINDS)}, got {kind!r}")
    if platform == "tensorrt_plan" and kind != "gpu":
        raise FCNError("kind='cpu' cannot run a TensorRT plan; use kind='gpu'")
    if tensorrt_fp16 and (platform != "onnxruntime_onnx" or kind != "gpu"):
        raise FCNError("tensorrt_fp16 applies to ONNX models on GPU instances only")
    if max_batch < 1:
        raise FCNError(f"max_batch must be at least 1, got {max_batch}")
    if instances < 1:
        raise FCNError(f"instances must be at least 1, got {instances}")
    if queue_delay_us < 0:
        raise FCNError(f"queue_delay_us must be ≥ 0, got {queue_delay_us}")
    if profiles < 1:
        raise FCNError(f"profiles must be at least 1, got {profiles}", param="profiles")
    in_type, in_dims, out_type, out_dims = _io(meta)
    group = f"count: {instances} kind: KIND_{kind.upper()}"
    if platform == "tensorrt_plan":  # every profile, or Triton serves profile 0 alone
        group += " profile: [" + ", ".join(_quote(str(i)) for i in range(profiles)) + "]"
    lines = [
        f"name: {_quote(name)}",
        f"platform: {_quote(platform)}",
        f"max_batch_size: {max_batch}",
        "input [",
        f"  {{ name: {_quote(meta.input_name)} data_type: {in_type} dims: {in_dims} }}",
        "]",
        "output [",
        f"  {{ name: {_quote(meta.output_name)} data_type: {out_type} dims: {out_dims} }}",
        "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
        f"instance_group [ {{ {group} }} ]",
    ]
    if tensorrt_fp16:
        accelerator = {
            "precision_mode": "FP16",
            "max_workspace_size_bytes": str(4 << 30),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": f"/tmp/triton-trt-cache/{name}",
            **_profile_shapes(meta, max_batch),
        }
        lines.append("optimization { execution_accelerators { gpu_execution_accelerator [ {")
        lines.append('  name: "tensorrt"')
        lines += [f"  parameters {{ key: {_quote(k)} value: {_quote(v)} }}"
                  for k, v in accelerator.items()]  # fmt: skip
        lines.append("} ] } }")
    for key, value in meta.to_props().items():  # the ONNX file's fcn_deploy.* metadata
        lines.append(
            f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}"
        )
    return "\n".join(lines) + "\n"


def write_triton_repo(
    repo: str | os.PathLike[str],
    model: str | os.PathLike[str],
    name: str = "fcn",
    metadata: OnnxMetadata | None = None,
    max_batch: int | None = None,
    instances: int = 1,
    kind: str = "gpu",
    queue_delay_us: int = 100,
    tensorrt_fp16: bool = False,
    profiles: int = 1,
) -> TritonRepoReport:
    """Write ``repo/<name>/`` for ``model`` (an fcn-export ONNX file, or a TensorRT engine).

    ``metadata`` defaults to the ONNX file's own; for an engine pass its sidecar's (the engine
    layer reads it: ``read_sidecar(path).onnx``), ``max_batch`` (its profiles' largest batch)
    and ``profiles`` (how many it has). ``max_batch`` defaults to the export's.
    """
    model, repo_dir = Path(model), Path(repo)
    regular_file(model, param="model")
    if not MODEL_NAME.match(name):
        raise FCNError(
            f"name={name!r}: a Triton model name uses letters, digits, '.', '_' and '-' only",
            param="name",
        )
    engine = model.suffix.lower() in ENGINE_SUFFIXES
    if metadata is None:
        if engine:
            raise FCNError("metadata is required for an engine (its sidecar's onnx entry)")
        metadata = read_onnx_metadata(model)
    max_batch = max_batch if max_batch is not None else metadata.bounds.max_batch
    if max_batch is None:
        raise FCNError("max_batch: the export sets no batch limit; pass one")
    platform = "tensorrt_plan" if engine else "onnxruntime_onnx"
    text = triton_model_config(name, platform, metadata, max_batch, instances, kind,
                               queue_delay_us, tensorrt_fp16, profiles)  # fmt: skip
    model_name = "model.plan" if engine else "model.onnx"
    # external data keeps its layout under 1/ (the model names it by relative path)
    extras = [] if engine else external_data_files(model)
    if Path(model_name) in extras:
        raise FCNError(
            f"{model} keeps external data in a file named {model_name}, which is the name Triton "
            "gives the model itself; rename that file (or save the model as one file)"
        )

    final = repo_dir / name
    check_replaceable(final, "the Triton model")  # before anything is copied
    make_output_dir(repo_dir)
    with temp_space(repo_dir, f"cannot write {final}") as space:
        staging = temp_name(space)
        (staging / "1").mkdir(parents=True)
        copies = [(model, staging / "1" / model_name)]
        copies += [(model.parent / e, staging / "1" / e) for e in extras]
        for source, target in copies:
            _copy(source, target, final / target.relative_to(staging))
        (staging / "config.pbtxt").write_text(text, encoding="utf-8")
        files = {str(p.relative_to(staging)): p.stat().st_size
                 for p in staging.rglob("*") if p.is_file()}  # fmt: skip
        write_folder_mark(staging, "triton-model", files)
        for folder in (staging, staging / "1"):
            os.chmod(folder, 0o777 & ~current_umask())
        if final.exists():
            log.warning("%s exists and is replaced by the new model", final)
        publish(staging, final, "the Triton model")
    return TritonRepoReport(final, final / "config.pbtxt", final / "1" / model_name, platform,
                            max_batch)  # fmt: skip


def _copy(source: Path, target: Path, shown: Path) -> None:
    """Copy one file into the staging folder; a failed write names the file being written
    (``shown``: where it ends up), not the source (shutil puts the source in the error)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(source, target)
    except OSError as e:
        if e.filename2 is None and e.filename == os.fspath(source):
            raise FCNError(f"{source}: cannot read ({os_reason(e)})") from None
        raise FCNError(f"cannot write {shown}: {os_reason(e)}") from None
