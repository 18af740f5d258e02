"""Parallel, cached evaluation of configs: in-process, a local process pool, or Dask.

:class:`Runner` evaluates batches of configs. Every result is written to the
:class:`~mixpe.sw.explore.problem.ResultCache` as soon as it arrives, and configs whose hash is
already cached are not evaluated again, so an interrupted sweep resumes. Each evaluation is one
task (:func:`~mixpe.sw.explore.problem.evaluate_task`, picklable); workers build the problem
once per process from its :class:`~mixpe.sw.explore.problem.ProblemSpec`.

The cache lives under ``cache_dir/<spec.key>`` (the key covers the problem, the evaluation
semantics version and the energy table), so results of another problem are never reused.

* ``workers=1`` and no scheduler: evaluate in this process;
* ``workers=N`` (default: the CPU count): a local ``ProcessPoolExecutor`` (spawn context);
* ``scheduler="tcp://HOST:PORT"``: a ``dask.distributed.Client`` on that scheduler (tasks
  submitted with ``client.submit``, collected with ``as_completed``).

A rich progress bar shows done/total and the ETA of each batch.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from pathlib import Path

from .problem import ProblemSpec, ResultCache, evaluate_task, get_problem
from .space import Config

__all__ = ["Runner"]


class Runner:
    """Evaluate configs of ``spec`` with a result cache under ``cache_dir``.

    Parameters
    ----------
    spec : ProblemSpec
    cache_dir : path
    workers : int or None
        Local worker processes (1: in-process). Ignored with ``scheduler``.
    scheduler : str or None
        Dask scheduler address, e.g. ``tcp://127.0.0.1:8786``.
    progress : bool
        Show rich progress bars.
    """

    def __init__(self, spec: ProblemSpec, cache_dir, *, workers: int | None = None,
                 scheduler: str | None = None, progress: bool = True):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"workers must be a positive integer, not {workers!r}")
        if scheduler is not None and not (isinstance(scheduler, str) and "://" in scheduler):
            raise ValueError(f"scheduler must be an address like tcp://HOST:PORT, not "
                             f"{scheduler!r}")
        self.spec = spec
        self.cache = ResultCache(Path(cache_dir) / spec.key)
        self.workers = workers or os.cpu_count() or 1
        self.scheduler = scheduler
        self.progress = progress
        self._pool = None
        self._client = None
        self.evaluated = 0      # evaluations run by this runner (cache misses)
        self.eval_seconds = 0.0  # wall time spent in batches with misses

    # -- backends ---------------------------------------------------------------------------
    def _submit_all(self, dicts):
        if self.scheduler is not None:
            if self._client is None:
                from dask.distributed import Client
                self._client = Client(self.scheduler)
            futs = [self._client.submit(evaluate_task, self.spec, d, pure=False) for d in dicts]
            from dask.distributed import as_completed
            return (f.result() for f in as_completed(futs))
        if self.workers == 1:
            return (evaluate_task(self.spec, d) for d in dicts)
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        futs = [self._pool.submit(evaluate_task, self.spec, d) for d in dicts]
        return (f.result() for f in cf.as_completed(futs))

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- API --------------------------------------------------------------------------------
    def evaluate(self, configs, label: str = "eval") -> list[dict]:
        """Results of ``configs`` (same order), from the cache or by evaluating the misses."""
        configs = list(configs)
        hashes = [c.hash for c in configs]
        have: dict = {}
        todo: dict = {}
        for c, h in zip(configs, hashes):
            if h in have or h in todo:
                continue
            r = self.cache.get(h)
            if r is not None:
                have[h] = r
            else:
                todo[h] = c
        if todo:
            t0 = time.perf_counter()
            dicts = [c.to_dict() for c in todo.values()]
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                          disable=not self.progress, transient=False) as bar:
                task = bar.add_task(f"{label} ({len(have)} cached)", total=len(dicts))
                for r in self._submit_all(dicts):
                    self.cache.put(r)
                    have[r["hash"]] = r
                    self.evaluated += 1
                    bar.advance(task)
            self.eval_seconds += time.perf_counter() - t0
        return [have[h] for h in hashes]

    def map(self, fn, args: list, label: str = "tasks") -> list:
        """``[fn(*a) for a in args]`` as tasks on the same backend (no result cache), in order;
        ``fn`` must be importable (e.g. synthesis jobs)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        out: list = [None] * len(args)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(),
                      disable=not self.progress) as bar:
            task = bar.add_task(label, total=len(args))
            if self.scheduler is not None:
                from dask.distributed import Client, as_completed
                if self._client is None:
                    self._client = Client(self.scheduler)
                futs = {self._client.submit(fn, *a, pure=False): k for k, a in enumerate(args)}
                for f in as_completed(list(futs)):
                    out[futs[f]] = f.result()
                    bar.advance(task)
            elif self.workers == 1:
                for k, a in enumerate(args):
                    out[k] = fn(*a)
                    bar.advance(task)
            else:
                if self._pool is None:
                    self._pool = cf.ProcessPoolExecutor(self.workers,
                                                        mp_context=mp.get_context("spawn"))
                futs = {self._pool.submit(fn, *a): k for k, a in enumerate(args)}
                for f in cf.as_completed(futs):
                    out[futs[f]] = f.result()
                    bar.advance(task)
        return out

    def problem(self):
        """The problem in this process (for the space, sensitivities and the int8 accuracy)."""
        return get_problem(self.spec)


def configs_of(results) -> list[Config]:
    return [Config.from_dict(r["config"]) for r in results]
