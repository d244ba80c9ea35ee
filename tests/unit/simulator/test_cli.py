"""``python -m cocoon_operator.simulator``: arguments, and one real run on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from cocoon_operator.attestation import TrustedRoot
from cocoon_operator.simulator import Faults, SimulatorConfig
from cocoon_operator.simulator.cli import build_parser, config_from_args, main


def _config(*argv: str) -> SimulatorConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_ports_follow_the_instance() -> None:
    config = _config("--instance", "2")
    assert (config.port, config.tls_port) == (12020, 12021)
    config = _config("--instance", "2", "--port", "15000", "--tls-port", "15100")
    assert (config.port, config.tls_port) == (15000, 15100)
    assert _config("--port", "0").tls_port == 0


def test_options_map_to_the_config() -> None:
    config = _config(
        "--fault",
        "hang",
        "--fault",
        "tampered-evidence",
        "--disabled",
        "--coefficient",
        "1500",
        "--drain-seconds",
        "2",
        "--rotate-seconds",
        "0",
        "--proxies",
        "1",
        "--model-unlisted",
    )
    assert config.faults == Faults(hang=True, tampered_evidence=True)
    assert not config.enabled
    assert config.coefficient == 1500
    assert config.load.drain_seconds == 2
    assert config.rotate_every is None
    assert config.proxies == 1
    assert not config.model_listed and config.image_listed
    assert _config().rotate_every is not None


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "loopback" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--fault", "explode"])
    assert info.value.code == 2


def test_runs_as_a_process(tmp_path: Path) -> None:
    root_out = tmp_path / "root.pem"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[3] / "operator"), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cocoon_operator.simulator",
            "--port",
            "0",
            "--instance",
            "1",
            "--pki-time",
            "2026-03-01T00:00:00Z",
            "--root-out",
            str(root_out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["instance"] == 1
        assert line["http"].startswith("http://127.0.0.1:")
        assert TrustedRoot.load(root_out.read_bytes()).fingerprint == line["test_root_sha256"]
        with urllib.request.urlopen(f"{line['http']}/simulator/state", timeout=10) as resp:
            state = json.load(resp)
        assert state["image_hash"] == line["image_hash"]
        assert state["instance"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
