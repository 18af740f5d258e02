"""The model flow: PyTorch CNN → quantized integer graph → accelerator programs.

* :mod:`.graph`: ``import_model(model, example)`` — torch.fx import, BN folding, ReLU fusion.
* :mod:`.qconfig`: ``QuantConfig`` (TOML), ``load_config(name or path)``.
* :mod:`.quantize`: ``quantize(graph, cfg, calib_x) → IntGraph`` (PTQ, ANT weight types,
  requant parameters, integer host ops).
* :mod:`.finetune`: ``finetune(model, graph, cfg, data)`` — QAT / approximation-aware STE.
* :mod:`.execute`: ``ReferenceExecutor``, ``CoreModelExecutor``, ``AcceleratorExecutor``,
  ``compare``.
* :mod:`.api`: ``run_compare(model=, config=, core=, executor=, images=)`` and
  ``format_comparison`` — what ``mixpe compare`` / ``mixpe run`` call.

``build_int_graph(model_name, config)`` does the whole flow for a named model.
"""

from .api import format_comparison, make_executor, run_compare
from .execute import (
    AcceleratorExecutor,
    Comparison,
    CoreModelExecutor,
    ReferenceExecutor,
    compare,
    lower_layer,
    resolve_variants,
)
from .graph import Graph, Node, import_model
from .qconfig import QuantConfig, config_path, load_config
from .quantize import IntGraph, IntNode, calibrate, quantize

__all__ = [
    "import_model", "Graph", "Node",
    "QuantConfig", "load_config", "config_path",
    "quantize", "calibrate", "IntGraph", "IntNode",
    "ReferenceExecutor", "CoreModelExecutor", "AcceleratorExecutor", "compare", "Comparison",
    "lower_layer", "resolve_variants", "build_int_graph",
    "run_compare", "make_executor", "format_comparison",
]


def build_int_graph(model="digits-cnn", config="int8", *, dataset="digits", root=None,
                    progress=True):
    """``(float model, IntGraph, Split)`` for a model name (or module) and a config name,
    path or :class:`QuantConfig`: trains/loads the model, imports it, fine-tunes when the
    config asks for it, quantizes with the training images as calibration data."""
    from ..data import load_dataset
    from ..models import trained_model

    data = load_dataset(dataset, root)
    m = trained_model(model, dataset, root=root, progress=progress) if isinstance(model, str) \
        else model
    cfg = config if isinstance(config, QuantConfig) else load_config(config)
    g = import_model(m, data.x_train[:2])
    if cfg.finetune.epochs:
        from .finetune import finetune

        return finetune(m, g, cfg, data, progress=progress)
    return m, quantize(g, cfg, data.x_train), data
