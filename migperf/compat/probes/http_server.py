"""The baseline server: a TorchScript model behind the standard library's HTTP server.

``python -m migperf.compat.probes.http_server MODEL.pt`` loads the model on
the first CUDA device it sees (the one ``CUDA_VISIBLE_DEVICES`` exposes), or
on the CPU when it sees none, listens on a free port of 127.0.0.1 and prints
``PORT <n>``. ``POST /infer`` with ``{"inputs": [[...], ...]}`` answers
``{"outputs": [[...]], "device": "cuda:0 (<name>)", "pid": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def main(path: str) -> None:
    """Serve the model until killed."""
    import torch

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    label = f"cuda:0 ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else "cpu"
    model = torch.jit.load(path, map_location=device).eval()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body: Any = json.loads(self.rfile.read(length) or b"{}")
                x = torch.tensor(body["inputs"], dtype=torch.float32, device=device)
                with torch.no_grad():
                    y = model(x)
                reply = {"outputs": y.cpu().tolist(), "device": label, "pid": os.getpid()}
                status = 200
            except Exception as exc:  # noqa: BLE001 - the client gets the error
                reply, status = {"error": f"{type(exc).__name__}: {exc}"}, 400
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
