"""`ihuman serve --ray`: many avatar sessions over many GPUs and machines, on Ray.

The HTTP front (transport.server, unchanged) places each talker on a worker with free capacity
(front.py); a worker is a Ray actor that owns one engine and the WebRTC peers of its sessions
(worker.py), so that media flows between the client and the worker directly, never through the
front. The front keeps what the fleet shares: the uploaded pictures (pushed to every worker
through Ray's object store), which worker holds which session, each worker's health, and the
metrics of all of them (metrics.py).

Why Ray core actors and not Ray Serve replicas: a WebRTC session is a long-lived, stateful thing
pinned to one process (its peers, its engine session); Serve routes each request to any replica
and scales replicas by request load, while here every later request of a session (a viewer's
offer) must reach the same worker, and a worker may only be removed once its sessions are over.

Needs the `scale` extra (`pip install 'infinityhuman[scale]'`); nothing else imports Ray.
"""
