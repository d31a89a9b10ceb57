"""A seeded generator of damaged image files, made from the real files in ``../shared/data``.

Used by ``tests/reliability/io/test_fuzz_corpus.py`` (a few thousand mutants on every CI run) and
``benchmarks/fuzz_corpus.py`` (longer runs). The same ``seed`` gives the same mutants, byte for byte.

Seeds (real files, or small crops of real pixels re-encoded where the original is large):

- PNG: ``skimage-data/camera.png`` cropped to 64 x 48 (8-bit grey), ``trackpy-timelapse`` bulk_water
  cropped (RGBA), a 16-bit grey PNG of ``stuck.tif`` pixels;
- JPEG: a CDnet traffic frame as shipped (320 x 240, baseline);
- TIFF: ``skimage-data/multipage.tif`` and ``multipage_rgb.tif`` as shipped (2 pages each, the second
  float64 planar RGB), ``pims-testdata/stuck.tif`` cropped to 3 pages of 64 x 64 uint16 big-endian
  in 4 strips each, and the same pages little-endian with tifffile's shaped description (the stack
  reader reads those as one series, by offset);
- GIF: ``skimage-data/no_time_for_that_tiny.gif`` as shipped (animated);
- video: ``imageio-standard/realshort.mp4`` (only its first 16 KiB: read_image must refuse it).

Mutation classes (``Mutant.kind``):

- ``flip``: 1 to 16 random bytes XOR-ed with a random non-zero value;
- ``trunc-struct``: cut at a structural boundary (each PNG chunk's start, data and CRC; each JPEG
  marker; a TIFF's IFDs, tag values and strips; each GIF block), or one byte either side of it;
- ``trunc-random``: cut at a random point;
- ``header``: one header field edited to a plausible wrong value (PNG IHDR width/height/bit depth/
  colour type, with and without a fixed CRC; JPEG SOF precision/size/components; TIFF ImageWidth,
  ImageLength, BitsPerSample, SamplesPerPixel, StripOffsets, StripByteCounts (0 included),
  RowsPerStrip, Compression, PhotometricInterpretation, SampleFormat, next-IFD offsets; GIF screen
  and frame sizes);
- ``huge``: a declared size of 2**15..2**32-1 in a width/height field (a decompression bomb).
"""

from __future__ import annotations

from dataclasses import dataclass
import io
from pathlib import Path
import random
import struct
import zlib

KINDS = ("flip", "trunc-struct", "trunc-random", "header", "huge")
EXT = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "GIF": ".gif", "VIDEO": ".mp4"}


@dataclass(frozen=True)
class Mutant:
    seed: str  # name of the seed file
    fmt: str  # PNG, JPEG, TIFF, GIF, VIDEO
    kind: str  # one of KINDS
    what: str  # the mutation, in words (for failure messages)
    data: bytes

    @property
    def ext(self) -> str:
        return EXT[self.fmt]


# --------------------------------------------------------------------------------------------
# seeds


def load_seeds(data_dir: Path) -> dict:
    """name -> (format, bytes) of the seed files, from the real data folder."""
    import numpy as np
    from PIL import Image
    import tifffile

    data_dir = Path(data_dir)
    seeds = {}

    def png(array, **kw):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG", **kw)
        return buf.getvalue()

    camera = np.asarray(Image.open(data_dir / "skimage-data" / "camera.png"))[200:248, 200:264]
    seeds["camera64.png"] = ("PNG", png(np.ascontiguousarray(camera)))
    water = sorted((data_dir / "trackpy-timelapse" / "bulk_water").glob("*.png"))
    if water:
        rgba = np.asarray(Image.open(water[0]))[:40, :56]
        seeds["bulkwater_rgba.png"] = ("PNG", png(np.ascontiguousarray(rgba)))
    stuck = tifffile.imread(data_dir / "pims-testdata" / "stuck.tif", key=range(3))[:, 100:164, 100:164]
    import imagecodecs

    seeds["stuck16.png"] = ("PNG", bytes(imagecodecs.png_encode(np.ascontiguousarray(stuck[0]))))
    jpgs = sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))
    seeds[jpgs[0].name] = ("JPEG", jpgs[0].read_bytes())
    for name in ("multipage.tif", "multipage_rgb.tif"):
        seeds[name] = ("TIFF", (data_dir / "skimage-data" / name).read_bytes())
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(stuck).astype(">u2"), byteorder=">", photometric="minisblack",
                     metadata=None, rowsperstrip=16)
    seeds["stuck16x3.tif"] = ("TIFF", buf.getvalue())
    buf = io.BytesIO()  # the same pages with tifffile's shaped description: read as one series by offset
    tifffile.imwrite(buf, np.ascontiguousarray(stuck), photometric="minisblack")
    seeds["stuck16x3_shaped.tif"] = ("TIFF", buf.getvalue())
    seeds["no_time_for_that_tiny.gif"] = ("GIF", (data_dir / "skimage-data" / "no_time_for_that_tiny.gif").read_bytes())
    video = data_dir / "imageio-standard" / "realshort.mp4"
    if video.exists():
        seeds["realshort.mp4"] = ("VIDEO", video.read_bytes()[: 1 << 14])
    return seeds


# --------------------------------------------------------------------------------------------
# structure of each format: boundaries to cut at and header fields to edit
#
# A field is (offset, size, byteorder, fixup) where fixup(data) -> data recomputes a checksum.


def _png_chunks(data: bytes):
    pos, out = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((pos, length, data[pos + 4 : pos + 8]))
        pos += 12 + length
    return out


def _png_fix_ihdr(data: bytes) -> bytes:
    crc = zlib.crc32(data[12:29]) & 0xFFFFFFFF
    return data[:29] + struct.pack(">I", crc) + data[33:]


def _png_structure(data):
    cuts = [8]
    for pos, length, _ in _png_chunks(data):
        cuts += [pos, pos + 4, pos + 8, pos + 8 + length, pos + 12 + length]
    fields = {  # IHDR: width 16, height 20, bit depth 24, colour type 25, compression 26, filter 27, interlace 28
        "width": (16, 4, ">"), "height": (20, 4, ">"), "bitdepth": (24, 1, ">"), "colortype": (25, 1, ">"),
        "interlace": (28, 1, ">"), "filter": (27, 1, ">"),
    }
    return cuts, fields, ("width", "height")


def _jpeg_segments(data: bytes):
    pos, out = 2, []
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        out.append((pos, marker, length))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + length
    return out


def _jpeg_structure(data):
    cuts, fields = [2], {}
    for pos, marker, length in _jpeg_segments(data):
        cuts += [pos, pos + 2, pos + 4, pos + 2 + length]
        if marker in (0xC0, 0xC1, 0xC2):
            fields.update({"precision": (pos + 4, 1, ">"), "height": (pos + 5, 2, ">"),
                           "width": (pos + 7, 2, ">"), "components": (pos + 9, 1, ">")})
        if marker == 0xC4:
            fields.setdefault("dht-class", (pos + 4, 1, ">"))
        if marker == 0xDB:
            fields.setdefault("dqt-precision", (pos + 4, 1, ">"))
    # markers inside the scan (restart markers) and the end of image
    i = data.find(b"\xff\xd9")
    while i != -1:
        cuts.append(i)
        i = data.find(b"\xff\xd9", i + 2)
    return cuts, fields, ("width", "height")


_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}
_TIFF_TAGS = {256: "ImageWidth", 257: "ImageLength", 258: "BitsPerSample", 259: "Compression",
              262: "Photometric", 273: "StripOffsets", 277: "SamplesPerPixel", 278: "RowsPerStrip",
              279: "StripByteCounts", 284: "PlanarConfig", 339: "SampleFormat", 322: "TileWidth",
              323: "TileLength", 324: "TileOffsets", 325: "TileByteCounts", 317: "Predictor"}


def _tiff_ifds(data: bytes):
    """[(ifd offset, [(entry offset, tag, type, count, value offset)], next-pointer offset)] of a
    classic TIFF."""
    bo = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(bo + "I", data, 4)
    out, seen = [], set()
    while offset and offset + 2 <= len(data) and offset not in seen and len(out) < 64:
        seen.add(offset)
        (count,) = struct.unpack_from(bo + "H", data, offset)
        entries = []
        for k in range(count):
            e = offset + 2 + 12 * k
            if e + 12 > len(data):
                break
            tag, typ, n = struct.unpack_from(bo + "HHI", data, e)
            size = _TIFF_TYPES.get(typ, 1) * n
            value = e + 8 if size <= 4 else struct.unpack_from(bo + "I", data, e + 8)[0]
            entries.append((e, tag, typ, n, value))
        nxt = offset + 2 + 12 * count
        out.append((offset, entries, nxt))
        if nxt + 4 > len(data):
            break
        (offset,) = struct.unpack_from(bo + "I", data, nxt)
    return bo, out


def _tiff_structure(data):
    bo, ifds = _tiff_ifds(data)
    cuts, fields = [4, 8], {}
    for k, (offset, entries, nxt) in enumerate(ifds):
        cuts += [offset, offset + 2, nxt, nxt + 4]
        fields[f"p{k}.next-ifd"] = (nxt, 4, bo)
        for e, tag, typ, n, value in entries:
            cuts += [e, value, value + _TIFF_TYPES.get(typ, 1) * n]
            name = _TIFF_TAGS.get(tag)
            if name is None:
                continue
            width = _TIFF_TYPES.get(typ, 1)
            if width not in (1, 2, 4):
                continue
            fields[f"p{k}.{name}"] = (value, width, bo)
            fields[f"p{k}.{name}.count"] = (e + 4, 4, bo)
            if name in ("StripOffsets", "StripByteCounts", "TileOffsets", "TileByteCounts"):
                for j in range(n):
                    here = value + j * width
                    if name.endswith("Offsets"):
                        (at,) = struct.unpack_from(bo + {2: "H", 4: "I"}.get(width, "B"), data, here)
                        cuts += [at, at + 1]
                    fields[f"p{k}.{name}[{j}]"] = (here, width, bo)
    huge = tuple(n for n in fields if n.endswith(("ImageWidth", "ImageLength")))
    return cuts, fields, huge


def _gif_structure(data):
    cuts, fields = [6, 13], {"screen-width": (6, 2, "<"), "screen-height": (8, 2, "<")}
    pos = 13
    if len(data) > 10 and data[10] & 0x80:
        pos += 3 * (2 << (data[10] & 7))
    frame = 0
    while pos < len(data):
        cuts.append(pos)
        b = data[pos]
        if b == 0x3B:
            break
        if b == 0x21:
            pos += 2
        elif b == 0x2C:
            if pos + 10 > len(data):
                break
            if frame < 4:
                fields[f"f{frame}.width"] = (pos + 5, 2, "<")
                fields[f"f{frame}.height"] = (pos + 7, 2, "<")
                fields[f"f{frame}.left"] = (pos + 1, 2, "<")
            flags = data[pos + 9]
            pos += 10
            if flags & 0x80:
                pos += 3 * (2 << (flags & 7))
            cuts.append(pos)
            if frame < 4:
                fields[f"f{frame}.lzw-min"] = (pos, 1, "<")
            pos += 1
            frame += 1
        else:
            break
        while pos < len(data) and data[pos]:  # sub-blocks
            cuts.append(pos)
            pos += 1 + data[pos]
        pos += 1
    huge = tuple(n for n in fields if n.endswith(("width", "height")))
    return cuts, fields, huge


def _video_structure(data):
    cuts, pos = [], 0
    while pos + 8 <= len(data) and len(cuts) < 64:  # MP4 boxes
        (size,) = struct.unpack_from(">I", data, pos)
        cuts += [pos, pos + 4, pos + 8]
        if size < 8:
            break
        pos += size
    return cuts, {}, ()


_STRUCTURE = {"PNG": _png_structure, "JPEG": _jpeg_structure, "TIFF": _tiff_structure, "GIF": _gif_structure,
              "VIDEO": _video_structure}


def _put(data: bytes, field, value: int) -> bytes:
    offset, size, bo = field
    if offset + size > len(data):
        return data
    fmt = bo + {1: "B", 2: "H", 4: "I"}[size]
    value &= (1 << (8 * size)) - 1
    return data[:offset] + struct.pack(fmt, value) + data[offset + size :]


def _get(data: bytes, field) -> int:
    offset, size, bo = field
    if offset + size > len(data):
        return 0
    return struct.unpack_from(bo + {1: "B", 2: "H", 4: "I"}[size], data, offset)[0]


# --------------------------------------------------------------------------------------------
# mutants


def _plausible(rng: random.Random, old: int, size: int) -> int:
    top = (1 << (8 * size)) - 1
    choices = [0, 1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 24, 32, 33, 64, 255, old + 1, old - 1, old * 2, old // 2,
               old ^ (1 << rng.randrange(8 * size)), top, top // 2 + 1, rng.randrange(top + 1)]
    value = rng.choice(choices)
    return value if value != old else (old + 1)


def mutate(rng: random.Random, seed: str, fmt: str, data: bytes, kind: str) -> Mutant:
    cuts, fields, huge = _STRUCTURE[fmt](data)
    if kind == "header" and not fields:
        kind = "flip"
    if kind == "huge" and not huge:
        kind = "header" if fields else "flip"
    if kind == "flip":
        out = bytearray(data)
        n = rng.choice((1, 1, 1, 2, 4, 16))
        # half the flips land in the first 512 bytes (the headers), half anywhere
        places = [rng.randrange(min(len(out), 512)) if rng.random() < 0.5 else rng.randrange(len(out))
                  for _ in range(n)]
        for p in places:
            out[p] ^= rng.randrange(1, 256)
        return Mutant(seed, fmt, kind, f"flip {n} byte(s) at {sorted(places)[:4]}", bytes(out))
    if kind == "trunc-struct":
        cuts = sorted({c for c in cuts if 0 < c < len(data)})
        at = rng.choice(cuts) + rng.choice((0, 0, 0, -1, 1))
        at = max(1, min(at, len(data) - 1))
        return Mutant(seed, fmt, kind, f"cut at byte {at} of {len(data)}", data[:at])
    if kind == "trunc-random":
        at = rng.randrange(1, len(data))
        return Mutant(seed, fmt, kind, f"cut at byte {at} of {len(data)}", data[:at])
    if kind == "header":
        name = rng.choice(sorted(fields))
        field = fields[name]
        old = _get(data, field)
        if name.endswith("StripByteCounts") or ".StripByteCounts[" in name:
            value = 0 if rng.random() < 0.5 else _plausible(rng, old, field[1])
        else:
            value = _plausible(rng, old, field[1])
        out = _put(data, field, value)
        if fmt == "PNG" and rng.random() < 0.8:
            out = _png_fix_ihdr(out)
        return Mutant(seed, fmt, kind, f"{name} {old} -> {value}", out)
    # huge
    name = rng.choice(sorted(huge))
    field = fields[name]
    value = rng.choice([1 << 15, 65535, 1 << 16, 1 << 20, (1 << 31) - 1, (1 << 32) - 1])
    out = _put(data, field, value)
    others = [n for n in huge if n != name and n.split(".")[0] == name.split(".")[0]]
    if others and rng.random() < 0.5:  # both sides large: a classic bomb
        out = _put(out, fields[others[0]], value)
    if fmt == "PNG":
        out = _png_fix_ihdr(out)
    return Mutant(seed, fmt, "huge", f"{name} -> {value} (both sides: {out != _put(data, field, value)})", out)


def mutants(seeds: dict, n: int, seed: int = 0):
    """``n`` mutants, round-robin over the seeds and the kinds, drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    names = sorted(seeds)
    for i in range(n):
        name = names[i % len(names)]
        fmt, data = seeds[name]
        kind = KINDS[(i // len(names)) % len(KINDS)]
        yield mutate(rng, name, fmt, data, kind)


def mutate_text(rng: random.Random, text: str) -> str:
    """A damaged CSV manifest: a flipped character, a cut, a doubled/removed separator or quote,
    a stray NUL, a BOM or an overlong field."""
    choice = rng.randrange(7)
    i = rng.randrange(len(text))
    if choice == 0:
        return text[:i] + chr(rng.choice((0, 0x22, 0x2C, 0x0A, 0x0D, 0xFFFD, 0x1F600, rng.randrange(32, 127)))) + text[i + 1 :]
    if choice == 1:
        return text[:i]
    if choice == 2:
        return text.replace(",", "", 1) if rng.random() < 0.5 else text.replace(",", ",,", 1)
    if choice == 3:
        return text[:i] + '"' + text[i:]
    if choice == 4:
        return "\ufeff" + text if rng.random() < 0.5 else text.replace("\n", "\r\n")
    if choice == 5:
        return text[:i] + "x" * 200_000 + text[i:]
    return text.replace("reference", "referense", 1)
