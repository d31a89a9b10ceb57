"""CompareOptions: validation with messages that name the flag, and a lossless round trip."""

from __future__ import annotations

import pytest

from gpudiff import CompareOptions, ConfigError
from gpudiff.backend import resolve_backend


def test_defaults_match_the_documented_ones():
    o = CompareOptions()
    assert (o.shape, o.color, o.normalize, o.edges, o.align, o.tolerance, o.bins) == (
        "error", "gray", "none", "none", False, 0.0, 256)
    assert o.metrics is None and o.wants("ssim") and o.wants("histogram")


def test_round_trip_through_dict():
    o = CompareOptions(color="rgb", blur=1.5, align=True, upsample=20, metrics="ssim,l1,kl")
    assert CompareOptions.from_dict(o.to_dict()) == o
    assert hash(o) == hash(CompareOptions.from_dict(o.to_dict()))


def test_metric_aliases_are_canonical_and_ordered():
    o = CompareOptions(metrics="kl, ssim,L1,manhattan_per_pixel,l0")
    assert o.metrics == ("manhattan", "zero_norm", "ssim", "histogram")
    assert o.wants("manhattan") and not o.wants("mse")


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"shape": "stretch"}, "--shape"),
        ({"color": "cmyk"}, "--color"),
        ({"normalize": "clahe"}, "--normalize"),
        ({"edges": "canny"}, "--edges"),
        ({"blur": -0.5}, "--blur"),
        ({"blur": float("nan")}, "--blur"),
        ({"upsample": 0}, "--upsample"),
        ({"upsample": 2.5, "align": True}, "--upsample"),
        ({"upsample": 4}, "--align"),
        ({"mask_zeros": True}, "--align"),
        ({"tolerance": -1}, "--tolerance"),
        ({"data_range": 0}, "--data-range"),
        ({"bins": 1}, "--bins"),
        ({"edge_threshold": 2.0}, "--edges"),
        ({"metrics": "psnr,bogus"}, "bogus"),
        ({"metrics": ""}, "--metrics"),
        ({"max_pixels": 0}, "--max-pixels"),
        ({"page": -1}, "--page"),
        ({"backend": "opencl"}, "--backend"),
    ],
)
def test_invalid_values_name_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag.replace("-", r"\-")):
        CompareOptions(**kwargs)


def test_unknown_keys_in_a_dict_are_refused():
    with pytest.raises(ConfigError, match="colour"):
        CompareOptions.from_dict({"colour": "gray"})


def test_frozen():
    with pytest.raises(Exception):
        CompareOptions().blur = 2.0  # type: ignore[misc]


def test_backend_resolution(monkeypatch):
    import numpy as np

    assert resolve_backend("numpy") is np
    monkeypatch.setenv("GPUDIFF_BACKEND", "numpy")
    assert resolve_backend(None) is np
    with pytest.raises(ConfigError, match="unknown backend"):
        resolve_backend("tpu")


def test_toml_config_sets_defaults_and_flags_win(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from gpudiff.cli._main import main

    a = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    b = a.copy()
    b[:, :8] += 3
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(a).save(pa)
    Image.fromarray(b).save(pb)
    cfg = tmp_path / "gpudiff.toml"
    cfg.write_text('[compare]\ntolerance = 2.5\nmetrics = ["zero_norm", "max_abs"]\nbackend = "numpy"\n')
    assert main(["compare", str(pa), str(pb), "--config", str(cfg), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["zero_norm"] == 32 * 8 and d["max_abs"] == 3 and d["manhattan"] is None
    assert main(["compare", str(pa), str(pb), "--config", str(cfg), "--json", "--tolerance", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["zero_norm"] == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'gray'\n")
    assert main(["compare", str(pa), str(pb), "--config", str(bad)]) == 2
    assert "colour" in capsys.readouterr().err
