"""Serve one GGUF file with llama.cpp's OpenAI-compatible server (the ``xllamacpp`` wheel).

As a script (the child process):

    python tests/realmodel/server.py --model v1.gguf --alias model-v1

listens on 127.0.0.1 on a free port with one inference thread, prints ``READY <url>`` once
the model is loaded, and serves until SIGTERM or SIGINT. From a test (the parent process),
``start_server(model_path, alias)`` spawns that script and returns once ``/health`` answers.

Nothing here imports ``threshold``: the server is infrastructure, not the code under test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

STARTUP_TIMEOUT_S = 60.0


def serve(model: str, alias: str, *, port: int = 0, threads: int = 1) -> int:
    """Run the server in this process until SIGTERM/SIGINT (the child side)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {alias}
    params.hostnames = ["127.0.0.1"]
    params.port = port  # 0: the kernel picks a free port, so parallel sessions never collide
    params.n_ctx = 4096
    params.n_parallel = 1
    # One thread: on a shared 2-core machine more threads make every call slower, not faster.
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = 0
    params.ui = False
    params.warmup = False
    server = xllamacpp.Server(params)  # loads the model and starts listening
    print(f"READY {server.listening_address}", flush=True)
    # Nobody reads our stdout after READY: point it at /dev/null so a chatty native library
    # can never fill the pipe and stall the server.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    del server  # the destructor stops the HTTP loop cleanly
    return 0


def start_server(
    model_path: str | os.PathLike[str], alias: str
) -> tuple[str, subprocess.Popen[str]]:
    """Spawn ``server.py`` for one model, wait until ``/health`` says it is ready, and
    return its base URL (``http://127.0.0.1:PORT``, no ``/v1``) and its process."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--model", str(model_path),
         "--alias", alias],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = _read_ready_line(proc)
        _wait_healthy(url, proc, time.monotonic() + STARTUP_TIMEOUT_S)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return url, proc


def stop_server(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (a clean shutdown), SIGKILL if that takes more than 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def running_server(
    model_path: str | os.PathLike[str], alias: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``start_server`` as a context manager that always stops the process."""
    url, proc = start_server(model_path, alias)
    try:
        yield url, proc
    finally:
        stop_server(proc)


def _read_ready_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:  # the child prints nothing else on stdout
        if line.startswith("READY "):
            return line.split()[1].rstrip("/")
    raise RuntimeError(f"model server exited with status {proc.wait()} before it was ready")


def _wait_healthy(url: str, proc: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # still loading (503) or not listening yet
        time.sleep(0.02)
    raise TimeoutError(f"model server at {url} not healthy after {STARTUP_TIMEOUT_S:.0f}s")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--alias", default="tiny")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    return serve(args.model, args.alias, port=args.port, threads=args.threads)


if __name__ == "__main__":
    sys.exit(main())
