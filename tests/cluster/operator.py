"""Run the real operator (``cocoon-operator run``) as a separate process for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[2]


class StartOperator(Protocol):
    """What the ``operator`` fixture hands a test: start ``cocoon-operator run`` for
    the test's namespace with ``args``; its process."""

    def __call__(
        self, *args: str, log: Path | None = None, env_extra: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]: ...


@contextmanager
def running_operator(
    kubeconfig: Path,
    namespace: str,
    log: Path,
    *extra_args: str,
    env_extra: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the operator for one namespace; stop it (SIGTERM, then SIGKILL) afterwards.

    Any launcher image is allowed (``--allow-any-launcher-image``: the tests' workers
    name simulated images) unless ``extra_args`` name the allowed ones themselves.
    """
    images = () if "--launcher-image" in extra_args else ("--allow-any-launcher-image",)
    args = ("run", "--namespace", namespace, "--verbose", *images, *extra_args)
    with running_cli(kubeconfig, log, *args, env_extra=env_extra, grace=15) as proc:
        yield proc


@contextmanager
def running_cli(
    kubeconfig: Path,
    log: Path,
    *args: str,
    env_extra: dict[str, str] | None = None,
    grace: float = 5,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cocoon-operator ARGS`` with its output in ``log``; stop it afterwards."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), **(env_extra or {})}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cocoon_operator", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        yield proc
    finally:
        stop_process(proc, grace=grace)


def stop_process(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
    proc.wait()
