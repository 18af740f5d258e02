"""Quant config TOML: round trip, shipped configs, validation errors, layer lookup."""

import pytest
from mixpe.sw.model import QuantConfig, config_path, load_config
from mixpe.sw.model.qconfig import CONFIG_DIR, LayerQuant

SHIPPED = ("int8", "ant4-roup", "mixed")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_round_trip(name, tmp_path):
    c = load_config(name)
    assert c.name == name
    text = c.dumps()
    assert QuantConfig.loads(text) == c
    # save → load from path → same, and the text is stable
    p = c.save(tmp_path / "x.toml")
    c2 = load_config(p)
    assert c2 == c and c2.dumps() == text


def test_shipped_names_and_dir():
    assert {p.stem for p in CONFIG_DIR.glob("*.toml")} >= set(SHIPPED)
    assert config_path("ant4-roup") == CONFIG_DIR / "ant4-roup.toml"
    with pytest.raises(FileNotFoundError, match="shipped: .*int8"):
        config_path("no-such-config")


def test_round_trip_rich():
    c = QuantConfig(
        name="t", description="d",
        defaults=LayerQuant(weight_bits=4, weight_types=("int", "pot")),
        layers=(("first", LayerQuant(weight_bits=8)),
                ("conv2", LayerQuant(weight_bits=(4, 8), mult=("exact", "roup:p=1,r=4"))),
                ("fc", LayerQuant(mult=(("exact", "exact"), ("roup:p=1,r=4", "exact")),
                                  activation_bits=6, overflow="wrap", acc_bits=24))))
    assert QuantConfig.loads(c.dumps()) == c
    eff = c.layer("conv2", 1, 3)
    assert eff.weight_bits == (4, 8) and eff.weight_types == ("int", "pot")
    assert c.layer("conv1", 0, 3).weight_bits == 8          # "first"
    assert c.layer("fc", 2, 3).overflow == "wrap"
    assert c.layer("x", 1, 3, "layer1.conv1+layer1.bn1").weight_bits == 4


def test_defaults_filled():
    c = QuantConfig.loads("")
    d = c.defaults
    assert (d.activation_bits, d.weight_bits, d.weight_types, d.mult, d.acc_bits,
            d.overflow) == (8, 8, ("int",), "exact", 32, "saturate")


@pytest.mark.parametrize("text, pattern", [
    ("foo = 1", r"unknown keys foo; allowed: name, description"),
    ("[defaults]\nweight_bits = 9", r"defaults: weight_bits must be an integer in \[2, 8\]"),
    ("[defaults]\nweight_types = ['int', 'posit']", r"'posit' is not one of int, flint"),
    ("[defaults]\nmult = 'nosuch:n=8'", r"defaults: mult"),
    ("[layers.conv1]\nbits = 4", r"layers.conv1: unknown keys bits; allowed: activation_bits"),
    ("[layers.conv1]\nmult = ['exact', ['exact']]", r"only specs \(per filter\) or only lists"),
    ("[calibration]\nmethod = 'mean'", r"calibration.method must be 'max' or 'percentile'"),
    ("[finetune]\nepochs = -1", r"finetune.epochs must be an integer >= 0"),
    ("[defaults]\noverflow = 'clip'", r"overflow must be 'wrap' or 'saturate'"),
    ("[defaults\n", r"quant config TOML"),
])
def test_validation(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        QuantConfig.loads(text)


def test_unknown_layer_key():
    c = QuantConfig.loads("[layers.conv9]\nweight_bits = 4\n")
    with pytest.raises(ValueError, match=r"layers.conv9: no compute layer has this name"):
        c.check_layers([("conv1", "conv1+bn1"), ("fc", "fc")])
