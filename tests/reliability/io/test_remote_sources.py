"""Sources at URLs, over real protocols on loopback: moto's S3 server and a byte-range HTTP server.

Every source is checked value for value against the local open of the same data (real CDnet
frames, a multi-page TIFF and Zarr stores built from them): length, frame shape, dtype, every frame;
then what a remote source adds: byte-range TIFF reads, natural sort of objects, fingerprints that
follow re-uploads, one-line errors naming the URL, pickling with the storage options, and that the
options never show.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from gpudiff.errors import InputError
from gpudiff.io import open_source, read_image
from tests._threads import read_from_threads

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

N_STACK = 24  # pages of the byte-range TIFF (>= 20)


# --------------------------------------------------------------------------------------------
# data: real frames, laid out once per module as folders, TIFFs and Zarr stores


@pytest.fixture(scope="module")
def local(data_dir, tmp_path_factory) -> Path:
    """A folder of local test inputs made from the CDnet traffic frames."""
    from PIL import Image

    root = tmp_path_factory.mktemp("remote-sources")
    jpgs = sorted((data_dir / "cdnet2014-traffic-subset/input").iterdir())[:N_STACK]
    rgb = np.stack([read_image(p) for p in jpgs])  # (24, 240, 320, 3) uint8
    grey = np.ascontiguousarray(rgb[..., 1])

    frames = root / "frames"  # natural sort, a non-image, a hidden file, an image by magic only
    frames.mkdir()
    for k, name in zip((0, 1, 2, 3), ("img1.jpg", "img2.jpg", "img10.jpg", "img11.jpg")):
        shutil.copyfile(jpgs[k], frames / name)
    Image.fromarray(rgb[4]).save(frames / "img3", format="PNG")
    (frames / "notes.txt").write_text("not an image\n")
    shutil.copyfile(jpgs[5], frames / ".hidden.jpg")

    pngs = root / "pngs"
    pngs.mkdir()
    for k, name in enumerate(("img10.png", "img2.png", "img1.png", "img33.png")):
        Image.fromarray(rgb[k + 6]).save(pngs / name)
    (pngs / "readme.md").write_text("# frames\n")

    tifffile.imwrite(root / "stack.tif", grey)  # contiguous: planes read by offset
    tifffile.imwrite(root / "pages.tif", rgb[:6], compression="zlib")  # compressed: page by page

    plain = zarr.create_array(root / "plain.zarr", shape=rgb[:8].shape, chunks=(4, 240, 320, 3), dtype="u1")
    plain[:] = rgb[:8]

    group = zarr.open_group(root / "plate.zarr", mode="w")
    cam = group.create_array("cam", shape=grey[:6].shape, chunks=(2, 240, 320), dtype="u1")
    cam[:] = grey[:6]

    ome = zarr.open_group(root / "image.ome.zarr", mode="w")
    axes = [
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"},
    ]
    ome.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 1]}]}],
        }],
    }
    level = ome.create_array("0", shape=(5, 3, 240, 320), chunks=(1, 3, 240, 320), dtype="u1")
    level[:] = np.moveaxis(rgb[10:15], -1, 1)
    return root


def _files(root: Path):
    for dirpath, _, names in os.walk(root):
        for n in names:
            full = Path(dirpath) / n
            yield full, full.relative_to(root).as_posix()


@pytest.fixture
def bucket(s3, local):
    """``(options, bucket, client)``: the local inputs uploaded under ``s3://bucket/``."""
    import s3fs

    opts, name = s3
    client = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    for full, rel in _files(local):
        client.put_file(str(full), f"{name}/{rel}")
    return opts, name, client


@pytest.fixture
def web(http_root, local):
    """``(server, root)``: the local inputs served over HTTP with byte ranges."""
    server, root = http_root
    for item in local.iterdir():
        if item.is_dir():
            shutil.copytree(item, root / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, root / item.name)
    return server, root


class _NoListings:
    """A web server that serves files only: a directory's URL is a 404, as on most static hosts."""

    def list_directory(self, path):
        self.send_error(404, "No listing")
        return None


@pytest.fixture
def bare_web(local, tmp_path):
    """``(server, root)``: the local Zarr stores on a byte-range HTTP server without listings."""
    from tests import _servers

    root = tmp_path / "bare"
    shutil.copytree(local, root)
    server = _servers.RangeHTTPServer(root)
    handler = type("Handler", (_NoListings, _servers._RangeHandler), {})
    server.httpd.RequestHandlerClass = partial(handler, directory=str(root))
    server.start()
    yield server, root
    server.stop()


# --------------------------------------------------------------------------------------------
# helpers


def _one_line(exc_info, url):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    assert url.rstrip("/") in msg, msg
    return msg


def assert_same_source(remote, local_src, url):
    """The remote source reads exactly what the local one does, and names the URL."""
    assert len(remote) == len(local_src)
    assert remote.kind == local_src.kind
    assert remote.frame_shape == local_src.frame_shape
    assert remote.dtype == local_src.dtype
    for i in range(len(local_src)):
        np.testing.assert_array_equal(remote.read(i), local_src.read(i))
        assert remote.label(i).startswith(url.rstrip("/").split("*")[0].rsplit("/", 1)[0])
    again = pickle.loads(pickle.dumps(remote))  # a Dask worker's copy: reopens lazily
    np.testing.assert_array_equal(again.read(len(again) - 1), local_src.read(len(local_src) - 1))
    assert again.fingerprint() == remote.fingerprint()


# --------------------------------------------------------------------------------------------
# each kind, value for value against the local open


def test_s3_prefix_is_a_folder(bucket, local):
    opts, name, _ = bucket
    url = f"s3://{name}/frames/"
    src = open_source(url)  # options from GPUDIFF_STORAGE_OPTIONS, as a user sets them
    ref = open_source(local / "frames")
    assert_same_source(src, ref, url)
    assert [src.label(i) for i in range(len(src))] == [
        f"s3://{name}/frames/{n}" for n in ("img1.jpg", "img2.jpg", "img3", "img10.jpg", "img11.jpg")
    ]


def test_s3_glob_natural_sort(bucket, local):
    _, name, _ = bucket
    url = f"s3://{name}/pngs/*.png"
    src = open_source(url)
    assert [src.label(i) for i in range(len(src))] == [
        f"s3://{name}/pngs/{n}" for n in ("img1.png", "img2.png", "img10.png", "img33.png")
    ]
    assert_same_source(src, open_source(str(local / "pngs" / "*.png")), url)


def test_s3_glob_skips_non_images_as_a_local_glob_does(bucket, local):
    _, name, _ = bucket
    src = open_source(f"s3://{name}/frames/*")
    ref = open_source(str(local / "frames" / "*"))
    names = [src.label(i).rsplit("/", 1)[1] for i in range(len(src))]
    assert names == [os.path.basename(ref.label(i)) for i in range(len(ref))]
    assert "notes.txt" not in names and ".hidden.jpg" not in names and "img3" in names
    np.testing.assert_array_equal(src.read(2), ref.read(2))


def test_s3_tiff_contiguous_and_pages(bucket, local):
    _, name, _ = bucket
    for file in ("stack.tif", "pages.tif"):
        url = f"s3://{name}/{file}"
        src = open_source(url)
        assert src.kind == "tiff"
        assert_same_source(src, open_source(local / file), url)
        assert src.label(3) == f"{url}[page 3]"


def test_s3_zarr_array_and_component(bucket, local):
    _, name, _ = bucket
    url = f"s3://{name}/plain.zarr"
    assert_same_source(open_source(url), open_source(local / "plain.zarr"), url)
    url = f"s3://{name}/plate.zarr"
    src = open_source(url, component="cam")
    assert src.label(0) == f"{url}/cam[0]"
    assert_same_source(src, open_source(local / "plate.zarr", component="cam"), url)
    src = open_source(f"{url}/cam")  # the array's own URL
    assert_same_source(src, open_source(local / "plate.zarr" / "cam"), url)


def test_reading_a_frame_from_s3_is_one_request(bucket, monkeypatch):
    """One GET per frame object or chunk, no HEAD before it (s3fs asks for the size first unless
    told not to split objects): a second round trip per frame would double the read latency. The
    calls are counted on their way to the real server (a spy that forwards each one)."""
    from aiobotocore.client import AioBaseClient

    _, name, _ = bucket
    sources = {"ome": open_source(f"s3://{name}/image.ome.zarr"), "folder": open_source(f"s3://{name}/pngs/")}
    for src in sources.values():
        src.read(0)  # opened, and its first block fetched
    calls = []
    forward = AioBaseClient._make_api_call

    async def counted(self, operation, params):
        calls.append(operation)
        return await forward(self, operation, params)

    monkeypatch.setattr(AioBaseClient, "_make_api_call", counted)
    for kind, src in sources.items():
        calls.clear()
        for i in (1, 2, 3):
            src.read(i)
        assert calls == ["GetObject"] * 3, (kind, calls)


def test_s3_zarr_wrong_component_lists_the_arrays(bucket):
    _, name, _ = bucket
    url = f"s3://{name}/plate.zarr"
    with pytest.raises(InputError) as e:
        open_source(url, component="nope")
    assert "cam" in _one_line(e, url)
    with pytest.raises(InputError) as e:
        open_source(url)
    assert "--component" in _one_line(e, url)


def test_http_ome_zarr(web, local):
    server, _ = web
    url = f"{server.url}/image.ome.zarr"
    ref = open_source(local / "image.ome.zarr")
    assert ref.frame_shape == (240, 320, 3)
    assert_same_source(open_source(url), ref, url)
    # the level named inside the image: its axes come from the parent group's metadata
    assert_same_source(open_source(url, component="0"), ref, url)
    assert_same_source(open_source(f"{url}/0"), ref, url)


def test_http_zarr_without_listings(bare_web, local):
    server, root = bare_web
    url = f"{server.url}/image.ome.zarr"
    ref = open_source(local / "image.ome.zarr")
    src = open_source(url)
    assert_same_source(src, ref, url)
    assert_same_source(open_source(f"{url}/0"), ref, url)
    fp = src.fingerprint()
    assert {"zarr.json", "0/zarr.json"} <= {f["path"] for f in fp["files"]}
    assert open_source(url).fingerprint() == fp
    meta = root / "image.ome.zarr" / "0" / "zarr.json"
    meta.write_text(meta.read_text() + " ")  # rewritten: a new size and time, so a new ETag
    assert open_source(url).fingerprint() != fp
    with pytest.raises(InputError) as e:  # neither a store nor a listing: not found
        open_source(f"{server.url}/frames/")
    assert "no such object" in _one_line(e, f"{server.url}/frames/")


def test_http_directory_listing_and_glob(web, local):
    server, _ = web
    url = f"{server.url}/frames/"
    assert_same_source(open_source(url), open_source(local / "frames"), url)
    url = f"{server.url}/pngs/*.png"
    src = open_source(url)
    assert [src.label(i).rsplit("/", 1)[1] for i in range(len(src))] == [
        "img1.png", "img2.png", "img10.png", "img33.png"
    ]
    assert_same_source(src, open_source(str(local / "pngs" / "*.png")), url)


def test_http_tiffs(web, local):
    server, _ = web
    for file in ("stack.tif", "pages.tif"):
        url = f"{server.url}/{file}"
        assert_same_source(open_source(url), open_source(local / file), url)


def test_concurrent_reads(bucket, local):
    _, name, _ = bucket
    for spec, ref in (
        (f"s3://{name}/stack.tif", local / "stack.tif"),
        (f"s3://{name}/pages.tif", local / "pages.tif"),
        (f"s3://{name}/frames/", local / "frames"),
        (f"s3://{name}/plain.zarr", local / "plain.zarr"),
    ):
        src, ref_src = open_source(spec), open_source(ref)
        indices = list(range(len(src)))
        for i, arrays in read_from_threads(src, indices).items():
            want = ref_src.read(i)
            for a in arrays:
                np.testing.assert_array_equal(a, want)


# --------------------------------------------------------------------------------------------
# byte ranges: a TIFF object is never fetched whole


@pytest.mark.parametrize("file", ["stack.tif", "pages.tif"])
def test_http_tiff_reads_by_byte_range(web, local, file):
    server, root = web
    size = (root / file).stat().st_size
    server.reset_counts()
    src = open_source(f"{server.url}/{file}")
    opened = server.bytes_sent
    server.reset_counts()
    a, b = src.read(1), src.read(len(src) - 2)
    read = server.bytes_sent
    ref = open_source(local / file)
    np.testing.assert_array_equal(a, ref.read(1))
    np.testing.assert_array_equal(b, ref.read(len(ref) - 2))
    assert opened + read < size / 2, (opened, read, size)
    if file == "stack.tif":  # 24 uncompressed planes: two planes' bytes and little else
        plane = a.nbytes
        assert read <= 2 * plane + (256 << 10), (read, plane, size)
        assert len(src) >= 20 and read < size / 5


# --------------------------------------------------------------------------------------------
# fingerprints: what a resume compares


def test_fingerprint_follows_reuploads(bucket, local, data_dir):
    _, name, client = bucket
    jpgs = sorted((data_dir / "cdnet2014-traffic-subset/input").iterdir())
    for spec, key, other in (
        (f"s3://{name}/frames/", "frames/img2.jpg", jpgs[40].read_bytes()),
        (f"s3://{name}/pngs/*.png", "pngs/img10.png", (local / "pngs" / "img2.png").read_bytes()),
        (f"s3://{name}/stack.tif", "stack.tif", (local / "pages.tif").read_bytes()),
        (f"s3://{name}/plain.zarr", "plain.zarr/c/1/0/0/0", client.cat_file(f"{name}/plain.zarr/c/0/0/0/0")),
    ):
        first = open_source(spec)
        fp = first.fingerprint()
        json.dumps(fp)  # JSON, as the store keeps it
        assert open_source(spec).fingerprint() == fp  # unchanged: the same
        assert fp["spec"] == spec.rstrip("/")
        client.pipe_file(f"{name}/{key}", other)
        assert open_source(spec).fingerprint() != fp, spec  # re-uploaded: differs
        assert first.fingerprint() != fp, spec  # the same source asked again sees it too


def test_http_fingerprint_follows_rewrites(web, local):
    server, root = web
    url = f"{server.url}/stack.tif"
    fp = open_source(url).fingerprint()
    assert open_source(url).fingerprint() == fp
    assert fp["files"][0]["size"] == (root / "stack.tif").stat().st_size
    data = (root / "stack.tif").read_bytes()
    (root / "stack.tif").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    st = (root / "stack.tif").stat()
    os.utime(root / "stack.tif", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert open_source(url).fingerprint() != fp


# --------------------------------------------------------------------------------------------
# storage options: pickled with the source, never shown


def test_options_pickle_with_the_source_and_never_show(s3_server, bucket, monkeypatch):
    from tests._servers import s3_options

    _, name, _ = bucket
    monkeypatch.delenv("GPUDIFF_STORAGE_OPTIONS")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    secret = "gpudiff-s3cr3t-never-printed"
    opts = s3_options(s3_server.endpoint, key="AKIAGPUDIFFNEVERSHOWN", secret=secret)
    for spec in (f"s3://{name}/stack.tif", f"s3://{name}/frames/", f"s3://{name}/plain.zarr"):
        src = open_source(spec, storage_options=opts)
        shown = json.dumps(src.fingerprint()) + repr(src) + src.label(0)
        assert secret not in shown and "AKIAGPUDIFFNEVERSHOWN" not in shown
        blob = pickle.dumps(src)
        again = pickle.loads(blob)  # no env, no ~/.aws: the options travel with the source
        np.testing.assert_array_equal(again.read(0), src.read(0))
    with pytest.raises(InputError) as e:
        open_source(f"s3://{name}/nothere.tif", storage_options=opts)
    assert secret not in str(e.value)


def test_pickled_source_reads_in_another_process(bucket, local):
    """As on a Dask worker: a fresh interpreter, no GPUDIFF_STORAGE_OPTIONS, no AWS_* variables."""
    import subprocess
    import sys

    opts, name, _ = bucket
    src = open_source(f"s3://{name}/pages.tif", storage_options=opts)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPUDIFF_STORAGE"))}
    code = (
        "import pickle, sys, numpy as np; src = pickle.load(sys.stdin.buffer); "
        "np.save(sys.stdout.buffer, src.read(3))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(src), capture_output=True, env=env,
        cwd=Path(__file__).resolve().parents[3], timeout=60, check=True,
    )
    np.testing.assert_array_equal(np.load(io.BytesIO(out.stdout)), open_source(local / "pages.tif").read(3))


# --------------------------------------------------------------------------------------------
# errors: one line naming the URL and the fix


def test_missing_object_prefix_and_bucket(bucket):
    _, name, _ = bucket
    for url, words in (
        (f"s3://{name}/nothere.tif", "no such object"),
        (f"s3://{name}/nothere/", "no such object"),
        (f"s3://{name}/nothere.zarr", "no such object"),
        ("s3://gd-no-such-bucket-0123/frames/", "no such bucket"),
        ("s3://gd-no-such-bucket-0123/stack.tif", "no such bucket"),
        ("s3://gd-no-such-bucket-0123/frames/*.png", "no such bucket"),
        (f"s3://{name}/frames/*.png", "matches no image objects"),
    ):
        with pytest.raises(InputError) as e:
            open_source(url)
        assert words in _one_line(e, url), url


def test_http_404(web):
    server, _ = web
    for url in (f"{server.url}/nothere.tif", f"{server.url}/nothere.zarr", f"{server.url}/nothere/"):
        with pytest.raises(InputError) as e:
            open_source(url)
        assert "no such object" in _one_line(e, url)


@pytest.mark.slow
def test_unreachable_endpoint_fails_fast(monkeypatch):
    pytest.importorskip("s3fs")
    from tests._servers import free_port, s3_options

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    for url, opts in (
        ("s3://bucket/stack.tif", s3_options(f"http://127.0.0.1:{port}")),
        ("s3://bucket/frames/*.png", s3_options(f"http://127.0.0.1:{port}")),
        (f"http://127.0.0.1:{port}/stack.tif", {}),
    ):
        t0 = time.monotonic()
        with pytest.raises(InputError) as e:
            open_source(url, storage_options=opts)
        assert time.monotonic() - t0 < 15
        assert "cannot reach the endpoint" in _one_line(e, url)


def test_truncated_tiff_object(bucket, local, tmp_path):
    """The first half of a TIFF: what the local open of the same bytes does, as one-line errors."""
    _, name, client = bucket
    for file in ("stack.tif", "pages.tif"):
        data = (local / file).read_bytes()
        half = data[: len(data) // 2]
        url = f"s3://{name}/half-{file}"
        client.pipe_file(f"{name}/half-{file}", half)
        (tmp_path / file).write_bytes(half)
        ref = open_source(tmp_path / file)
        src = open_source(url)
        assert len(src) == len(ref)
        assert src._truncated and ref._truncated
        for i in range(len(ref)):
            try:
                want = ref.read(i)
            except InputError as e:
                with pytest.raises(InputError) as got:
                    src.read(i)
                assert "truncated" in str(e)
                assert "truncated" in _one_line(got, url)
            else:
                np.testing.assert_array_equal(src.read(i), want)
    with pytest.raises(InputError) as e:  # the stack's last planes are past the end of the object
        open_source(f"s3://{name}/half-stack.tif").read(N_STACK - 1)
    assert "is truncated" in _one_line(e, f"s3://{name}/half-stack.tif")
    url = f"s3://{name}/head-only.tif"
    client.pipe_file(f"{name}/head-only.tif", (local / "stack.tif").read_bytes()[:100])
    with pytest.raises(InputError) as e:
        open_source(url)
    _one_line(e, url)


def test_corrupt_object_in_a_folder(bucket, local):
    _, name, client = bucket
    client.pipe_file(f"{name}/broken/img1.jpg", (local / "frames" / "img1.jpg").read_bytes())
    client.pipe_file(f"{name}/broken/img2.jpg", b"this is not a JPEG")
    jpeg = (local / "frames" / "img2.jpg").read_bytes()
    client.pipe_file(f"{name}/broken/img3.jpg", jpeg[: len(jpeg) // 3])
    src = open_source(f"s3://{name}/broken/")
    assert len(src) == 3  # listed by extension, as in a local folder
    np.testing.assert_array_equal(src.read(0), open_source(local / "frames").read(0))
    for i in (1, 2):
        url = f"s3://{name}/broken/img{i + 1}.jpg"
        with pytest.raises(InputError) as e:
            src.read(i)
        _one_line(e, url)
    client.rm_file(f"{name}/broken/img1.jpg")  # gone after the listing
    with pytest.raises(InputError) as e:
        src.read(0)
    assert "no such object" in _one_line(e, f"s3://{name}/broken/img1.jpg")


def test_what_urls_do_not_take(bucket, data_dir):
    _, name, client = bucket
    client.put_file(str(data_dir / "imageio-standard/realshort.mp4"), f"{name}/clip.mp4")
    client.put_file(str(data_dir / "imageio-standard/newtonscradle.gif"), f"{name}/anim.gif")
    client.pipe_file(f"{name}/pairs.csv", b"reference,moving\na.png,b.png\n")
    client.pipe_file(f"{name}/empty.tif", b"")
    client.pipe_file(f"{name}/text.bin", b"hello world")
    for url, words in (
        (f"s3://{name}/clip.mp4", "copy it locally"),
        (f"s3://{name}/anim.gif", "copy it locally"),
        (f"s3://{name}/pairs.csv", "copy the manifest locally"),
        (f"s3://{name}/frames/img1.jpg", "single image"),
        (f"s3://{name}/empty.tif", "empty"),
        (f"s3://{name}/text.bin", "not a sequence"),
    ):
        with pytest.raises(InputError) as e:
            open_source(url)
        assert words in _one_line(e, url), url
    for url in (f"s3://{name}/stack.tif", f"s3://{name}/frames/*.jpg"):
        with pytest.raises(InputError) as e:
            open_source(url, component="0")
        assert "--component" in _one_line(e, url)


def test_read_image_bytes_keeps_the_budget(local):
    from gpudiff.io._images import _read_image_bytes

    data = (local / "pngs" / "img1.png").read_bytes()
    want = read_image(local / "pngs" / "img1.png")
    np.testing.assert_array_equal(_read_image_bytes(data, "s3://b/img1.png"), want)
    with pytest.raises(InputError, match=r"s3://b/img1.png declares 320 x 240 .* over the budget"):
        _read_image_bytes(data, "s3://b/img1.png", max_pixels=1000)
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((4, 5), np.uint8)).save(buf, format="GIF")
    assert _read_image_bytes(buf.getvalue(), "s3://b/x.gif").shape == (4, 5, 3)  # needs a real file: given one
