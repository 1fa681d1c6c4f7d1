"""``grukit serve``: an HTTP server (FastAPI + uvicorn) for any saved grukit model folder. Needs the ``serve``
extra: ``pip install 'grukit[serve]'``.

- :mod:`grukit.serve.adapters`: one interface over every kind of model (inputs, predict, sessions).
- :mod:`grukit.serve.batching`: the single model thread and the micro-batcher.
- :mod:`grukit.serve.sessions`: stateful sessions with idle expiry and a cap.
- :mod:`grukit.serve.metrics`: Prometheus text for ``GET /metrics``.
- :mod:`grukit.serve.app`: the endpoints, :func:`create_app`.
"""
