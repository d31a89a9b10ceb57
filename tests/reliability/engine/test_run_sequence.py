"""gpudiff run with sequence features (flow, background, corrupt/cuts): the store against plain loops."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpudiff.cli._main import main
from gpudiff.io import open_source, read_image
from gpudiff.engine._store import ResultStore
from gpudiff.sequence import score_foreground


@pytest.fixture(scope="module")
def cdnet(data_dir, tmp_path_factory):
    """The first 40 CDnet cameraJitter frames as a folder."""
    import shutil

    src = data_dir / "cdnet2014-traffic-subset/input"
    out = tmp_path_factory.mktemp("cdnet") / "input"
    out.mkdir()
    for name in sorted(p.name for p in src.iterdir())[:40]:
        shutil.copy2(src / name, out / name)
    return out


@pytest.mark.parametrize("method", ["lk", "tvl1", "dis"])
def test_flow_columns_and_maps_equal_the_library(cdnet, tmp_path, method):
    from gpudiff.sequence._flow import flow_magnitude_stats
    from gpudiff.sequence._motion import flow_consistency, flow_input, optical_flow

    store = tmp_path / "f.zarr"
    rc = main(["run", str(cdnet), "--out", str(store), "--flow", method, "--save-maps", "flow", "--metrics",
               "manhattan", "--backend", "numpy", "--no-progress", "--chunk", "16"])
    assert rc == 0
    s = ResultStore.open(store)
    cols = s.read(["flow_mean", "flow_p95", "flow_valid"])
    flows = s._arrays["maps/flow"]
    valids = s._arrays["maps/flow_valid"]
    src = open_source(str(cdnet))
    for k in (0, 17, 38):
        a, b = flow_input(src.read(k)), flow_input(src.read(k + 1))
        f = optical_flow(a, b, method=method)
        valid = flow_consistency(f, optical_flow(b, a, method=method))
        stats = flow_magnitude_stats(f, valid=valid)
        assert cols["flow_mean"][k] == stats["flow_mean"]
        assert cols["flow_p95"][k] == stats["flow_p95"]
        assert cols["flow_valid"][k] == valid.mean()
        np.testing.assert_array_equal(flows[k], np.moveaxis(f, 0, -1))
        np.testing.assert_array_equal(valids[k], valid)
    assert flows.shape == (39, 240, 320, 2)
    # a jittering camera over a road: most pixels are trusted, not all (cars occlude, borders leave)
    assert 0.5 < np.nanmean(cols["flow_valid"]) < 1.0
    assert s.attrs["config"]["sequence"]["flow_method"] == method


def test_without_the_check_the_motion_is_measured_on_every_pixel(cdnet, tmp_path):
    from gpudiff.sequence._flow import flow_magnitude_stats, optical_flow_lk
    from gpudiff.sequence._motion import flow_input

    store = tmp_path / "f.zarr"
    rc = main(["run", str(cdnet), "--out", str(store), "--flow", "lk", "--no-flow-check", "--metrics", "manhattan",
               "--backend", "numpy", "--no-progress", "--chunk", "16"])
    assert rc == 0
    s = ResultStore.open(store)
    assert "flow_valid" not in s.names
    cols = s.read(["flow_mean", "flow_p95"])
    src = open_source(str(cdnet))
    for k in (0, 38):
        stats = flow_magnitude_stats(optical_flow_lk(flow_input(src.read(k)), flow_input(src.read(k + 1))))
        assert cols["flow_mean"][k] == stats["flow_mean"]
        assert cols["flow_p95"][k] == stats["flow_p95"]


def test_an_unknown_flow_method_is_a_usage_error(cdnet, tmp_path, capsys):
    assert main(["run", str(cdnet), "--out", str(tmp_path / "x.zarr"), "--flow", "farneback"]) == 2
    err = capsys.readouterr().err
    assert "argument --flow: invalid choice: 'farneback' (choose from 'lk', 'tvl1', 'dis')" in err
    assert len(err.strip().splitlines()) == 1


def _plain_background(frames, options):
    from gpudiff.sequence._background import BackgroundModel, estimate_shift, mask_to_frame

    model = BackgroundModel(options=options)
    masks = []
    for f in frames:
        shift = estimate_shift(frames[0], f, options=options) if options.align else None
        m = model.update(f, shift=shift)
        masks.append(mask_to_frame(m, shift) if options.align else m)
    return np.stack(masks)


@pytest.mark.parametrize("align", [False, True])
def test_background_maps_equal_a_whole_frame_loop(cdnet, tmp_path, align):
    from gpudiff.sequence._background import BackgroundOptions

    store = tmp_path / "b.zarr"
    argv = ["run", str(cdnet), "--out", str(store), "--background", "--save-maps", "foreground", "--metrics",
            "manhattan", "--backend", "numpy", "--no-progress", "--chunk", "16", "--workers", "3"]
    assert main(argv + (["--bg-align"] if align else [])) == 0
    s = ResultStore.open(store)
    got = s._arrays["maps/foreground"][:]
    frac = s.read(["foreground_fraction"])["foreground_fraction"]
    src = open_source(str(cdnet))
    frames = [src.read(i) for i in range(len(src))]
    want = _plain_background(frames, BackgroundOptions(align=align))[1:]  # item k: frame k + 1
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(frac, want.reshape(len(want), -1).mean(axis=1))
    assert 0.01 < frac[10:].mean() < 0.5  # cars on a road: some foreground, not everything


@pytest.mark.parametrize("model", ["mixture", "samples"])
def test_other_background_models_and_shadows_equal_a_whole_frame_loop(cdnet, tmp_path, model):
    from gpudiff.sequence._background import BackgroundOptions

    store = tmp_path / "b.zarr"
    argv = ["run", str(cdnet), "--out", str(store), "--background", "--bg-model", model, "--bg-shadows",
            "--save-maps", "foreground", "--metrics", "manhattan", "--backend", "numpy", "--no-progress",
            "--chunk", "16", "--workers", "3"]
    assert main(argv) == 0
    s = ResultStore.open(store)
    assert s.attrs["config"]["sequence"]["background_options"]["model"] == model
    got = s._arrays["maps/foreground"][:]
    src = open_source(str(cdnet))
    frames = [src.read(i) for i in range(len(src))]
    want = _plain_background(frames, BackgroundOptions(model=model, shadows=True))[1:]
    np.testing.assert_array_equal(got, want)
    assert 0.01 < got[10:].mean() < 0.5


@pytest.mark.parametrize("align", [False, True])
def test_label_maps_are_cdnet_labels_that_agree_with_the_masks(data_dir, cdnet, tmp_path, align):
    from gpudiff.sequence import score_foreground

    store = tmp_path / "l.zarr"
    argv = ["run", str(cdnet), "--out", str(store), "--background", "--bg-shadows", "--save-maps",
            "foreground,labels", "--metrics", "manhattan", "--backend", "numpy", "--no-progress", "--chunk", "16",
            "--workers", "3"]
    assert main(argv + (["--bg-align"] if align else [])) == 0
    s = ResultStore.open(store)
    masks = s._arrays["maps/foreground"][:]
    labels = s._arrays["maps/foreground_labels"][:]
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= {0, 50, 170, 255}
    np.testing.assert_array_equal(labels == 255, masks)  # foreground in the labels is the mask
    assert (labels[:2] == 170).all()  # frames 1, 2: the model is still initialising (3 frames)
    assert (labels[5:] == 50).any()  # shadows are reported as such
    # scored directly against CDnet's ground truth (the moving frame of item k is frame k + 1)
    gt_dir = data_dir / "cdnet2014-traffic-subset" / "groundtruth"
    gts = np.stack([read_image(p) for p in sorted(gt_dir.iterdir())[1 : 1 + len(labels)]])
    gts = gts if gts.ndim == 3 else gts[..., 0]
    f = score_foreground(labels[5:] == 255, gts[5:]).f_measure
    assert f > 0.75  # measured 0.83, 0.86 aligned (frames 6-40 of the clip)


def test_a_mixture_run_killed_between_chunks_resumes_to_the_same_store(cdnet, tmp_path, monkeypatch):
    from gpudiff.engine import _passes

    argv = ["--background", "--bg-model", "mixture", "--save-maps", "foreground", "--metrics", "manhattan",
            "--backend", "numpy", "--no-progress", "--chunk", "8"]
    whole = tmp_path / "whole.zarr"
    assert main(["run", str(cdnet), "--out", str(whole), *argv]) == 0
    # stop the background pass after its second chunk (the models are saved after each chunk) ...
    real_save = _passes._save_bg_state
    calls = []

    def save_then_stop(*a, **k):
        real_save(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            _passes._STOP.set()

    monkeypatch.setattr(_passes, "_save_bg_state", save_then_stop)
    part = tmp_path / "part.zarr"
    assert main(["run", str(cdnet), "--out", str(part), *argv]) == 75
    monkeypatch.setattr(_passes, "_save_bg_state", real_save)
    # ... and resume: the mixture's weights, means and variances come back from the state file
    assert main(["run", str(cdnet), "--out", str(part), *argv]) == 0
    a, b = ResultStore.open(whole), ResultStore.open(part)
    np.testing.assert_array_equal(a._arrays["maps/foreground"][:], b._arrays["maps/foreground"][:])
    np.testing.assert_array_equal(a.read(["foreground_fraction"])["foreground_fraction"],
                                  b.read(["foreground_fraction"])["foreground_fraction"])


def test_background_f_measure_on_cdnet_with_and_without_align(data_dir, tmp_path):
    """CDnet rules: 255 foreground; 0 and 50 background; 85, 170 and outside the ROI ignored."""
    base = data_dir / "cdnet2014-traffic-subset"
    roi = read_image(base / "ROI.bmp")
    roi = (roi if roi.ndim == 2 else roi[..., 0]) > 0
    assert roi.all()  # this subset's ROI.bmp (352 wide, frames 320) excludes nothing
    roi = np.ones((240, 320), bool)
    scores = {}
    for align in (False, True):
        store = tmp_path / f"cd{align}.zarr"
        argv = ["run", str(base / "input"), "--out", str(store), "--background", "--save-maps", "foreground",
                "--metrics", "manhattan", "--backend", "numpy", "--no-progress"]
        assert main(argv + (["--bg-align"] if align else [])) == 0
        masks = ResultStore.open(store)._arrays["maps/foreground"][:]
        gts = sorted((base / "groundtruth").iterdir())[1:]  # item k is frame k + 1
        gt = np.stack([g if g.ndim == 2 else g[..., 0] for g in map(read_image, gts)])
        scores[align] = score_foreground(masks, gt, roi=roi).f_measure
    assert scores[True] > scores[False]
    assert scores[True] > 0.75 and scores[False] > 0.7


def test_background_killed_and_resumed_gives_the_same_store(cdnet, tmp_path):
    argv = [str(cdnet), "--background", "--save-maps", "foreground", "--metrics", "manhattan", "--backend",
            "numpy", "--no-progress", "--chunk", "4"]
    whole = tmp_path / "whole.zarr"
    assert main(["run", *argv[:1], "--out", str(whole), *argv[1:]]) == 0
    part = tmp_path / "part.zarr"
    cmd = [sys.executable, "-m", "gpudiff", "run", argv[0], "--out", str(part), *argv[1:]]
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    state = part / "background_state.pkl"
    while time.time() < deadline and p.poll() is None:
        if state.exists():
            import pickle

            try:
                with open(state, "rb") as f:
                    if 2 <= pickle.load(f)["next_chunk"] < 8:
                        break
            except Exception:  # noqa: BLE001 - being replaced
                pass
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL  # killed in the middle of the background pass
    assert main(["run", argv[0], "--out", str(part), *argv[1:]]) == 0
    a, b = ResultStore.open(whole), ResultStore.open(part)
    np.testing.assert_array_equal(a._arrays["maps/foreground"][:], b._arrays["maps/foreground"][:])
    np.testing.assert_array_equal(a.read(["foreground_fraction"])["foreground_fraction"],
                                  b.read(["foreground_fraction"])["foreground_fraction"])


def test_sequence_flags_need_a_sequence(tmp_path, cdnet, capsys):
    assert main(["run", str(cdnet), "--out", str(tmp_path / "x.zarr"), "--pairs", "first", "--flow"]) == 2
    assert "--pairs consecutive" in capsys.readouterr().err
    assert main(["run", str(cdnet), "--out", str(tmp_path / "x.zarr"), "--save-maps", "flow"]) == 2
    assert "needs --flow" in capsys.readouterr().err


def test_corrupt_and_cut_columns_equal_the_library_and_find_the_damage(data_dir, tmp_path, capsys):
    import shutil

    from gpudiff.sequence._corrupt import detect_sequence
    from gpudiff.io._images import read_image

    # 30 frames of the traffic camera, then 20 of the CDnet road: a cut at frame 30;
    # frame 12 gets a solid grey rectangle, frame 40 is mirrored
    folder = tmp_path / "clip"
    folder.mkdir()
    a = sorted((data_dir / "bgslibrary-dataset/frames").iterdir())[:30]
    b = sorted((data_dir / "cdnet2014-traffic-subset/input").iterdir())[:20]
    frames = [read_image(p) for p in a] + [read_image(p) for p in b]  # both 240x320 RGB
    frames[12] = frames[12].copy()
    frames[12][60:140, 100:220] = 128
    frames[40] = frames[40][:, ::-1].copy()
    from PIL import Image

    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    store = tmp_path / "e.zarr"
    assert main(["run", str(folder), "--out", str(store), "--corrupt", "--cuts", "--metrics", "manhattan",
                 "--backend", "numpy", "--no-progress", "--chunk", "16"]) == 0
    cols = ResultStore.open(store).read(["corrupt", "cut", "corrupt_score", "kl_prev"])
    want = detect_sequence(frames)
    np.testing.assert_array_equal(cols["corrupt"], want["corrupt"][1:].astype(np.int8))
    np.testing.assert_array_equal(cols["cut"], want["cut"][1:].astype(np.int8))
    np.testing.assert_array_equal(cols["kl_prev"], want["kl_prev"][1:])
    assert sorted(np.flatnonzero(cols["corrupt"]) + 1) == [12, 40]
    assert sorted(np.flatnonzero(cols["cut"]) + 1) == [30]
    # the run's last lines and gpudiff status say what was found
    assert "gpudiff run: found 2 corrupt frames; 1 cuts" in capsys.readouterr().err
    assert main(["status", str(store)]) == 0
    assert "found: 2 corrupt frames; 1 cuts" in capsys.readouterr().out
    shutil.rmtree(folder)


def test_summaries_report_foreground_and_motion_as_the_columns_say(cdnet, tmp_path, capsys):
    import json

    store = tmp_path / "s.zarr"
    assert main(["run", str(cdnet), "--out", str(store), "--background", "--flow", "--metrics", "manhattan",
                 "--no-progress", "--log-json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    found = [e for e in events if e.get("event") == "summary"][-1]["findings"]
    cols = ResultStore.open(store).read(["foreground_fraction", "flow_mean", "status"])
    for name in ("foreground_fraction", "flow_mean"):
        v = cols[name][(cols["status"] == 1) & np.isfinite(cols[name])]
        assert found[name]["mean"] == pytest.approx(v.mean(), rel=1e-12)
        assert found[name]["max"] == v.max() and found[name]["items"] == v.size
    assert "corrupt" not in found  # only what was asked for
    assert main(["status", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"foreground {100 * found['foreground_fraction']['mean']:.2g} % of the frame on average" in out
    assert f"motion {found['flow_mean']['mean']:.2g} px on average" in out


def test_an_unreadable_frame_fails_its_items_and_the_sequence_passes_go_on(cdnet, tmp_path, capsys):
    import shutil

    folder = tmp_path / "clip"
    shutil.copytree(cdnet, folder)
    names = sorted(p.name for p in folder.iterdir())
    bad = folder / names[12]
    bad.write_bytes(bad.read_bytes()[:300])  # a truncated JPEG
    store = tmp_path / "s.zarr"
    rc = main(["run", str(folder), "--out", str(store), "--background", "--corrupt", "--cuts", "--flow", "lk",
               "--metrics", "manhattan", "--backend", "numpy", "--no-progress", "--chunk", "8"])
    assert rc == 1  # finished, some items failed
    cols = ResultStore.open(store).read(["status", "moving_index", "reference_index", "corrupt", "cut",
                                         "foreground_fraction", "flow_mean", "flow_valid"])
    uses_bad = (cols["moving_index"] == 12) | (cols["reference_index"] == 12)
    assert (cols["status"][uses_bad] == 2).all() and (cols["status"][~uses_bad] == 1).all()
    at_bad = cols["moving_index"] == 12
    assert cols["corrupt"][at_bad].tolist() == [-1] and cols["cut"][at_bad].tolist() == [-1]
    assert np.isnan(cols["foreground_fraction"][at_bad]).all()
    others = ~at_bad
    assert set(cols["corrupt"][others].tolist()) <= {0, 1} and np.isfinite(cols["foreground_fraction"][others]).all()
    assert (cols["foreground_fraction"][others][15:] > 0).any()  # the model went on after the bad frame
    # the flow of the two pairs with the bad frame is missing, every other pair has one
    assert np.isnan(cols["flow_mean"][uses_bad]).all() and np.isnan(cols["flow_valid"][uses_bad]).all()
    assert np.isfinite(cols["flow_mean"][~uses_bad]).all() and (cols["flow_valid"][~uses_bad] > 0.5).all()


def test_sequence_features_on_a_single_frame_are_a_one_line_error(cdnet, tmp_path, capsys):
    import shutil

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy2(sorted(cdnet.iterdir())[0], one)
    assert main(["run", str(one), "--out", str(tmp_path / "b.zarr"), "--background", "--flow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("has 1 frame: --flow and --background need a sequence of at least 2 frames "
                        "(point at the folder, stack or video of the sequence)")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "b.zarr").exists()  # refused before a store is made
