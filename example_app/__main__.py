"""``python -m example_app``: a Celery worker and the Flask development server in one terminal.

The worker is a child process (``celery -A example_app.worker:celery worker``); the server runs in
this process. Ctrl-C or SIGTERM stops the server, then the worker; a worker that exits on its own
stops the server too (exit status 1). Settings come from the environment (see the package
docstring); ``PORT`` picks the server's port (default 5000): ``PORT=5001 ./dev.sh example``.
The app runs in debug, so the operations console is on (``FLASK_DEBUG=0`` turns both off).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from werkzeug.serving import make_server

from . import broker_description, create_app

HOST = "127.0.0.1"
#: How long the worker gets to finish its current task after SIGTERM before it is killed.
WORKER_STOP_TIMEOUT = 30.0


def start_worker(instance_path: str) -> subprocess.Popen[bytes]:
    """Start the worker, sharing this process's terminal and its instance folder."""
    command = [sys.executable, "-m", "celery", "-A", "example_app.worker:celery", "worker"]
    command += ["--loglevel=INFO", "--concurrency=1"]
    # The worker builds its app from the environment: give it the same instance folder (hence the
    # same filesystem broker folder and SQLite file) however this process found it.
    env = {**os.environ, "FLASK_EXAMPLE_INSTANCE_PATH": instance_path}
    return subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, env=env)


def stop_worker(worker: subprocess.Popen[bytes], timeout: float = WORKER_STOP_TIMEOUT) -> int:
    """Ask the worker to finish (SIGTERM is Celery's warm shutdown), kill it if it hangs; reap it.

    A worker still starting up has not installed its signal handlers and may miss the first
    SIGTERM, so it is sent again after 2 s and 6 s (a second one is still a warm shutdown, which
    Celery logs again: hence not more often).
    """
    if worker.poll() is None:
        print(f" * Stopping the Celery worker (pid {worker.pid})", flush=True)
        start = time.monotonic()
        try:
            for resend_at in (2.0, 6.0, timeout):
                worker.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=max(min(resend_at, timeout) - (time.monotonic() - start), 0.01))
                if worker.poll() is not None:
                    break
            else:
                raise subprocess.TimeoutExpired(worker.args, timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            print(" * Killing the worker (it did not stop in time, or Ctrl-C again)", flush=True)
            worker.kill()
            worker.wait()
    return worker.returncode


class WorkerWatch(threading.Thread):
    """Calls ``on_exit`` (which stops the server) if the worker exits while the server runs."""

    def __init__(self, worker: subprocess.Popen[bytes], on_exit: Callable[[], None]) -> None:
        super().__init__(name="worker-watch", daemon=True)
        self.worker = worker
        self.on_exit = on_exit
        self.done = threading.Event()
        self.worker_died = False

    def run(self) -> None:
        while not self.done.wait(0.5):
            if self.worker.poll() is not None:
                self.worker_died = True
                print(f" * The Celery worker exited ({self.worker.returncode}): stopping", flush=True)
                self.on_exit()
                return

    def stop(self) -> None:
        self.done.set()
        self.join()


def main() -> int:
    """Run the worker and the server until Ctrl-C or SIGTERM; return the exit status."""
    # In debug unless FLASK_DEBUG says otherwise: the console is on (the server listens on 127.0.0.1).
    app = create_app(**({} if "FLASK_DEBUG" in os.environ else {"DEBUG": True}))
    port = int(os.environ.get("PORT", "5000"))
    # Werkzeug's development server, as `flask run` uses (without its reloader, which would run
    # this module again in a child process, with a second worker). It binds the port now: a busy
    # port fails before any worker starts.
    try:
        server = make_server(HOST, port, app, threaded=True)
    except SystemExit:  # Werkzeug has said "Port ... is in use by another program" and exits
        print(
            f" * Port {port} is in use (another server, or an example still running?): choose another "
            f"with PORT, e.g. PORT={port + 1} ./dev.sh example (or PORT={port + 1} python -m example_app)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(f" * Instance folder: {app.instance_path}", flush=True)
    print(f" * Broker: {broker_description(app)}", flush=True)
    print(f" * Database: {app.config['EXAMPLE_DATABASE']}", flush=True)

    # SIGTERM does what Ctrl-C does: KeyboardInterrupt, which ends serve_forever(). Without this,
    # SIGTERM would end this process at once and leave the worker behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    worker = start_worker(app.instance_path)
    watch = WorkerWatch(worker, server.shutdown)
    try:
        watch.start()
        print(f" * Celery worker started (pid {worker.pid})", flush=True)
        if app.config["EVENTLIB_CONSOLE"]:
            console = app.config["EVENTLIB_CONSOLE_URL_PREFIX"]
            print(f" * The operations console: http://{HOST}:{port}{console}/", flush=True)
        print(f" * Open http://{HOST}:{port}/ (Ctrl-C to stop)", flush=True)
        server.serve_forever()  # returns on Ctrl-C, SIGTERM, or server.shutdown()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if watch.is_alive():
            watch.stop()
        # Ctrl-C in a terminal reaches the worker as well (same process group): it is stopping
        # already, and a second signal is still a warm shutdown.
        stop_worker(worker)
    return 1 if watch.worker_died else 0


if __name__ == "__main__":
    sys.exit(main())
