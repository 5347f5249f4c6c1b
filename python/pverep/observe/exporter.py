"""``pverep exporter``: serve the metrics on ``GET /metrics`` (standard library HTTP server).

http.server is enough: one small text page per scrape, a scrape every 15-60 s. Each request
renders afresh from the files (config, state, history), so nothing goes stale between runs.
Listens on localhost unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pverep.errors import PverepError, ValidationError
from pverep.observe.metrics import CONTENT_TYPE

DEFAULT_LISTEN = "127.0.0.1:9737"


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[v6]:PORT`` → (addr, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValidationError(f"invalid listen address '{text}' (ADDR:PORT)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValidationError(f"invalid listen address '{text}' (an IP address)") from None
    return host, int(port)


def make_server(listen: str, render: Callable[[], str]) -> ThreadingHTTPServer:
    host, port = parse_listen(listen)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body = render().encode("utf-8")
            except PverepError as err:
                self.send_error(500, str(err))
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is no news

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    try:
        return Server((host, port), Handler)
    except OSError as err:
        raise PverepError(f"cannot listen on {listen}: {err.strerror}") from None


def serve(listen: str, render: Callable[[], str]) -> None:
    server = make_server(listen, render)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    print(f"serving metrics on http://{shown}:{port}/metrics", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
