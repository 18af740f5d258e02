"""``mixpe compare`` / ``mixpe run`` on the core's golden model (a few images)."""

import json

import pytest
from mixpe.sim.cli import main


def test_compare_json_and_plot(tmp_path, capsys):
    rc = main(["compare", "--quant", "int8", "--port", "model://ulx3s-8x8", "--images", "4",
               "--batch", "4", "--json", "-o", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["images"] == 4 and out["bit_exact"] is True
    assert set(out["accuracy"]) == {"reference", "accelerator"}
    assert all(v == 1.0 for v in out["match"]["accelerator"].values())
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert json.loads((tmp_path / "compare.json").read_text())["images"] == 4


def test_bad_port_names_the_parameter():
    with pytest.raises(ValueError, match="sim://BOARD"):
        from mixpe.sim.cmd_model import _core_for_port
        _core_for_port("sim://nope", None)
