"""Design-space exploration of quantization and multiplier configs (``mixpe explore``).

Modules: :mod:`.space` (configs, genes, TOML), :mod:`.qnet` (bit-exact quantized network),
:mod:`.costs` (resources, cycles, energy proxy), :mod:`.problem` (objectives, result cache),
:mod:`.pareto`, :mod:`.strategies` (seed methods and NSGA-II), :mod:`.runner` (local pool /
Dask, progress), :mod:`.report` (Markdown + PNG report).
"""
