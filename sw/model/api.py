"""One-call entry points for the command line (``mixpe compare`` / ``mixpe run``).

:func:`run_compare` builds the integer graph of a named model with a quant config, runs it on
the reference and on an executor (the core's golden model, or a board / simulation through
:mod:`mixpe.sw.driver`) batch by batch with a progress bar, and returns a
:class:`~.execute.Comparison` (``to_dict()`` for JSON, :func:`format_comparison` for text).

>>> r = run_compare(images=4, progress=False)           # digits-cnn, int8, core model
>>> r.bit_exact, sorted(r.meta)
(True, ['config', 'core', 'dataset', 'executor', 'model'])
"""

from __future__ import annotations

from ..core_config import CORE_PRESETS, CoreConfig
from .execute import AcceleratorExecutor, Comparison, CoreModelExecutor, ReferenceExecutor, compare

__all__ = ["run_compare", "make_executor", "format_comparison", "EXECUTORS"]

#: Executor names; any other string is a driver port (``model://…``, ``sim://…``, a serial
#: device) opened with :func:`mixpe.sw.driver.connect`.
EXECUTORS = ("reference", "core-model")


def _core(core) -> CoreConfig:
    if isinstance(core, CoreConfig):
        return core
    if core not in CORE_PRESETS:
        raise ValueError(f"core must be a CoreConfig or one of {', '.join(CORE_PRESETS)}, "
                         f"not {core!r}")
    return CORE_PRESETS[core]


def make_executor(executor: str = "core-model", core="ulx3s-8x8"):
    """An executor by name: ``"reference"``, ``"core-model"`` (on ``core``), or a driver port
    string (the board must have been built from ``core``)."""
    cfg = _core(core)
    if executor == "reference":
        return ReferenceExecutor()
    if executor == "core-model":
        return CoreModelExecutor(cfg)
    if not isinstance(executor, str) or not executor:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)} or a driver port, "
                         f"not {executor!r}")
    from ..driver import connect

    return AcceleratorExecutor(connect(executor, config=cfg), cfg)


def run_compare(*, model="digits-cnn", config="int8", dataset: str = "digits", root=None,
                core="ulx3s-8x8", executor: str = "core-model", images: int | None = 64,
                batch: int = 32, reference: bool = True, progress: bool = True) -> Comparison:
    """Quantize ``model`` with ``config`` and compare the reference with ``executor`` on the
    first ``images`` test images (None: all), ``batch`` at a time.

    ``reference=False`` runs only ``executor`` (accuracy and cycles, no bit comparison).
    Per-layer match rates are averaged over batches (equal weights per image), cycles summed,
    the first mismatch is the one of the earliest batch (its index is within that batch;
    ``batch_start`` says where the batch starts).
    """
    from rich.progress import Progress

    from . import build_int_graph

    for name, v, lo in (("images", images, 1), ("batch", batch, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    cfg = _core(core)
    fmodel, ig, data = build_int_graph(model, config, dataset=dataset, root=root,
                                       progress=progress)
    x, y = data.x_test, data.y_test
    if images is not None:
        x, y = x[:images], y[:images]
    execs = ([ReferenceExecutor()] if reference else []) + \
        ([make_executor(executor, cfg)] if executor != "reference" or not reference else [])
    total = Comparison(images=0, float_accuracy=None)
    hits_f = 0
    hits: dict = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("comparing", total=len(y))
        for b0 in range(0, len(y), batch):
            xb, yb = x[b0:b0 + batch], y[b0:b0 + batch]
            r = compare(fmodel, ig, execs, xb, yb)
            nb = len(yb)
            hits_f += round(r.float_accuracy * nb)
            for k, v in r.accuracy.items():
                hits[k] = hits.get(k, 0) + round(v * nb)
            for k, m in r.match.items():
                dst = total.match.setdefault(k, {})
                for layer, f in m.items():
                    dst[layer] = dst.get(layer, 0.0) + f * nb
            for k, fm in r.first_mismatch.items():
                if total.first_mismatch.get(k) is None and fm is not None:
                    total.first_mismatch[k] = dict(fm, batch_start=b0)
                else:
                    total.first_mismatch.setdefault(k, None)
            for k, c in r.cycles.items():
                dst = total.cycles.setdefault(k, {})
                for layer, v in c.items():
                    dst[layer] = dst.get(layer, 0) + v
            total.images += nb
            bar.advance(task, nb)
    n = max(1, total.images)
    total.float_accuracy = hits_f / n
    total.accuracy = {k: v / n for k, v in hits.items()}
    total.match = {k: {layer: f / n for layer, f in m.items()} for k, m in total.match.items()}
    cfg_name = next((k for k, v in CORE_PRESETS.items() if v == cfg), cfg.hash[:12])
    total.meta = dict(model=model if isinstance(model, str) else type(model).__name__,
                      config=ig.config.name if ig.config is not None else str(config),
                      dataset=dataset, core=cfg_name,
                      executor=executor if executor != "reference" or not reference
                      else "reference")
    return total


def format_comparison(r: Comparison) -> str:
    """A text report: accuracies, then one row per node (match rate per executor, cycles)."""
    lines = [f"images: {r.images}"]
    meta = getattr(r, "meta", None) or {}
    if meta:
        lines.append("  ".join(f"{k}: {v}" for k, v in meta.items()))
    if r.float_accuracy is not None:
        lines.append(f"float accuracy: {100 * r.float_accuracy:.2f} %")
    for k, v in r.accuracy.items():
        lines.append(f"{k} accuracy: {100 * v:.2f} %")
    names = list(r.match)
    layers = list(next(iter(r.match.values()), {}))
    head = f"{'node':<20}" + "".join(f"{'match ' + k:>22}" for k in names[1:]) + \
        "".join(f"{'cycles ' + k:>22}" for k in r.cycles if r.cycles[k])
    lines.append(head)
    for layer in layers:
        row = f"{layer:<20}" + "".join(f"{100 * r.match[k][layer]:>21.2f}%" for k in names[1:])
        row += "".join(f"{r.cycles[k].get(layer, ''):>22}" for k in r.cycles if r.cycles[k])
        lines.append(row)
    for k, fm in r.first_mismatch.items():
        if fm is not None:
            lines.append(f"first mismatch ({k}): {fm}")
    if len(names) > 1:
        lines.append("bit-exact" if r.bit_exact else "NOT bit-exact")
    return "\n".join(lines)

