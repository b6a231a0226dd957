"""A shared local work queue for the demo's `worker` service (issue 16): every GET /take?who=ID hands out the next
message number and records who took it and when; GET /log answers the records as JSON. It stands for an SQS
queue both colours' workers would consume; the tests read who consumed what around each step."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WorkQueue:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.records: list[dict] = []
        self._lock = threading.Lock()
        queue = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # quiet
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                if url.path == "/take":
                    who = urllib.parse.parse_qs(url.query).get("who", ["?"])[0]
                    body = str(queue.take(who)).encode()
                elif url.path == "/log":
                    with queue._lock:
                        body = json.dumps(queue.records).encode()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,), daemon=True,
                                        name="work-queue")

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def take(self, who: str) -> int:
        with self._lock:
            self.records.append({"n": len(self.records) + 1, "who": who, "at": time.time()})
            return len(self.records)

    def start(self) -> WorkQueue:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
