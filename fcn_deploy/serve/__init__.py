"""Serving: a `Segmenter` behind NVIDIA Triton Inference Server (through PyTriton), and a client.

Needs the ``serve`` extra (from a clone, ``pip install -e ".[serve]"``: nvidia-pytriton,
tritonclient, numpy<2). `fcn_deploy.serve.server` runs the server (``fcn-serve``),
`fcn_deploy.serve.client` talks to one (``fcn-predict --server``), `fcn_deploy.serve.protocol`
is what both agree on, `fcn_deploy.serve.ui` is a page in the browser over a model or a server
(``fcn-ui``, the ``ui`` extra: Gradio). Imports of PyTriton, tritonclient and Gradio are deferred
to the call that needs them.
"""

from .protocol import (
    ENCODED_SUFFIX,
    IMAGE_BYTES_INPUT,
    IMAGE_INPUT,
    LABELS_OUTPUT,
    ServedModel,
)

__all__ = ["ENCODED_SUFFIX", "IMAGE_BYTES_INPUT", "IMAGE_INPUT", "LABELS_OUTPUT", "ServedModel"]
