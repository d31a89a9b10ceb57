"""When to trust an alignment: the confidence floor and the shift limit, on real pairs.

Registrable pairs (crops of real photographs with a known shift, with and without noise; real
consecutive frames; real motion pairs) must keep their shift; pairs that phase correlation cannot
register (an illumination change, a homography, unrelated photographs) must be caught, at every
image size. The floor, ``align.AUTO_SIGNIFICANCE``, was set from the same kinds of pairs.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from gpudiff import compare
from gpudiff.pair._align import AUTO_SIGNIFICANCE, Alignment, alignment_problem, phase_cross_correlation
from gpudiff.cli._main import main
from gpudiff.errors import ConfigError, InputError
from gpudiff.options import CompareOptions
from gpudiff.engine._store import ResultStore


def _gray(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)


def _photo(data_dir, name) -> np.ndarray:
    return _gray(next((data_dir / "skimage-data").glob(name + ".*")))


def _shifted_crops(img, dy, dx, frac=0.78):
    H, W = img.shape
    h, w = int(H * frac), int(W * frac)
    o0, o1 = int(H * 0.11), int(W * 0.11)
    return img[o0 : o0 + h, o1 : o1 + w], img[o0 + dy : o0 + dy + h, o1 + dx : o1 + dx + w]


REGISTRABLE = ["camera", "astronaut", "coffee", "coins", "brick", "moon", "cell", "clock_motion", "retina"]


@pytest.mark.parametrize("name", REGISTRABLE)
@pytest.mark.parametrize("noise", [0.0, 10.0])
def test_registrable_crops_keep_their_shift(data_dir, name, noise):
    img = _photo(data_dir, name)
    rng = np.random.default_rng(1)
    for dy, dx in [(3, -5), (17, 11), (int(img.shape[0] * 0.1), -int(img.shape[1] * 0.08))]:
        a, b = _shifted_crops(img, dy, dx)
        if noise:
            b = b + rng.normal(0, noise, b.shape).astype(np.float32)
        r = compare(a, b, align=True, metrics=["manhattan"])
        assert r.align_ok, (name, dy, dx, r.align_warning)
        # b[r, c] = a[r + dy, c + dx], so a[r, c] = b[r - dy, c - dx]: scikit-image's shift (dy, dx)
        assert r.shift == (float(dy), float(dx))
        assert r.significance >= AUTO_SIGNIFICANCE


def test_real_sequence_and_motion_pairs_are_trusted(data_dir):
    frames = sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))
    pairs = [(frames[i], frames[i + 1]) for i in range(0, len(frames) - 1, 10)]
    pairs += [(data_dir / "opencv-samples/pairs" / a, data_dir / "opencv-samples/pairs" / b)
              for a, b in [("rubberwhale1.png", "rubberwhale2.png"), ("basketball1.png", "basketball2.png")]]
    for a, b in pairs:
        r = compare(_gray(a), _gray(b), align=True, metrics=["manhattan"])
        assert r.align_ok, (a.name, r.align_warning)
        assert max(abs(s) for s in r.shift) < 20  # camera jitter and object motion, not a wild peak


@pytest.mark.parametrize("a,b", [("leuvenA.jpg", "leuvenB.jpg"), ("graf1.png", "graf3.png"),
                                 ("box.png", "box_in_scene.png")])
def test_unregistrable_real_pairs_are_caught(data_dir, a, b):
    A, B = (_gray(data_dir / "opencv-samples/pairs" / n) for n in (a, b))
    h, w = min(A.shape[0], B.shape[0]), min(A.shape[1], B.shape[1])
    A, B = A[:h, :w], B[:h, :w]
    r = compare(A, B, align=True, metrics=["manhattan"])
    assert r.align_ok is False
    assert "significance" in r.align_warning
    # compared unaligned: the same numbers as without --align
    plain = compare(A, B, metrics=["manhattan"])
    assert r.shift == (0.0, 0.0)
    assert r.pixels == plain.pixels == h * w
    assert r.manhattan == plain.manhattan


def test_unrelated_photographs_are_caught_at_every_size(data_dir):
    """None of these 84 unrelated pairs (8 photographs, 3 sizes) is trusted at a non-zero shift.

    The floor is a guard, not a proof: with photographs that have large flat areas (horse's white
    ground, retina's black surround) a few pairs pass (see ``align.AUTO_SIGNIFICANCE``)."""
    names = ["camera", "astronaut", "coffee", "brick", "grass", "moon", "page", "text"]
    harmful, cases = [], 0
    for x, y in itertools.combinations(names, 2):
        A, B = _photo(data_dir, x), _photo(data_dir, y)
        for size in (64, 160, None):
            h = min(A.shape[0], B.shape[0], size or 10**9)
            w = min(A.shape[1], B.shape[1], size or 10**9)
            al = phase_cross_correlation(A[:h, :w], B[:h, :w])
            cases += 1
            if alignment_problem(al, (h, w)) is None and al.shift != (0.0, 0.0):
                harmful.append((x, y, size, round(al.significance, 1), al.shift))
    assert cases == 84
    assert not harmful, harmful


def test_significance_is_confidence_over_the_size_scale(data_dir):
    a, b = _shifted_crops(_photo(data_dir, "camera"), 5, 7)
    al = phase_cross_correlation(a, b)
    assert al.significance == pytest.approx(al.confidence * np.sqrt(a.size) / 3)
    assert phase_cross_correlation(np.zeros((8, 8)), np.ones((8, 8))).significance == 0.0


def test_max_shift_fraction_and_pixels(data_dir):
    img = _photo(data_dir, "astronaut")  # 512 x 512: crops of 399 x 399
    a, b = _shifted_crops(img, 40, 0)  # 40 px of 399: 10 %
    assert compare(a, b, align=True, max_shift=0.25, metrics=["manhattan"]).align_ok
    r = compare(a, b, align=True, max_shift=0.05, metrics=["manhattan"])
    assert r.align_ok is False and "--max-shift" in r.align_warning
    assert compare(a, b, align=True, max_shift=40, metrics=["manhattan"]).align_ok  # pixels
    assert compare(a, b, align=True, max_shift=39, metrics=["manhattan"]).align_ok is False


def test_a_numeric_floor_applies_to_confidence_itself():
    al = Alignment((1.0, 2.0), 0.30, "phase", 1, 40.0)
    assert alignment_problem(al, (100, 100), min_confidence=0.25) is None
    assert "< --min-confidence 0.5" in alignment_problem(al, (100, 100), min_confidence=0.5)
    # masked NCC has no automatic floor (no size scale), but a numeric one applies
    masked = Alignment((1.0, 2.0), 0.2, "masked_ncc", 1)
    assert alignment_problem(masked, (100, 100)) is None
    assert alignment_problem(masked, (100, 100), min_confidence=0.5) is not None


def test_fail_mode_raises_a_one_line_input_error(data_dir):
    A = _gray(data_dir / "opencv-samples/pairs/leuvenA.jpg")
    B = _gray(data_dir / "opencv-samples/pairs/leuvenB.jpg")
    with pytest.raises(InputError, match="alignment not trusted") as e:
        compare(A, B, align=True, on_bad_align="fail")
    assert "\n" not in str(e.value)
    # trusting every shift applies the estimate (what the tool did before the floor)
    r = compare(A, B, align=True, min_confidence=0, max_shift=0.5)
    assert r.align_ok and r.shift != (0.0, 0.0)


@pytest.mark.parametrize("bad", [{"min_confidence": "high"}, {"min_confidence": 1.5}, {"max_shift": 0},
                                 {"on_bad_align": "ignore"}])
def test_bad_alignment_options_are_refused(bad):
    with pytest.raises(ConfigError):
        CompareOptions(align=True, **bad)


def test_cli_warns_and_json_says_so(data_dir, capsys):
    p = data_dir / "opencv-samples/pairs"
    assert main(["compare", str(p / "leuvenA.jpg"), str(p / "leuvenB.jpg"), "--align", "--json"]) == 0
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert d["align_ok"] is False and d["shift"] == [0.0, 0.0] and "estimate was" in d["align_warning"]
    assert "warning: alignment not trusted" in err and len(err.strip().splitlines()) == 1
    assert main(["compare", str(p / "leuvenA.jpg"), str(p / "leuvenB.jpg"), "--align", "--on-bad-align",
                 "fail"]) == 2
    assert "alignment not trusted" in capsys.readouterr().err


def test_run_records_align_ok_and_fail_mode_fails_only_that_item(tmp_path, data_dir):
    p = data_dir / "opencv-samples/pairs"
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("reference,moving\n"
                        f"{p / 'leuvenA.jpg'},{p / 'leuvenB.jpg'}\n"
                        f"{p / 'rubberwhale1.png'},{p / 'rubberwhale2.png'}\n")
    out = tmp_path / "a.zarr"
    assert main(["run", str(manifest), "--out", str(out), "--align", "--shape", "crop", "--no-progress"]) == 0
    cols = ResultStore.open(str(out)).read(["align_ok", "significance", "shift", "status"])
    assert cols["align_ok"].tolist() == [0.0, 1.0]
    assert cols["significance"][0] < AUTO_SIGNIFICANCE <= cols["significance"][1]
    assert cols["shift"][0].tolist() == [0.0, 0.0]
    html = tmp_path / "r.html"
    assert main(["report", str(out), "--html", str(html)]) == 0
    assert "1 of 2 done items were compared unaligned" in html.read_text()

    out2 = tmp_path / "b.zarr"
    main(["run", str(manifest), "--out", str(out2), "--align", "--shape", "crop", "--no-progress",
          "--on-bad-align", "fail"])
    s = ResultStore.open(str(out2))
    cols = s.read(["status", "error"])
    assert cols["status"].tolist() == [2, 1]
    assert "alignment not trusted" in str(cols["error"][0])


def test_dedup_and_background_registration_use_the_same_floor(data_dir):
    """dedup --align and --bg-align apply an estimated shift only when it is trusted."""
    from gpudiff.sequence._background import estimate_shift
    from gpudiff.sequence._dedup import DedupOptions, change_score

    p = data_dir / "opencv-samples/pairs"
    A = np.asarray(Image.open(p / "leuvenA.jpg").convert("L"))
    B = np.asarray(Image.open(p / "leuvenB.jpg").convert("L"))
    assert estimate_shift(A, B) == (0.0, 0.0)  # the raw estimate would be (-7, -260)
    aligned = change_score(A, B, options=DedupOptions(align=True))
    plain = change_score(A, B, options=DedupOptions(align=False))
    assert aligned.statistic == plain.statistic  # compared unaligned, as without --align
    # a real shift is still applied
    cam = np.asarray(Image.open(data_dir / "skimage-data/camera.png").convert("L"))
    a, b = cam[40:440, 40:440], cam[52:452, 31:431]
    assert estimate_shift(a, b) == (12.0, -9.0)
    registered = change_score(a, b, options=DedupOptions(align=True)).statistic
    assert registered < 0.1 * change_score(a, b, options=DedupOptions(align=False)).statistic
