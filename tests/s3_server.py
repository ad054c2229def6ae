"""A moto S3 server on 127.0.0.1 for tests, and the standard AWS_* variables that point jobs at it.

    with moto_s3("bucket") as (client, env):
        subprocess.run([...], env={**os.environ, **env})
"""

from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from typing import Iterator

import pytest


@contextmanager
def moto_s3(bucket: str, secret: str = "s") -> Iterator[tuple[object, dict]]:
    """Start a server, create `bucket`; yields (boto3 client, env). Skips the test without boto3/moto."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_REGION": "us-east-1"}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                              aws_access_key_id="k", aws_secret_access_key=secret)
        client.create_bucket(Bucket=bucket)
        yield client, env
    finally:
        server.stop()


SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message><RequestId>faults</RequestId></Error>")


@contextmanager
def throttling_proxy(endpoint: str, share: float, seed: int = 0) -> Iterator[dict]:
    """An HTTP proxy in front of an S3 endpoint that answers a seeded `share` of all requests (every kind: GET,
    HEAD, PUT, DELETE, listings) with `503 SlowDown`, as S3 does under load, and forwards the rest.

    Yields {"url": the proxy's endpoint (for AWS_ENDPOINT_URL), "stats": {"requests", "throttled"} so far}.
    """
    import http.client
    import random
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    target = urlsplit(endpoint)
    rng, lock = random.Random(seed), threading.Lock()
    stats = {"requests": 0, "throttled": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the AWS SDK expects

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if not size:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                            pass
                        return data
                    data += self.rfile.read(size + 2)[:size]
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()
            with lock:
                stats["requests"] += 1
                throttle = rng.random() < share
                stats["throttled"] += throttle
            if throttle:
                self.send_response(503, "Slow Down")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOW_DOWN)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(SLOW_DOWN)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection", "expect")}
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "stats": stats}
    finally:
        server.shutdown()
        server.server_close()
