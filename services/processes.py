"""A service or job in its own process, as it runs in production, for the ``with`` block that
needs it: started with this interpreter, waited for, stopped with SIGTERM (so it flushes what it
holds) and killed only if it does not stop."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import requests


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the service binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_process(module: str, *args: str, log: str | None = None, stop_secs: float = 60):
    """``python -m module args`` in the background while the block runs.

    Yields:
        The Popen; the block may ``wait()`` on it (a job that ends by itself).
    """
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out,
                               stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=stop_secs)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log:
            out.close()


@contextlib.contextmanager
def running_service(module: str, *args: str, ready_path: str = "/", log: str | None = None,
                    ready_secs: float = 120):
    """A service on a free loopback port, yielded as its base URL once it answers HTTP.

    Raises:
        RuntimeError: it exited or did not answer within ``ready_secs`` (its log says why).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_process(module, *args, "--port", str(port), log=log) as process:
        deadline = time.monotonic() + ready_secs
        while True:
            try:
                requests.get(url + ready_path, timeout=60)  # any answer: it listens
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start (exit status {process.poll()}; "
                                       f"log {log or 'not kept'})") from None
                time.sleep(0.1)
        yield url
