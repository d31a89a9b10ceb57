"""``gpudiff run --verify-on-start``, and the same by itself on FUSE mounts of object stores (whose
rename is a copy and a delete): a done chunk whose data file was left short (a writer killed during
such a rename) is found before resuming and recomputed, so the store ends as an uninterrupted run's."""

from __future__ import annotations

import pytest

from gpudiff.cli._main import main
from gpudiff.engine import _verify
from gpudiff.engine._store import ResultStore
from gpudiff.engine._verify import non_atomic_rename_fs
from tests._stores import assert_same_store

BASE = ["--backend", "numpy", "--no-progress", "--chunk", "4"]

MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
bucket /mnt/gcs fuse.gcsfuse rw,nosuid,nodev 0 0
bucket2 /mnt/my\\040data fuse.s3fs rw 0 0
nfs:/export /mnt/gcs/nfs nfs4 rw 0 0
server:/ /mnt/sshfs fuse.sshfs rw 0 0
"""


@pytest.mark.parametrize("path, expected", [
    ("/mnt/gcs/runs/a.zarr", "fuse.gcsfuse"),
    ("/mnt/gcs", "fuse.gcsfuse"),
    ("/mnt/my data/a.zarr", "fuse.s3fs"),  # /proc/mounts writes the space as \040
    ("/mnt/gcs/nfs/a.zarr", None),  # the longest mount point wins: NFS renames atomically
    ("/mnt/gcsx/a.zarr", None),  # a prefix of the name is not the mount
    ("/mnt/sshfs/a.zarr", None),  # FUSE, but not an object store's
    ("/home/a.zarr", None),
])
def test_filesystems_without_atomic_rename_are_known_by_their_mount(path, expected):
    assert non_atomic_rename_fs(path, MOUNTS) == expected


def _short_chunk(store_path, array="manhattan", chunk=1):
    """Cut a done chunk's data file to half, as a rename by copy leaves it when killed."""
    f = store_path / array / "c" / str(chunk)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["flag", "detected"])
def test_a_short_chunk_is_redone_before_resuming(cdnet_clip, tmp_path, capsys, monkeypatch, how):
    folder = cdnet_clip(10)
    out, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    assert main(["run", str(folder), "--out", str(out), *BASE]) == 0
    assert main(["run", str(folder), "--out", str(ref), *BASE]) == 0
    _short_chunk(out)
    capsys.readouterr()

    # a plain resume trusts the status: nothing is redone, the damage stays
    assert main(["run", str(folder), "--out", str(out), *BASE]) == 0
    assert "0 chunks run" in capsys.readouterr().err
    assert not ResultStore.open(str(out)).verify(repair=False)["clean"]

    extra = ["--verify-on-start"]
    if how == "detected":
        extra = []
        monkeypatch.setattr(_verify, "non_atomic_rename_fs", lambda path, mounts=None: "fuse.gcsfuse")
    assert main(["run", str(folder), "--out", str(out), *BASE, *extra]) == 0
    err = capsys.readouterr().err
    assert "1 damaged re-marked pending" in err and "1 chunk run" in err, err
    if how == "detected":
        assert "fuse.gcsfuse, which cannot rename atomically" in err
    assert ResultStore.open(str(out)).verify(repair=False)["clean"]
    assert_same_store(out, ref)


def test_only_the_shards_own_chunks_are_verified(cdnet_clip, tmp_path, capsys):
    """A shard reads back only its own chunks: another shard may be writing the others."""
    folder = cdnet_clip(13)  # 12 items, 3 chunks of 4
    out = tmp_path / "s.zarr"
    assert main(["run", str(folder), "--out", str(out), *BASE]) == 0
    _short_chunk(out, chunk=1)  # chunk 1 belongs to shard 1/2
    capsys.readouterr()
    assert main(["run", str(folder), "--out", str(out), *BASE, "--shard", "0/2", "--verify-on-start"]) == 0
    assert "damaged" not in capsys.readouterr().err
    assert main(["run", str(folder), "--out", str(out), *BASE, "--shard", "1/2", "--verify-on-start"]) == 0
    assert "1 damaged re-marked pending" in capsys.readouterr().err
    assert ResultStore.open(str(out)).verify(repair=False)["clean"]
