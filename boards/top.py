"""Board top: clock, reset, UART pins and LEDs around the platform-independent SoC.

:class:`BoardTop` is thin on purpose (the verilog-ethernet ``fpga.v`` / ``fpga_core.v`` split):
the SoC (:class:`mixpe.hw.soc.AcceleratorSoC`, or the :class:`mixpe.boards.echo.EchoSoC`
loopback for flow tests) sees only ``rx``/``tx`` and the ``sync`` domain.

Clocking: the core clock is ``config.host.clk_hz``. When it equals the board oscillator the
platform's default ``sync`` domain is used (amaranth's power-on reset through the GSR/SB_GB
logic). Otherwise (ECP5 only) an ``EHXPLLL`` makes it from the oscillator; the divider values
come from ``yowasp-ecppll`` (the same tool flow), and ``sync`` is held in reset until the PLL
locks. The UART divisor is ``round(actual_clk_hz / baud)``.

LEDs (as many as the board has, active as the platform defines): 0 heartbeat (~1 Hz), 1 a
program runs (SoC ``led_running`` or ``busy``), 2 UART rx activity, 3 tx activity (stretched
pulses), 4 error (``led_error``).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from amaranth import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from . import Board, resolve_core_kw

__all__ = ["BoardTop", "ecp5_pll_params", "make_soc"]


def make_soc(kind: str, config, *, clocks_per_bit: int, core_kw=None):
    """The SoC component: ``"accelerator"`` (``AcceleratorSoC``) or ``"echo"`` (loopback)."""
    if kind == "echo":
        from .echo import EchoSoC

        return EchoSoC(clocks_per_bit=clocks_per_bit)
    if kind != "accelerator":
        raise ValueError(f"soc must be one of accelerator, echo, not {kind!r}")
    try:
        from mixpe.hw.soc import AcceleratorSoC
    except ModuleNotFoundError as e:
        if e.name == "mixpe.hw.soc":
            raise FileNotFoundError("mixpe.hw.soc (AcceleratorSoC) is not written yet") from None
        raise
    return AcceleratorSoC(config, clocks_per_bit=clocks_per_bit, core_kw=core_kw or None)


def ecp5_pll_params(f_in_hz: int, f_out_hz: int) -> dict:
    """EHXPLLL settings for ``f_in_hz`` → ``f_out_hz`` from ``yowasp-ecppll``.

    Returns ``{"CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOP_CPHASE", "CLKOP_FPHASE",
    "f_out_hz", "f_vco_hz"}``; ``f_out_hz`` is what the PLL actually makes.
    """
    from mixpe.hw.synth import tool_path

    tool = tool_path("yowasp-ecppll")
    with tempfile.TemporaryDirectory(prefix="mixpe-pll-") as tmp:
        out = Path(tmp) / "pll.v"
        proc = subprocess.run([tool, "-i", f"{f_in_hz / 1e6:g}", "-o", f"{f_out_hz / 1e6:g}",
                               "-f", out.name], capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0 or not out.is_file():
            raise ValueError(f"yowasp-ecppll cannot make {f_out_hz} Hz from {f_in_hz} Hz: "
                             f"{(proc.stderr or proc.stdout).strip()}")
        text = out.read_text()
    params = {k: int(v) for k, v in re.findall(
        r"\.(CLKI_DIV|CLKFB_DIV|CLKOP_DIV|CLKOP_CPHASE|CLKOP_FPHASE)\((\d+)\)", text)}
    m = re.search(r"clkout0 frequency: ([\d.]+) MHz", proc.stdout)
    f_out = round(float(m.group(1)) * 1e6) if m else \
        round(f_in_hz / params["CLKI_DIV"] * params["CLKFB_DIV"])
    params["f_out_hz"] = f_out
    params["f_vco_hz"] = f_out * params["CLKOP_DIV"]
    return params


class BoardTop(Elaboratable):
    """The top of a board build.

    Parameters
    ----------
    board : Board
        The board (``mixpe.boards.BOARDS``).
    config : CoreConfig
        The core; ``config.host.clk_hz`` is the core clock and ``config.host.baud`` the UART
        rate.
    soc : str
        ``"accelerator"`` or ``"echo"``.
    core_kw : dict, optional
        Core build options (default: the board's).
    pll : dict, optional
        Precomputed :func:`ecp5_pll_params` (computed on demand otherwise).
    """

    def __init__(self, board: Board, config, *, soc: str = "accelerator", core_kw=None,
                 pll=None):
        if not isinstance(board, Board):
            raise TypeError(f"board must be a Board, not {board!r}")
        self._board = board
        self._config = config
        self._soc_kind = soc
        self._core_kw = resolve_core_kw(board.core_kw if core_kw is None else core_kw, config)
        clk_hz = config.host.clk_hz
        self._pll = None
        if clk_hz != board.clock_hz:
            if board.family != "ecp5":
                raise ValueError(f"host.clk_hz must be {board.clock_hz} on {board.name} "
                                 f"(the oscillator; no PLL in this flow), not {clk_hz}")
            self._pll = pll or ecp5_pll_params(board.clock_hz, clk_hz)
            if abs(self._pll["f_out_hz"] - clk_hz) > clk_hz * 0.001:
                raise ValueError(f"host.clk_hz {clk_hz} cannot be made from the "
                                 f"{board.clock_hz} Hz oscillator (nearest "
                                 f"{self._pll['f_out_hz']} Hz)")
        self.clk_hz = self._pll["f_out_hz"] if self._pll else board.clock_hz
        self.clocks_per_bit = max(4, round(self.clk_hz / config.host.baud))

    @property
    def pll(self):
        return self._pll

    def elaborate(self, platform):
        m = Module()
        board = self._board
        if self._pll is not None:
            m.submodules.clk_buf = clk_in = io.Buffer(
                "i", platform.request(board.clock_resource, 0, dir="-"))
            m.domains.sync = cd_sync = ClockDomain("sync")
            clk_out, locked = Signal(), Signal()
            p = self._pll
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{board.clock_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{p['f_out_hz'] / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=p["CLKOP_FPHASE"],
                p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["CLKFB_DIV"],
                i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_in.i, i_CLKFB=clk_out,
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0), o_CLKOP=clk_out, o_LOCK=locked,
            )
            m.d.comb += cd_sync.clk.eq(clk_out)
            m.submodules.rst_sync = ResetSynchronizer(~locked, domain="sync")
            platform.add_clock_constraint(clk_out, self.clk_hz)
        soc = make_soc(self._soc_kind, self._config, clocks_per_bit=self.clocks_per_bit,
                       core_kw=self._core_kw)
        m.submodules.soc = soc
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [soc.rx.eq(rx_buf.i), tx_buf.o.eq(soc.tx)]

        leds = []
        for i in range(board.leds):
            try:
                led = io.Buffer("o", platform.request("led", i, dir="-"))
            except Exception:  # noqa: BLE001 - fewer LEDs than expected: use what there is
                break
            m.submodules[f"led_{i}"] = led
            leds.append(led)
        heartbeat = Signal(range(max(2, self.clk_hz // 2)))
        beat = Signal()
        with m.If(heartbeat == 0):
            m.d.sync += [heartbeat.eq(self.clk_hz // 2 - 1), beat.eq(~beat)]
        with m.Else():
            m.d.sync += heartbeat.eq(heartbeat - 1)
        stretch = self.clk_hz // 20  # 50 ms pulses for the activity LEDs
        rx_act, tx_act = Signal(range(stretch + 1)), Signal(range(stretch + 1))
        for act, line in ((rx_act, rx_buf.i), (tx_act, soc.tx)):
            with m.If(~line):
                m.d.sync += act.eq(stretch)
            with m.Elif(act != 0):
                m.d.sync += act.eq(act - 1)
        members = soc.signature.members

        def port(*names):
            return next((getattr(soc, n) for n in names if n in members), Const(0))

        status = [beat, port("busy", "led_running"), rx_act != 0, tx_act != 0,
                  port("led_error")]
        for led, value in zip(leds, status):
            m.d.comb += led.o.eq(value)
        return m

