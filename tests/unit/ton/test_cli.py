"""``cocoon-operator ton ...`` against a local chain served on loopback.

The chain's HTTP server runs on an event loop in a background thread, so the
CLI runs exactly as from a shell (its own ``asyncio.run``), in-process.
"""

import asyncio
import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cocoon_operator.cli import main
from cocoon_operator.ton.address import Address
from cocoon_operator.ton.amounts import parse_ton
from cocoon_operator.ton.localchain import LocalChain, RunningLocalChain, start_local_chain
from cocoon_operator.ton.root import deploy_local, model_hash, state_init
from cocoon_operator.ton.wallet import WalletKey

MODEL = "Qwen/Qwen3-32B@" + "ab" * 20 + ":" + "cd" * 32
IMAGE = hashlib.sha256(b"image").digest()
PROXY = hashlib.sha256(b"proxy").digest()
OTHER = hashlib.sha256(b"other").digest()
API_KEY = "s3cret-key-never-printed"


@dataclass
class Served:
    url: str
    wallet: Address
    root: Address
    empty: Address


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    chain = LocalChain(clock=lambda: 1_700_000_000.0)
    wallet = chain.deploy_wallet(WalletKey(b"\x03" * 32), parse_ton("12.5"))
    deployment = state_init(
        wallet.address,
        worker_hashes=[IMAGE],
        model_hashes=[model_hash(MODEL)],
        proxy_hashes=[PROXY],
    )
    deploy_local(chain, deployment, parse_ton("1"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running: RunningLocalChain = asyncio.run_coroutine_threadsafe(
        start_local_chain(chain, api_key=API_KEY), loop
    ).result(timeout=30)
    try:
        yield Served(running.api_url, wallet.address, deployment.address, Address(0, b"\x09" * 32))
    finally:
        asyncio.run_coroutine_threadsafe(running.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(autouse=True)
def api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TONCENTER_API_KEY", API_KEY)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["ton", *argv])
    out = capsys.readouterr().out
    assert API_KEY not in out
    lines = out.splitlines()
    assert len(lines) == 1, out
    return code, json.loads(lines[0])


def test_address_all_forms(capsys: pytest.CaptureFixture[str]) -> None:
    address = Address(0, bytes(range(32)))
    for text in (
        address.to_raw(),
        address.to_friendly(bounceable=False),
        address.to_friendly(bounceable=True, url_safe=False),
    ):
        code, out = run(capsys, "address", text)
        assert code == 0
        assert out["valid"] is True and out["raw"] == address.to_raw()
        assert out["bounceable"] == address.to_friendly(bounceable=True)
        assert out["non_bounceable"] == address.to_friendly(bounceable=False)
        assert out["testnet"] is False
    code, out = run(capsys, "address", address.to_friendly(testnet=True))
    assert code == 0 and out["testnet"] is True and out["input_form"] == "friendly"
    assert out["bounceable"] == address.to_friendly(testnet=True)
    forms = out["forms"]
    assert isinstance(forms, dict)
    assert forms["mainnet"]["non_bounceable"] == address.to_friendly(bounceable=False)


def test_address_invalid_is_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    good = Address(0, bytes(32)).to_friendly()
    bad = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")  # breaks the checksum
    code, out = run(capsys, "address", bad)
    assert code == 1 and out["valid"] is False and "checksum" in str(out["detail"])
    code, out = run(capsys, "address", "0:abc")
    assert code == 1 and out["ok"] is False


def test_wallet(capsys: pytest.CaptureFixture[str], served: Served) -> None:
    code, out = run(capsys, "wallet", "--endpoint", served.url, served.wallet.to_raw())
    assert code == 0 and out["ok"] is True
    assert out["state"] == "active" and out["wallet"] is True and out["seqno"] == 0
    assert out["wallet_type"] == "wallet v4 r2"
    balance = int(str(out["balance_nanoton"]))
    assert 0 < balance <= parse_ton("12.5")
    assert str(out["balance_ton"]).startswith("12.4")
    address = out["address"]
    assert isinstance(address, dict) and address["raw"] == served.wallet.to_raw()

    code, out = run(capsys, "wallet", "--endpoint", served.url, served.empty.to_friendly())
    assert code == 0
    assert (out["state"], out["wallet"], out["seqno"], out["balance_nanoton"]) == (
        "uninitialized",
        False,
        None,
        "0",
    )
    # the root is active but not a wallet
    code, out = run(capsys, "wallet", "--endpoint", served.url, served.root.to_raw())
    assert code == 0 and out["state"] == "active" and out["wallet"] is False


def test_allowlist(capsys: pytest.CaptureFixture[str], served: Served) -> None:
    base = ("allowlist", "--endpoint", served.url, "--root", served.root.to_friendly())
    code, out = run(
        capsys,
        *base,
        "--image-hash",
        IMAGE.hex(),
        "--image-hash",
        "0x" + OTHER.hex().upper(),
        "--model",
        MODEL,
        "--proxy-hash",
        PROXY.hex(),
    )
    assert code == 0 and out["root"] == served.root.to_raw()
    assert out["checks"] == [
        {"list": "worker", "hash": IMAGE.hex(), "allowed": True},
        {"list": "worker", "hash": OTHER.hex(), "allowed": False},
        {"list": "model", "hash": model_hash(MODEL).hex(), "allowed": True, "model": MODEL},
        {"list": "proxy", "hash": PROXY.hex(), "allowed": True},
    ]
    assert out["all_allowed"] is False

    code, out = run(capsys, *base, "--model-hash", model_hash(MODEL).hex())
    assert code == 0 and out["all_allowed"] is True


def test_allowlist_usage_errors(capsys: pytest.CaptureFixture[str], served: Served) -> None:
    base = ("allowlist", "--endpoint", served.url, "--root", served.root.to_raw())
    for extra in ((), ("--image-hash", "abc"), ("--model", "no-commit-or-verity")):
        code, out = run(capsys, *base, *extra)
        assert code == 2 and out["error"] == "usage"
    code, out = run(
        capsys, "allowlist", "--endpoint", served.url, "--root", "nope", "--image-hash", IMAGE.hex()
    )
    assert code == 2
    with pytest.raises(SystemExit) as exc:  # argparse: --model and --model-hash exclude each other
        main(["ton", *base, "--model", MODEL, "--model-hash", IMAGE.hex()])
    assert exc.value.code == 2
    capsys.readouterr()


def test_failures_exit_1(
    capsys: pytest.CaptureFixture[str],
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # a root that is not deployed: the get-method cannot run
    code, out = run(
        capsys,
        "allowlist",
        "--endpoint",
        served.url,
        "--root",
        served.empty.to_raw(),
        "--image-hash",
        IMAGE.hex(),
    )
    assert code == 1 and out["ok"] is False
    # a wrong API key (from a file, which wins over the environment) is refused
    key_file = tmp_path / "key"
    key_file.write_text("wrong-key\n")
    code, out = run(
        capsys,
        "wallet",
        "--endpoint",
        served.url,
        "--api-key-file",
        str(key_file),
        served.wallet.to_raw(),
    )
    assert code == 1 and out["error"] == "TonAuthError"
    assert "wrong-key" not in json.dumps(out)
    # no key at all
    monkeypatch.delenv("TONCENTER_API_KEY")
    code, out = run(capsys, "wallet", "--endpoint", served.url, served.wallet.to_raw())
    assert code == 1 and out["error"] == "TonAuthError"
    # unreadable key file: usage
    code, out = run(
        capsys,
        "wallet",
        "--endpoint",
        served.url,
        "--api-key-file",
        str(tmp_path / "missing"),
        served.wallet.to_raw(),
    )
    assert code == 2 and out["error"] == "usage"
    # nothing listens there
    code, out = run(
        capsys,
        "wallet",
        "--endpoint",
        "http://127.0.0.1:9/api/v2",
        "--timeout",
        "2",
        served.wallet.to_raw(),
    )
    assert code == 1 and out["ok"] is False


def test_console_entry_point_has_the_ton_group() -> None:
    """The installed command (``python -m cocoon_operator``) routes ``ton`` here."""
    done = subprocess.run(
        # "--": a masterchain raw address starts with "-", which argparse reads as an option
        [sys.executable, "-m", "cocoon_operator", "ton", "address", "--", "-1:" + "33" * 32],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["raw"] == "-1:" + "33" * 32 and out["workchain"] == -1
    usage = subprocess.run(
        [sys.executable, "-m", "cocoon_operator", "ton", "wallet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2
