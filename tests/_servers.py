"""Real servers on loopback for the remote-storage tests and benchmarks (no mocks of client libraries).

- :class:`S3Server`: moto's S3-compatible server in its own process (``python -m moto.server``), spoken
  to by s3fs/botocore over real HTTP on 127.0.0.1.
- :class:`RangeHTTPServer`: a static file server (``http.server``) that also answers ``Range``
  requests (``bytes=a-b``, ``a-``, ``-n``) with 206, as object stores and web servers do, so remote TIFFs
  are read by byte range. It counts requests and bytes and can add latency per request.
- :class:`LatencyProxy`: a TCP proxy on loopback that delays each request (each burst of bytes from the
  client) by a fixed time: high-latency storage in front of any of the above.
- :func:`free_port`: a port nobody listens on (for "connection refused").
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from functools import partial

__all__ = ["S3Server", "RangeHTTPServer", "LatencyProxy", "free_port", "s3_options", "new_bucket"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc=None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class S3Server:
    """moto's S3 server on 127.0.0.1 in a child process; ``endpoint`` is its URL."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> S3Server:
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        _wait_port(self.port, 60, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def s3_options(endpoint: str, key: str = "testing", secret: str = "testing") -> dict:
    """Storage options for s3fs against a loopback S3 server (moto takes any key)."""
    return {"endpoint_url": endpoint, "key": key, "secret": secret,
            "client_kwargs": {"region_name": "us-east-1"}}


def new_bucket(options: dict, prefix: str = "gd") -> str:
    """Create a fresh bucket on the server and return its name."""
    import s3fs  # noqa: PLC0415

    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    # not fs.mkdir: with region us-east-1 it sends that as a LocationConstraint, which S3 (and moto)
    # refuse (us-east-1 is the default and must not be named)
    fs.call_s3("create_bucket", Bucket=name)
    fs.invalidate_cache()
    return name


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single byte ranges, counting, latency and a quiet log."""

    server_version = "gpudiff-test/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

    def log_message(self, *args):  # quiet
        pass

    def _count(self, nbytes: int) -> None:
        """One request, and the body bytes it sends (none for HEAD)."""
        srv = self.server
        with srv.lock:
            srv.requests += 1
            srv.bytes_sent += nbytes if self.command != "HEAD" else 0

    def send_head(self):  # noqa: C901 - the standard handler's shape, with ranges
        self._remaining = None  # per request: a keep-alive connection serves many
        if self.server.latency_s:
            time.sleep(self.server.latency_s)
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            self._count(0)
            return super().send_head()
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        except OSError:
            self._count(0)
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        m = _RANGE.match(self.headers.get("Range", "").strip())
        if m is None:
            self.send_response(200)
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{size}-{int(os.fstat(f.fileno()).st_mtime_ns)}"')
            self.end_headers()
            self._count(size)
            self._remaining = size
            return f
        a, b = m.groups()
        if a == "":
            start, end = max(0, size - int(b)), size - 1
        else:
            start, end = int(a), min(size - 1, int(b)) if b else size - 1
        if start >= size or start > end:
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._count(0)
            return None
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        f.seek(start)
        self._count(end - start + 1)
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        left = getattr(self, "_remaining", None)
        while left is None or left > 0:
            block = source.read(65536 if left is None else min(65536, left))
            if not block:
                break
            outputfile.write(block)
            if left is not None:
                left -= len(block)


class RangeHTTPServer:
    """Serve ``root`` on 127.0.0.1 (threads), with byte ranges; ``url`` is its base URL."""

    def __init__(self, root: str, latency_s: float = 0.0):
        self.root = os.fspath(root)
        handler = partial(_RangeHandler, directory=self.root)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.lock = threading.Lock()
        self.httpd.requests = 0
        self.httpd.bytes_sent = 0
        self.httpd.latency_s = latency_s
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = None

    @property
    def requests(self) -> int:
        return self.httpd.requests

    @property
    def bytes_sent(self) -> int:
        return self.httpd.bytes_sent

    def reset_counts(self) -> None:
        with self.httpd.lock:
            self.httpd.requests = 0
            self.httpd.bytes_sent = 0

    def start(self) -> RangeHTTPServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LatencyProxy:
    """``127.0.0.1:port`` -> ``target_port``, each burst of request bytes delayed by ``delay_s``."""

    def __init__(self, target_port: int, delay_s: float):
        self.target_port = target_port
        self.delay_s = float(delay_s)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()

    def _pump(self, src, dst, delay: float) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, self.delay_s), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, 0.0), daemon=True).start()

    def start(self) -> LatencyProxy:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
