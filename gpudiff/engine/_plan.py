"""The plan: which frame is compared with which, split into chunks that align with the store's.

Pure, deterministic and cheap: a plan is computed the same way by every process of a job, so shards
agree on who does what without talking to each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["PAIRINGS", "Plan", "Shard", "make_plan", "parse_shard", "shard_from_env"]

#: How frames of a sequence are paired: t-1 with t, or every frame with frame 0.
PAIRINGS = ("consecutive", "first")


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: chunks ``c`` with ``c % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ConfigError(
                f"--shard {self.index}/{self.count}: need 0 <= I < N (e.g. --shard 0/4 ... --shard 3/4)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``'I/N'`` -> Shard(I, N)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: write it as I/N, e.g. --shard 0/4") from None
    return Shard(i, n)


def shard_from_env(env=None) -> Shard | None:
    """The shard of a SLURM array task (``SLURM_ARRAY_TASK_ID``/``_COUNT``/``_MIN``), or None.

    Array ids need not start at 0 (``--array=1-8``): the index is ``ID - MIN``.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    except ValueError:
        raise ConfigError("SLURM_ARRAY_TASK_ID/COUNT/MIN are not whole numbers: use --shard I/N") from None
    return Shard(task - lo, count)


@dataclass(frozen=True)
class Plan:
    """Items (reference index, moving index) and their chunking.

    Attributes
    ----------
    reference, moving : ndarray of int64, shape (n_items,)
        Frame indices of each comparison.
    chunk : int
        Items per chunk; the store's per-item arrays are chunked the same way.
    """

    reference: np.ndarray
    moving: np.ndarray
    chunk: int

    @property
    def n_items(self) -> int:
        return int(self.reference.shape[0])

    @property
    def n_chunks(self) -> int:
        return -(-self.n_items // self.chunk) if self.n_items else 0

    def chunk_slice(self, c: int) -> slice:
        if not 0 <= c < self.n_chunks:
            raise IndexError(f"chunk {c} out of range 0..{self.n_chunks - 1}")
        return slice(c * self.chunk, min((c + 1) * self.chunk, self.n_items))

    def shard_chunks(self, shard: Shard | None = None) -> list[int]:
        """The chunks this shard owns (all of them without a shard)."""
        shard = shard or Shard()
        return list(range(shard.index, self.n_chunks, shard.count))

    def items_of(self, chunks) -> np.ndarray:
        """The item indices of ``chunks`` (in the order given), as one int64 array: linear in the
        items selected, whatever the number of chunks."""
        chunks = np.asarray(list(chunks), dtype=np.int64).reshape(-1)
        if not chunks.size:
            return np.arange(0, dtype=np.int64)
        for c in (int(chunks.min()), int(chunks.max())):
            self.chunk_slice(c)  # range check
        starts = chunks * self.chunk
        lengths = np.minimum(starts + self.chunk, self.n_items) - starts
        # each item: its chunk's start plus its place in the chunk
        offsets = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.repeat(starts, lengths) + offsets

    def frames_of_chunk(self, c: int) -> np.ndarray:
        """Distinct frame indices the chunk reads, sorted (each is read once per chunk)."""
        s = self.chunk_slice(c)
        return np.unique(np.concatenate([self.reference[s], self.moving[s]]))


def make_plan(n_frames: int | None = None, *, pairs: str = "consecutive", explicit=None, chunk: int = 64) -> Plan:
    """Pair the frames of a sequence, or take explicit pairs (a manifest).

    Parameters
    ----------
    n_frames : int
        Frames in the sequence (ignored with ``explicit``).
    pairs : {'consecutive', 'first'}
        ``consecutive``: items (t-1, t) for t = 1..n-1; ``first``: (0, t) for t = 1..n-1.
    explicit : sequence of (int, int), optional
        Explicit (reference, moving) frame indices.
    chunk : int
        Items per chunk (>= 1).
    """
    if int(chunk) != chunk or chunk < 1:
        raise ConfigError(f"--chunk {chunk} must be a whole number >= 1")
    if explicit is not None:
        arr = np.asarray(explicit, dtype=np.int64).reshape(-1, 2)
        return Plan(arr[:, 0].copy(), arr[:, 1].copy(), int(chunk))
    if pairs not in PAIRINGS:
        raise ConfigError(f"--pairs {pairs!r} is not one of {', '.join(PAIRINGS)}")
    n = int(n_frames or 0)
    t = np.arange(1, max(n, 1), dtype=np.int64)
    ref = t - 1 if pairs == "consecutive" else np.zeros_like(t)
    return Plan(ref, t, int(chunk))
