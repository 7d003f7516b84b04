"""The files an ONNX model names as external data, checked before anything opens or copies them.

An initializer may keep its bytes in another file (``external_data`` ``location``). ONNX Runtime,
OpenVINO and TensorRT read that file as weights, and a Triton repository copies it: a model from a
stranger could name ``/etc/shadow``, ``../../secret.txt`` or a symlink pointing elsewhere and
have it read, served back as outputs, or copied world-readable. Only older ONNX Runtime releases
accept such paths, so fcn-deploy checks them itself: every location must resolve (symlinks
included) to a file inside the model's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._gate import read_regular, regular_file
from ..errors import FCNError

__all__ = ["external_data_files", "held_tensors"]


def external_data_files(path: str | os.PathLike[str], model: Any | None = None) -> list[Path]:
    """The external-data files of the ONNX file ``path``, as written in it (relative to its folder).

    ``model``: the already parsed ``onnx.ModelProto`` (loaded without external data), to avoid a
    second parse. Raises `FCNError` for a location that is absolute, leaves the model's folder
    (``..``, or a symlink resolving outside it) or names no file.
    """
    path = Path(path)
    if model is None:
        import onnx

        data = read_regular(path, "ONNX model")
        try:
            model = onnx.load_model_from_string(data)  # external data is never loaded here
        except Exception as e:  # protobuf's DecodeError and friends: the caller words "not ONNX"
            raise FCNError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
    names = sorted(
        {e.value for t in held_tensors(model) for e in t.external_data if e.key == "location"}
    )
    folder = path.parent.resolve()
    files = []
    for name in names:
        relative = Path(name)
        target = (path.parent / relative).resolve()
        if relative.is_absolute() or not target.is_relative_to(folder):
            raise FCNError(
                f"{path} is refused: it names external data {name!r}, which resolves to "
                f"{target}, outside the model's folder {folder} (external-data files must lie "
                "in the model's folder or below it)"
            )
        if not target.exists():
            raise FCNError(f"{path} names external data {name!r}, which is not a file in {folder}")
        regular_file(target, "external-data file")  # a FIFO would block the runtime reading it
        files.append(relative)
    return files


def held_tensors(model: Any) -> list[Any]:
    """Every tensor an ONNX model holds, wherever a runtime would read one from: initializers
    (a sparse one's values and indices), node attributes (Constant's ``value`` and
    ``sparse_value``, any ``tensors``), in the main graph, every subgraph (If, Loop, Scan
    bodies) and every function. Each may keep its bytes in external data."""
    found: list[Any] = []
    graphs = [model.graph]
    nodes = [node for function in model.functions for node in function.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            found += graph.initializer
            found += [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
            nodes += graph.node
            continue
        for a in nodes.pop().attribute:
            found += ([a.t] if a.HasField("t") else []) + list(a.tensors)
            sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(
                a.sparse_tensors
            )
            found += [t for s in sparse for t in (s.values, s.indices)]
            graphs += ([a.g] if a.HasField("g") else []) + list(a.graphs)
    return found
