"""The studies of a storage in optuna-dashboard (the optional `dashboard` extra), served over HTTP until
stopped: every trial, its parameters and values, Optuna's own plots, live while a sweep runs."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sweep.core.errors import SweepError
from sweep.study.storage import open_storage

INSTALL = "pip install 'loraplus-sweep[dashboard]'"


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per request, as optuna-dashboard's own command serves: one slow page never blocks the rest."""

    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per request would bury the URL


def serve(url: str, host: str, port: int, listening: Callable[[str], None]) -> None:
    """Serve the studies of the storage `url` on host:port until interrupted; `listening` gets the
    address once the port is bound. A missing package, a storage that does not exist (it is never
    created) or a port that cannot be bound is a SweepError."""
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise SweepError(f"the dashboard needs optuna-dashboard, which is not installed: {INSTALL}")
    from optuna_dashboard import wsgi

    app = wsgi(open_storage(url, create=False))
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    except OSError as e:  # taken, privileged, or a host this machine does not have
        raise SweepError(f"cannot serve the dashboard on {host}:{port}: {e.strerror or e}") from e
    with server:
        # The port bound, not the one asked for: --port 0 asks the system for a free one.
        listening(f"http://{host}:{server.server_address[1]}/")
        server.serve_forever()
