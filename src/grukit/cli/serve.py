"""``grukit serve MODEL_DIR``: answer HTTP requests with a saved model (see :mod:`grukit.serve`)."""

from __future__ import annotations

import argparse
import signal
import socket
import sys

import grukit
from grukit.cli.options import nonnegative_float, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``grukit`` command."""
    serve = subparsers.add_parser(
        "serve",
        help="serve a saved model over HTTP: predict, token streams, sessions, /docs, /metrics",
        description="Serve a saved model folder over HTTP until SIGTERM or Ctrl-C (requests in flight finish "
        "first). The API is described at /docs once it runs. Needs: pip install 'grukit[serve]'.",
    )
    serve.add_argument("model", help="a model folder (any grukit model or estimator saved with save_pretrained)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port, printed)")
    serve.add_argument("--max-batch-size", type=positive_int, default=32,
                       help="inputs the micro-batcher merges into one model call (1: one request at a time)")
    serve.add_argument("--max-wait-ms", type=nonnegative_float, default=2.0,
                       help="how long a batch waits for more requests")
    serve.add_argument("--max-body-bytes", type=positive_int, default=1 << 20,
                       help="larger request bodies are refused with 413")
    serve.add_argument("--max-items", type=positive_int, default=256, help="inputs per request (more: 413)")
    serve.add_argument("--max-sessions", type=positive_int, default=64, help="open sessions (one more: 429)")
    serve.add_argument("--session-idle-s", type=positive_float, default=300.0,
                       help="a session without a step for this many seconds is closed")
    serve.add_argument("--max-new-tokens", type=positive_int, default=1024,
                       help="the most tokens one /v1/generate request may ask for")
    serve.add_argument("--graceful-timeout-s", type=positive_float, default=30.0,
                       help="on SIGTERM, how long requests in flight may take to finish")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port expected a port in [0, 65535], got {args.port}")
    try:
        import uvicorn

        from grukit.serve.adapters import serve_model
        from grukit.serve.app import ServeSettings, create_app
    except ImportError as error:
        missing = error.name or "fastapi and uvicorn"
        raise ImportError(f"grukit serve needs {missing}: pip install 'grukit[serve]'") from error

    served = serve_model(grukit.load(args.model))
    settings = ServeSettings(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_body_bytes=args.max_body_bytes,
        max_items=args.max_items,
        max_sessions=args.max_sessions,
        session_idle_s=args.session_idle_s,
        max_new_tokens=args.max_new_tokens,
    )
    app = create_app(served, settings)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))  # bound here so that --port 0 can print the port it got
    listener.listen(2048)  # connections from now on wait in the backlog until the app has started
    port = listener.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    print(f"grukit serve: {served.architecture} from {args.model} on http://{host}:{port} (API at /docs)", flush=True)
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=args.graceful_timeout_s, access_log=False
    )
    # uvicorn stops gracefully on SIGTERM, then raises the signal again: a no-op handler makes that a clean exit 0
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("grukit serve: stopped", file=sys.stderr, flush=True)
    return 0
