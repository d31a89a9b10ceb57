"""gpudiff.io._remote without a server: URL parsing, storage options, redaction, the messages."""

from __future__ import annotations

import builtins
import datetime
import json

import pytest

from gpudiff.errors import ConfigError, InputError
from gpudiff.io import _remote
from gpudiff.io._remote import (
    STORAGE_OPTIONS_ENV,
    filesystem_options,
    get_filesystem,
    is_remote,
    is_transport_error,
    object_fingerprint,
    parse_storage_options,
    protocol_of,
    redacted,
    remote_error,
    resolve_storage_options,
    url_join,
    url_parent,
)


# --------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    ("spec", "proto"),
    [
        ("s3://bucket/plate.zarr", "s3"),
        ("S3://Bucket/x.tif", "s3"),
        ("s3a://bucket/x", "s3a"),
        ("gs://bucket/a/*.png", "gs"),
        ("https://host/stack.ome.zarr", "https"),
        ("http://127.0.0.1:9000/x", "http"),
        ("memory://scratch/a", "memory"),
        ("file:///data/x.tif", None),
        ("local://x", None),
        ("/data/frames", None),
        ("frames/*.png", None),
        ("C:\\data\\x.tif", None),
        ("", None),
    ],
)
def test_protocol_of(spec, proto):
    assert protocol_of(spec) == proto
    assert is_remote(spec) is (proto is not None)


def test_protocol_of_non_strings():
    assert protocol_of(None) is None
    assert protocol_of(b"s3://b/x") is None
    assert not is_remote(123)


def test_url_join_and_parent():
    assert url_join("s3://b/a.zarr/", "0", "/1/") == "s3://b/a.zarr/0/1"
    assert url_join("https://h/x", "") == "https://h/x"
    assert url_parent("s3://b/a/x.zarr") == "s3://b/a"
    assert url_parent("s3://b/a/x.zarr/") == "s3://b/a"
    assert url_parent("https://host/d/image.zarr/0") == "https://host/d/image.zarr"


# --------------------------------------------------------------------------------------------
# storage options


def test_flat_options_serve_every_protocol():
    flat = {"endpoint_url": "http://h:9000", "key": "k"}
    assert _remote._for_protocol("s3", flat) == flat
    assert _remote._for_protocol("https", flat) == flat


def test_options_keyed_by_protocol():
    opts = {"s3": {"key": "k3"}, "https": {"headers": {"X": "1"}}, "anon": False}
    assert _remote._for_protocol("s3", opts) == {"key": "k3", "anon": False}
    assert _remote._for_protocol("s3a", opts) == {"key": "k3", "anon": False}  # alias
    assert _remote._for_protocol("http", opts) == {"headers": {"X": "1"}, "anon": False}  # http <-> https
    assert _remote._for_protocol("gs", opts) == {"anon": False}  # no entry: only the shared keys


def test_limits_under_user_options():
    out = filesystem_options("s3://b/x", {"config_kwargs": {"read_timeout": 7}})
    cfg = out["config_kwargs"]
    assert cfg["read_timeout"] == 7  # the user's value wins
    assert cfg["connect_timeout"] == _remote._CONNECT_S
    assert cfg["retries"]["max_attempts"] == _remote._ATTEMPTS
    http = filesystem_options("https://h/x", {})
    assert http["client_kwargs"]["timeout"].connect == _remote._CONNECT_S


def test_resolve_storage_options_sources(monkeypatch):
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    assert resolve_storage_options() == {}
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, '{"anon": true}')
    assert resolve_storage_options() == {"anon": True}
    assert resolve_storage_options({"key": "x"}) == {"key": "x"}  # explicit wins over the env
    assert resolve_storage_options('{"key": "y"}') == {"key": "y"}
    given = {"key": "z"}
    assert resolve_storage_options(given) is not given  # a copy


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"text"', "{'single': 'quotes'}"])
def test_bad_env_options_are_one_line_config_errors(monkeypatch, text):
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, text)
    with pytest.raises(ConfigError) as e:
        resolve_storage_options()
    msg = str(e.value)
    assert "\n" not in msg
    assert STORAGE_OPTIONS_ENV in msg


def test_bad_explicit_options():
    with pytest.raises(ConfigError, match="--storage-options is not valid JSON"):
        parse_storage_options("{")
    with pytest.raises(ConfigError, match="must be a dict"):
        resolve_storage_options(["key"])


def test_unknown_protocol():
    with pytest.raises(InputError, match="unknown protocol nosuchproto://"):
        get_filesystem("nosuchproto://a/b")


# --------------------------------------------------------------------------------------------
# secrets


def test_redacted_hides_secrets():
    opts = {
        "key": "AKIA123", "secret": "s3cr3t", "token": "t0k3n", "session_token": "s3ss10n", "password": "pa55",
        "endpoint_url": "http://h:9000", "anon": False,
        "client_kwargs": {"region_name": "eu-west-1", "aws_secret_access_key": "inner"},
        "s3": {"secret": "nested"},
    }
    out = redacted(opts)
    text = json.dumps(out)
    for secret in ("AKIA123", "s3cr3t", "t0k3n", "s3ss10n", "pa55", "inner", "nested"):
        assert secret not in text
    assert out["endpoint_url"] == "http://h:9000"
    assert out["anon"] is False
    assert out["client_kwargs"]["region_name"] == "eu-west-1"
    assert opts["secret"] == "s3cr3t"  # the input is left alone


# --------------------------------------------------------------------------------------------
# missing client packages


def _hide_module(monkeypatch, name):
    real = builtins.__import__

    def fake(mod, *args, **kwargs):
        if mod == name or mod.startswith(name + "."):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(mod, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


@pytest.mark.parametrize(("url", "package"), [("s3://b/x.tif", "s3fs"), ("https://h/x.tif", "aiohttp")])
def test_missing_package_names_the_extra(monkeypatch, url, package):
    pytest.importorskip("fsspec")
    _hide_module(monkeypatch, package)
    with pytest.raises(InputError) as e:
        get_filesystem(url)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and package in msg
    assert "gpudiff[remote]" in msg


def test_missing_fsspec(monkeypatch):
    _hide_module(monkeypatch, "fsspec")
    with pytest.raises(InputError, match=r"needs fsspec.*pip install fsspec"):
        get_filesystem("s3://b/x")


def test_gcsfs_is_named_by_itself(monkeypatch):
    pytest.importorskip("fsspec")
    _hide_module(monkeypatch, "gcsfs")
    with pytest.raises(InputError, match="needs gcsfs, which is not installed: pip install gcsfs"):
        get_filesystem("gs://b/x")


# --------------------------------------------------------------------------------------------
# errors and identity


class _ClientError(Exception):
    """Shaped like botocore's ClientError: a response dict with the error code."""

    def __init__(self, code):
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (FileNotFoundError("The specified key does not exist."), "no such object"),
        (FileNotFoundError("The specified bucket does not exist"), "no such bucket"),
        (_ClientError("NoSuchBucket"), "no such bucket"),
        (PermissionError("Access Denied"), "access denied"),
        (_ClientError("InvalidAccessKeyId"), "access denied"),
        (ConnectionRefusedError("[Errno 111] Connection refused"), "cannot reach the endpoint"),
        (TimeoutError("read timed out"), "did not answer in time"),
        (RuntimeError("something else"), "reading failed"),
    ],
)
def test_remote_error_words(exc, words):
    err = remote_error("s3://b/x.tif", exc)
    assert isinstance(err, InputError)
    assert str(err).startswith("s3://b/x.tif: ")
    assert words in str(err)
    assert "\n" not in str(err)


def test_refused_http_reported_as_not_found_is_unreachable():
    # fsspec's HTTP filesystem raises FileNotFoundError from the aiohttp connection error
    try:
        try:
            raise OSError("Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed]")
        except OSError as inner:
            raise FileNotFoundError("http://127.0.0.1:9/x.tif") from inner
    except FileNotFoundError as exc:
        err = remote_error("http://127.0.0.1:9/x.tif", exc)
    assert "cannot reach the endpoint" in str(err)


def test_remote_error_keeps_input_errors():
    e = InputError("already worded")
    assert remote_error("s3://b/x", e) is e


def test_is_transport_error():
    assert is_transport_error(FileNotFoundError("x"))
    assert is_transport_error(ConnectionResetError())
    assert not is_transport_error(ValueError("bad bytes"))
    assert not is_transport_error(KeyError("k"))


def test_object_fingerprint():
    assert object_fingerprint({"size": 10, "ETag": '"abc"'}) == (10, "abc")
    assert object_fingerprint({"size": 3, "etag": "x", "LastModified": "y"}) == (3, "x")
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    assert object_fingerprint({"size": 4, "LastModified": when}) == (4, when.isoformat())
    assert object_fingerprint({"size": None}) == (None, None)
    assert object_fingerprint({}) == (None, None)
