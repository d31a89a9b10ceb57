"""A video file read with PyAV (``gpudiff[video]``): a packet table at open, frames decoded on demand."""

from __future__ import annotations

import contextlib
from fractions import Fraction
import os
import threading
import time

import numpy as np

from ..errors import InputError
from ._readerrors import _first_line
from ._source import (
    Source,
    VIDEO_EXTENSIONS,
    _check_budget,
    _check_frame_budget,
    _files_fingerprint,
    _frame_channels,
    _stat_entry,
)
from ._validate import validate_array


#: A video's packet table travels with a pickled source up to this many frames (else rebuilt).
_VIDEO_INDEX_PICKLED = 200_000


# --------------------------------------------------------------------------------------------
# video (PyAV)


def _import_av(path):
    try:
        import av  # noqa: PLC0415
    except ImportError:
        raise InputError(f"{path} is a video: install gpudiff[video] (PyAV) to read it") from None
    return av


def _looks_like_video(head: bytes, ext: str) -> bool:
    if ext in VIDEO_EXTENSIONS:
        return True
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if head[4:8] == b"ftyp":
        return head[8:12] not in (b"avif", b"heic", b"heix", b"mif1")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return True
    if head[:4] in (b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"OggS"):
        return True
    return head[:3] == b"FLV" or head[:4] == b"\x30\x26\xb2\x75"


class _Untrusted(Exception):
    """The decoder's timestamps do not match the packet table: fall back to counting frames."""


class _Decoder:
    """One open container with a decoder positioned somewhere in the stream."""

    def __init__(self, src: VideoSource):
        self._open(src)
        self.frames = None  # iterator of decoded frames
        self.rank = None  # rank of the last frame out (None: unknown, after a seek)
        self.array = None
        self.busy = False
        self.used = 0.0
        self.mode = None
        self.key = None  # keyframe rank of the last seek (None: decoding from the start)

    def _open(self, src: VideoSource):
        av = _import_av(src.path)
        try:
            self.container = av.open(src.path, metadata_errors="ignore")
        except Exception as exc:
            reason = getattr(exc, "strerror", None) or _first_line(exc)
            raise InputError(f"{src.path} cannot be opened as a video ({reason}): check the file") from None
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"

    def restart(self, src: VideoSource):
        """Back to the start of the stream, counting frames from 0 (sequential mode): reopened,
        since a seek to 0 is not exact in every container."""
        self.close()
        self._open(src)
        self.frames = self.container.decode(self.stream)
        self.rank = -1
        self.array = None
        self.key = None
        self.mode = "sequential"

    def seek(self, pts: int):
        self.container.seek(int(pts), stream=self.stream, backward=True, any_frame=False)
        self.frames = self.container.decode(self.stream)
        self.rank = None
        self.array = None
        self.mode = "pts"

    def rewind(self, src: VideoSource):
        """Reopened at the start of the stream, frames identified by their timestamps."""
        self.close()
        self._open(src)
        self.frames = self.container.decode(self.stream)
        self.rank = None
        self.array = None
        self.key = None
        self.mode = "pts"

    def close(self):
        with contextlib.suppress(Exception):
            self.container.close()


class VideoSource(Source):
    """Frames of a video, decoded on demand by a small pool of positioned decoders.

    Frame ``i`` is the ``i``-th frame in presentation order (packet timestamps, sorted). Where the
    container declares a frame per time slot but stores frames only when the picture changes
    (AVI with dropped frames, e.g. cinepak ``tree.avi``), frame ``i`` is the picture shown in
    slot ``i`` and repeats are exact. Where timestamps cannot be trusted (missing, or reordered B
    frames in AVI), frames are counted in decoder output order.
    """

    kind = "video"
    _TRANSIENT = ("_lock", "_pool", "_pool_cv")

    def __init__(self, path: str, *, max_pixels: int, page_budget=None, max_decoders=None):
        super().__init__(path, max_pixels=max_pixels)
        av = _import_av(path)
        self.path = path
        self.max_decoders = int(max_decoders or min(8, os.cpu_count() or 1))
        try:
            container = av.open(path, metadata_errors="ignore")
        except Exception as exc:
            reason = getattr(exc, "strerror", None) or _first_line(exc)
            raise InputError(
                f"{path} cannot be opened as a video ({reason}): the file may be truncated or damaged; "
                f"check it, or re-encode it (ffmpeg -i {os.path.basename(path)} out.mp4)"
            ) from None
        try:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream: give a video file")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            self._width, self._height = int(ctx.width), int(ctx.height)
            if self._width <= 0 or self._height <= 0:
                raise InputError(f"{path} declares no frame size ({ctx.width} x {ctx.height}): check the file")
            self._format = self._output_format(av, ctx.pix_fmt)
            _check_budget(path, self._height, self._width, max_pixels,
                          channels=_frame_channels(self.frame_shape), dtype=self.dtype)
            self._declared = int(stream.frames or 0)
            self._time_base = stream.time_base
            self._rate = stream.average_rate or stream.guessed_rate
            self._container_format = container.format.name or ""
            self._build_index(container, stream)
        finally:
            container.close()
        _check_frame_budget(path, self._n, page_budget)

    @staticmethod
    def _output_format(av, pix_fmt) -> str:
        if not pix_fmt:
            return "rgb24"
        try:
            fmt = av.VideoFormat(pix_fmt)
            bits = max((c.bits for c in fmt.components), default=8)
        except Exception:  # pragma: no cover - unknown format
            return "rgb24"
        grey = pix_fmt.startswith(("gray", "ya", "mono"))
        if grey:
            return "gray" if bits <= 8 else "gray16le"
        return "rgb24" if bits <= 8 else "rgb48le"

    # -- the packet table -----------------------------------------------------------------

    def _build_index(self, container, stream) -> None:
        """Demux once (no decoding): presentation timestamps and keyframes of every frame."""
        pts, keys, order_ok = [], [], True
        last = None
        self._demux_error = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                pts.append(p)
                keys.append(bool(packet.is_keyframe))
                if p is not None and last is not None and p <= last:
                    order_ok = False
                last = p if p is not None else last
        except Exception as exc:  # a cut or corrupt file: the frames demuxed so far count
            self._demux_error = _first_line(exc)
        n_packets = len(pts)
        trusted = n_packets > 0 and all(p is not None for p in pts) and len(set(pts)) == n_packets
        if trusted and "avi" in self._container_format and not order_ok:
            trusted = False  # AVI has no presentation timestamps: reordered B frames get guesses
        self._mode = "frame"
        self._slots = None
        self._bad_keys = set()
        if not trusted:
            self._mode = "sequential"
            self._pts = None
            self._key_ranks = None
            self._n = self._declared or n_packets
            self._readable = n_packets
            return
        pts_sorted = np.sort(np.asarray(pts, dtype=np.int64))
        key_pts = np.sort(np.asarray([p for p, k in zip(pts, keys) if k], dtype=np.int64))
        self._pts = pts_sorted
        self._key_ranks = np.searchsorted(pts_sorted, key_pts).astype(np.int64)
        self._n = n_packets
        self._readable = n_packets
        if self._declared > n_packets and self._rate and self._time_base:
            step = Fraction(self._time_base) * Fraction(self._rate)
            slots = np.rint((pts_sorted - pts_sorted[0]) * float(step)).astype(np.int64)
            if np.all(np.diff(slots) > 0) and int(slots[-1]) < self._declared:
                # One frame per time slot declared, pictures stored only when they change.
                self._mode = "slot"
                self._slots = slots
                self._n = self._declared
                self._readable = int(slots[-1]) + 1
                return
        if self._declared > n_packets:
            self._n = self._declared  # the rest is missing: reported when read

    def __getstate__(self):
        state = super().__getstate__()
        if self._n > _VIDEO_INDEX_PICKLED:
            state["_pts"] = state["_key_ranks"] = state["_slots"] = None
            state["_index_dropped"] = True
        return state

    def _ensure_index(self):
        if self.__dict__.get("_index_dropped"):
            with self._lock:
                if self.__dict__.get("_index_dropped"):
                    av = _import_av(self.path)
                    container = av.open(self.path, metadata_errors="ignore")
                    try:
                        n = self._n
                        self._build_index(container, container.streams.video[0])
                        self._n = n
                    finally:
                        container.close()
                    self._index_dropped = False

    def frame_times(self):
        self._ensure_index()
        out = np.full(self._n, np.nan)
        if self._mode == "pts" and self._pts is not None and len(self._pts) and self._time_base:
            n = min(len(self._pts), self._n)
            out[:n] = (self._pts[:n] - self._pts[0]) * float(self._time_base)
        elif self._rate:
            out[:] = np.arange(self._n) / float(self._rate)  # one frame per slot of the declared rate
        else:
            return None
        return out

    def _close(self):
        if self._pool_cv is None:
            return
        with self._pool_cv:
            for dec in self._pool:
                dec.close()
            self._pool.clear()

    def _init_transient(self):
        super()._init_transient()
        self._pool = []
        self._pool_cv = threading.Condition()

    # -- sizes ----------------------------------------------------------------------------

    def _length(self):
        return self._n

    @property
    def frame_shape(self):
        if self._format in ("gray", "gray16le"):
            return (self._height, self._width)
        return (self._height, self._width, 3)

    @property
    def dtype(self):
        return np.dtype(np.uint8) if self._format in ("gray", "rgb24") else np.dtype(np.uint16)

    def _label(self, i):
        return f"{self.path}[frame {i}]"

    # -- decoding -------------------------------------------------------------------------

    def _rank(self, i: int) -> int:
        if self._mode == "slot":
            return int(np.searchsorted(self._slots, i, side="right")) - 1
        return i

    def _forward_cost(self, dec: _Decoder, rank: int):
        """Frames to decode to reach ``rank`` from where ``dec`` is, or None when a seek is better."""
        if dec.frames is None or dec.rank is None or dec.rank > rank:
            return None
        if dec.mode != ("sequential" if self._mode == "sequential" else "pts"):
            return None
        gap = rank - dec.rank
        if self._mode == "sequential" or gap <= 16:
            return gap
        key = self._key_before(rank)
        if key is not None and key > dec.rank:
            return None  # a usable keyframe lies between: seeking there is no dearer
        return gap

    def _checkout(self, rank: int) -> _Decoder:
        with self._pool_cv:
            while True:
                free = [d for d in self._pool if not d.busy]
                best, best_cost = None, None
                for d in free:
                    cost = self._forward_cost(d, rank)
                    if cost is not None and (best_cost is None or cost < best_cost):
                        best, best_cost = d, cost
                if best is None:
                    if len(self._pool) < self.max_decoders:
                        best = _Decoder(self)
                        self._pool.append(best)
                    elif free:
                        best = min(free, key=lambda d: d.used)
                if best is not None:
                    best.busy = True
                    return best
                self._pool_cv.wait()

    def _checkin(self, dec: _Decoder, broken=False):
        with self._pool_cv:
            dec.busy = False
            dec.used = time.monotonic()
            if broken:
                dec.close()
                self._pool.remove(dec)
            self._pool_cv.notify()

    def _to_array(self, frame):
        return frame.to_ndarray(format=self._format)

    def _read(self, i):
        self._ensure_index()
        label = self._label(i)
        for _ in range(2):
            rank = self._rank(i)
            dec = self._checkout(rank)
            broken = True
            try:
                if self._mode == "sequential":
                    array = self._decode_sequential(dec, rank, i)
                else:
                    array = self._decode_pts(dec, rank, i)
                broken = False
            except _Untrusted:
                with self._lock:
                    self._mode = "sequential"
                continue
            except (InputError, MemoryError):
                raise
            except Exception as exc:
                raise InputError(
                    f"{label} cannot be decoded ({_first_line(exc)}): the file may be corrupt; "
                    f"re-encode it (ffmpeg -i in out.mp4)"
                ) from None
            finally:
                self._checkin(dec, broken=broken)
            return validate_array(array, name=label)
        raise InputError(f"{label} cannot be decoded: the video's timestamps are inconsistent; re-encode it")

    def _end_of_stream(self, i, rank, seen) -> InputError:
        if self._mode == "sequential":
            return InputError(
                f"{self.path} frame {i} is missing: the decoder gives {seen} frames, the container declares "
                f"{self._n} (the file may be truncated or hold damaged frames); re-encode it"
            )
        if i >= self._readable:
            detail = f"declares {self._n} frames, {self._readable} readable"
            if self._demux_error:
                detail += f"; {self._demux_error}"
        else:
            detail = "the decoder stops before it"
        return InputError(
            f"{self.path} frame {i} is missing: the file is truncated ({detail}); copy or re-encode it"
        )

    def _decode_sequential(self, dec, rank, i):
        if dec.rank is not None and dec.rank == rank and dec.array is not None:
            return dec.array.copy()
        if dec.frames is None or dec.rank is None or dec.rank > rank or dec.mode != "sequential":
            dec.restart(self)
        while dec.rank < rank:
            try:
                frame = next(dec.frames)
            except StopIteration:
                seen = dec.rank + 1
                dec.frames = None
                raise self._end_of_stream(i, rank, seen) from None
            dec.rank += 1
            dec.array = None
            if dec.rank == rank:
                dec.array = self._to_array(frame)
        return dec.array.copy()

    def _key_before(self, rank: int):
        """Rank of the last keyframe at or before ``rank`` that decodes cleanly; None: the start."""
        keys = self._key_ranks
        k = int(np.searchsorted(keys, rank, side="right"))
        while k > 0:
            key = int(keys[k - 1])
            if key not in self._bad_keys:
                return key
            k -= 1
        return None

    def _decode_pts(self, dec, rank, i):
        """Frame of presentation rank ``rank``: decode forward, or seek to a keyframe first.

        After a seek, frames are checked: one that lands past the target, or a corrupt frame
        between the keyframe and the target (a keyframe that does not decode on its own, as
        in some H.264 files), sends the decoder back to an earlier keyframe, which is then
        remembered as unusable; from the start of the stream everything is accepted.
        """
        if i >= self._readable:
            raise self._end_of_stream(i, rank, self._readable)
        if dec.rank is not None and dec.rank == rank and dec.array is not None:
            return dec.array.copy()

        def go_to(key):
            if key is None:
                dec.rewind(self)
            else:
                dec.seek(int(self._pts[key]))
                dec.key = key

        if self._forward_cost(dec, rank) is None:
            go_to(self._key_before(rank))
        after_seek = dec.rank is None
        reseeked = after_seek
        last = dec.rank
        while True:
            try:
                frame = next(dec.frames)
            except StopIteration:
                dec.frames = None
                raise self._end_of_stream(i, rank, self._readable) from None
            if frame.pts is None:
                raise _Untrusted()
            r = int(np.searchsorted(self._pts, frame.pts))
            if r >= len(self._pts) or int(self._pts[r]) != int(frame.pts):
                raise _Untrusted()
            key = dec.key
            if after_seek and r > rank and key is not None:
                # Landed past the target: go back one keyframe.
                go_to(self._key_before(min(key, r) - 1) if min(key, r) > 0 else None)
                last = None
                continue
            if key is not None and key <= r <= rank and getattr(frame, "is_corrupt", False):
                # This keyframe does not decode on its own: never seek to it again.
                self._bad_keys.add(key)
                go_to(self._key_before(key - 1) if key > 0 else None)
                last, after_seek = None, True
                continue
            after_seek = False
            if last is not None and r <= last and r >= rank:
                raise _Untrusted()  # frames out of order at or past the target
            if r < rank:  # before the target (or leading pictures of an open GOP): skip
                last = r if last is None else max(last, r)
                dec.rank, dec.array = last, None
                continue
            dec.rank, dec.array, last = r, None, r
            if r == rank:
                dec.array = self._to_array(frame)
                return dec.array.copy()
            # r > rank: the decoder went past the target without giving it
            if not reseeked:
                go_to(self._key_before(rank))
                after_seek = reseeked = True
                last = None
                continue
            raise InputError(
                f"{self._label(i)} cannot be decoded (the decoder skips it): the file may be corrupt; re-encode it"
            )

    def fingerprint(self):
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint([_stat_entry(self.path)])}
