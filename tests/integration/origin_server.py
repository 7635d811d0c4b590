"""A real HTTP(S) origin for the checks' kernel tests, whose answers a test can change live.

    python origin_server.py --dir DIR [--port 80] [--tls CERT KEY]

Every request is answered with the status code in DIR/status (default 200) and the body in
DIR/index.html, read afresh each time, so a test turns a server into a 503 or a wrong-body
server by writing a file, with no restart.
"""

from __future__ import annotations

import argparse
import http.server
import ssl
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    directory: Path = args.dir

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status_file = directory / "status"
            status = int(status_file.read_text()) if status_file.exists() else 200
            body = (directory / "index.html").read_bytes()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
