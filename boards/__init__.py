"""mixpe.boards: the FPGA boards the accelerator is built for, and their simulated twins.

A :class:`Board` names an amaranth-boards platform, the core preset it carries
(``sw/core_config.py:CORE_PRESETS``), the build options of the core (``core_kw`` of
:class:`mixpe.hw.core.AcceleratorCore`), the board oscillator and how a bitstream is programmed
(the command amaranth-boards' ``toolchain_program`` runs). ``boards/top.py`` is the board top
(clock, reset, UART pins → ``AcceleratorSoC``, LEDs), ``boards/build.py`` the YoWASP build and
``flash``.

This module imports neither Amaranth nor amaranth-boards, so listing boards is cheap.

>>> sorted(BOARDS)
['icebreaker', 'ulx3s']
>>> get_board("ulx3s").preset
'ulx3s-8x8'
>>> get_board("arty")
Traceback (most recent call last):
...
ValueError: board must be one of icebreaker, ulx3s, not 'arty'
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Board", "BOARDS", "SIM_BOARDS", "DEFAULT_BOARD", "get_board", "sim_board_config",
           "resolve_core_kw"]


@dataclass(frozen=True)
class Board:
    """One FPGA board.

    Parameters
    ----------
    name : str
        CLI name (``--board``).
    description : str
        Human-readable board and device.
    platform : str
        ``"module:Class"`` of the amaranth-boards platform.
    family : str
        ``"ice40"`` or ``"ecp5"`` (selects the synthesis script and the report parser).
    preset : str
        Key of ``CORE_PRESETS``: the core the board carries by default.
    core_kw : dict
        Build options of ``AcceleratorCore`` (timing only, not results); the value ``"cols"``
        stands for the config's ``array.cols`` (see :func:`resolve_core_kw`).
    clock_resource, clock_hz : str, int
        The board oscillator; the core clock ``host.clk_hz`` is derived from it (a PLL on
        ECP5 when they differ).
    bitstream : str
        Extension of the bitstream file amaranth writes (``bin`` or ``bit``).
    programmer : tuple of str
        The program command as amaranth-boards' ``toolchain_program`` runs it, with
        ``{bitstream}`` for the file; ``programmer[0]`` is replaced by ``$<programmer_env>``
        when that variable is set.
    programmer_env : str
        Environment variable that overrides the programmer tool (amaranth-boards' convention).
    leds : int
        User LEDs the top drives (status: heartbeat, core busy, UART activity).
    clk_hz : int or None
        Core clock of a hardware build when it must differ from the preset's ``host.clk_hz``
        (the design does not meet the preset's clock yet); ``None``: the preset's. The
        simulated board always uses the preset (its UART runs at ``sim_clocks_per_bit``).
    """

    name: str
    description: str
    platform: str
    family: str
    preset: str
    core_kw: dict = field(default_factory=dict)
    clock_resource: str = ""
    clock_hz: int = 0
    bitstream: str = "bit"
    programmer: tuple = ()
    programmer_env: str = ""
    leds: int = 0
    clk_hz: int | None = None

    def programmer_command(self, bitstream, env=None) -> list[str]:
        """The exact command that programs ``bitstream`` (a path) onto the board.

        >>> get_board("icebreaker").programmer_command("top.bin", env={})
        ['iceprog', 'top.bin']
        >>> get_board("ulx3s").programmer_command("top.bit", env={"OPENFPGALOADER": "/opt/ofl"})
        ['/opt/ofl', '-b', 'ulx3s', '-m', 'top.bit']
        """
        import os

        env = os.environ if env is None else env
        cmd = [a.format(bitstream=str(bitstream)) for a in self.programmer]
        cmd[0] = env.get(self.programmer_env, cmd[0])
        return cmd


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker",
        description="1BitSquared iCEBreaker (Lattice iCE40UP5K-SG48)",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40",
        preset="ice40-4x4",
        # the UP5K has 8 DSPs and no room for 4 parallel requantizers (bench/core_fit.py)
        core_kw={"requant": "serial", "tile_cols": "cols"},
        clock_resource="clk12",
        clock_hz=12_000_000,
        bitstream="bin",
        programmer=("iceprog", "{bitstream}"),
        programmer_env="ICEPROG",
        leds=2,
    ),
    "ulx3s": Board(
        name="ulx3s",
        description="Radiona ULX3S-85F (Lattice ECP5 LFE5U-85F-6BG381C)",
        platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        family="ecp5",
        preset="ulx3s-8x8-mixed",
        core_kw={},
        clock_resource="clk25",
        clock_hz=25_000_000,
        bitstream="bit",
        programmer=("openFPGALoader", "-b", "ulx3s", "-m", "{bitstream}"),
        programmer_env="OPENFPGALOADER",
        leds=8,
        # The SoC (8×8 core + host link) reaches ~40 MHz on the 85F after placement (a 100 MHz
        # build fails timing), so hardware builds run the core from the 25 MHz oscillator
        # until the core meets the preset's 100 MHz (bench/core_fit.py).
        clk_hz=25_000_000,
    ),
}

#: The default ``--board``.
DEFAULT_BOARD = "ulx3s"

#: Simulated boards (``mixpe simboard``): name → (core preset, core build options). ``tiny``
#: exists only in simulation (a 2×2 core for fast tests).
SIM_BOARDS: dict[str, tuple[str, dict]] = {
    "ulx3s": (BOARDS["ulx3s"].preset, BOARDS["ulx3s"].core_kw),
    "icebreaker": (BOARDS["icebreaker"].preset, BOARDS["icebreaker"].core_kw),
    "tiny": ("tiny-2x2", {}),
}


def resolve_core_kw(core_kw: dict, config) -> dict:
    """``core_kw`` with ``"cols"``/``"rows"`` values replaced by the config's array size.

    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> resolve_core_kw({"tile_cols": "cols"}, CORE_PRESETS["tiny-2x2"])
    {'tile_cols': 2}
    """
    dims = {"cols": config.array.cols, "rows": config.array.rows}
    return {k: dims.get(v, v) if isinstance(v, str) else v for k, v in core_kw.items()}


def get_board(name) -> Board:
    """The :class:`Board` called ``name``; ``ValueError`` listing the boards otherwise."""
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(sorted(BOARDS))}, not {name!r}")
    return BOARDS[name]


def sim_board_config(name, config=None):
    """``(CoreConfig, core_kw)`` of a simulated board; ``config`` (a CoreConfig) overrides
    the preset.

    >>> cfg, kw = sim_board_config("tiny")
    >>> cfg.array.rows, kw
    (2, {})
    """
    from mixpe.sw.core_config import CORE_PRESETS

    if name not in SIM_BOARDS:
        raise ValueError(f"board must be one of {', '.join(sorted(SIM_BOARDS))}, not {name!r}")
    preset, core_kw = SIM_BOARDS[name]
    cfg = config if config is not None else CORE_PRESETS[preset]
    return cfg, resolve_core_kw(core_kw, cfg)
