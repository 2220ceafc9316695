"""A loopback TCP proxy that spoils the first connections as scripted, then relays bytes unchanged.

    with FlakyProxy(service_port, [DROP, LOSE_ANSWER, canned(503, "Service Unavailable")]) as proxy:
        ModerationClient(proxy.url, key).moderate("hi")     # succeeds on the 4th connection
        proxy.connections                                   # 4

DROP reads the request and closes without an answer; LOSE_ANSWER forwards the request, waits for the service's
whole answer (so it has decided and stored) and closes without passing it on; bytes are sent as the answer
instead of the service's. The client's retries meet real sockets and a real service, not a mocked transport.
"""

from __future__ import annotations

import contextlib
import socket
import threading

IO_S = 10.0  # socket timeout inside the proxy: a stuck exchange fails the test instead of hanging it

DROP = "drop"  # read the request, close the connection without an answer
LOSE_ANSWER = "lose-answer"  # forward the request, wait for the service's whole answer, then close without it
STALL = "stall"  # as LOSE_ANSWER, but hold the answer until the client gives up waiting (its read timeout)


def canned(status: int, reason: str, headers: str = "") -> bytes:
    """A raw HTTP response the proxy answers itself (the service never sees the request)."""
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n{headers}\r\n".encode()


class FlakyProxy:
    """A loopback TCP proxy to `upstream_port`: connection number i follows `script[i]` (DROP, LOSE_ANSWER or raw
    response bytes); connections past the script are relayed both ways unchanged. `connections` counts them."""

    def __init__(self, upstream_port: int, script: list[str | bytes]):
        self.upstream_port, self.script, self.connections = upstream_port, list(script), 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> FlakyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                number, self.connections = self.connections, self.connections + 1
            step = self.script[number] if number < len(self.script) else None
            threading.Thread(target=self._handle, args=(conn, step), daemon=True).start()

    def _handle(self, conn: socket.socket, step: str | bytes | None) -> None:
        conn.settimeout(IO_S)
        with conn:
            if step is None:
                return self._relay(conn)
            request = _read_http_message(conn)
            if step == DROP:
                return
            if step in (LOSE_ANSWER, STALL):
                with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=IO_S) as upstream:
                    upstream.sendall(request)
                    _read_http_message(upstream)  # the service has decided and stored; the client never hears
                if step == STALL:
                    with contextlib.suppress(OSError):
                        conn.recv(1)  # returns once the client, timed out, closes its side (IO_S at most)
                return
            assert isinstance(step, bytes)
            conn.sendall(step)

    def _relay(self, conn: socket.socket) -> None:
        with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=None) as upstream:
            conn.settimeout(None)
            back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
            back.start()
            _pump(conn, upstream)
            back.join(IO_S)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _read_http_message(sock: socket.socket) -> bytes:
    """One HTTP/1.1 request or response with a Content-Length body (all httpx2 and uvicorn send here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
