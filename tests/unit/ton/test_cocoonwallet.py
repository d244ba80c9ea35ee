"""COCOON's node wallet: the pinned code, the data the real code reads, the address,
and ``cocoon-operator ton node-wallet``.

Three witnesses besides the module itself: COCOON's source (the code hex, when the
reference checkout is present), the real contract code running in the TVM and the
transaction executor (``libemulator``), and an independent derivation with
``tonsdk`` cells and PyNaCl keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tonsdk.boc import Cell as SdkCell
from tonsdk.boc import begin_cell as sdk_begin_cell
from tonsdk.utils import Address as SdkAddress

from cocoon_operator.cli import main
from cocoon_operator.ton.address import Address, parse_address
from cocoon_operator.ton.amounts import nanoton
from cocoon_operator.ton.cells import (
    begin_cell,
    cell_from_boc,
    cell_hash,
    cell_to_boc,
    core,
    from_core_address,
    to_core_address,
)
from cocoon_operator.ton.cocoonwallet import (
    COCOON_WALLET_CODE_BOC,
    COCOON_WALLET_CODE_HASH,
    GET_OWNER_ADDRESS,
    GET_PUBLIC_KEY,
    GET_SEQNO,
    node_wallet_address,
    node_wallet_address_of_key,
    node_wallet_data_boc,
    node_wallet_state_init_boc,
    parse_node_wallet_key,
)
from cocoon_operator.ton.errors import AddressError, NodeWalletKeyError, WalletError
from cocoon_operator.ton.localchain import (
    LocalChain,
    MessageRejected,
    default_config_boc,
    method_id,
)
from cocoon_operator.ton.localchain.emulator import run_get_method
from cocoon_operator.ton.wallet import Transfer, WalletKey, internal_message_cell

REPO = Path(__file__).resolve().parents[3]
CONTRACTS = REPO / "operator/cocoon_operator/ton/contracts"
COCOON = REPO.parent / "shared/reference/cocoon"

# The fixed vector: the seed 00 01 .. 1f (the SEED of test_wallet.py) and a made-up
# owner. test_the_fixed_vector checks every value by the independent path too.
VECTOR_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
VECTOR_PUBLIC_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
VECTOR_OWNER = "0:" + "ab" * 32
VECTOR_RAW = "0:af55b8582d52305941f644db8597b0398101cd7c870daaf343e902b91f43a969"
VECTOR_NON_BOUNCEABLE = "UQCvVbhYLVIwWUH2RNuFl7A5gQHNfIcNqvND6QK5H0OpaRe0"

# COCOON's own fake-TON client key (scripts/cocoon-launch:260-261): a key COCOON uses.
COCOON_EXAMPLE_KEY = "gaEatwGNgLGOeFI/TRGfPdJG/K4G8picYHQkDHpLQ9w="

NOW = 1_700_000_000
STANDARD_B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"

seeds = st.binary(min_size=32, max_size=32)
owners = st.builds(Address, st.sampled_from([0, -1]), st.binary(min_size=32, max_size=32))


# ------------------------------------------------------------------ independent path


def sdk_public_key(seed: bytes) -> bytes:
    """Ed25519 public key by PyNaCl (libsodium), not by ``cryptography``."""
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def sdk_address(seed: bytes, owner: Address) -> tuple[str, str]:
    """COCOON's derivation rebuilt with tonsdk cells, from the C++ layout:
    CocoonWallet.cpp:225-231 (data), SmartContract.hpp:97-101 (StateInit bits
    ``00 11 ... 0``), SmartContract.cpp:164-167 (workchain 0, non-bounceable)."""
    code = SdkCell.one_from_boc(COCOON_WALLET_CODE_BOC)
    data = (
        sdk_begin_cell()
        .store_uint(0, 32)
        .store_uint(0, 32)
        .store_bytes(sdk_public_key(seed))
        .store_uint(0, 32)
        .store_address(SdkAddress(owner.to_raw()))
        .end_cell()
    )
    state_init = (
        sdk_begin_cell()
        .store_uint(0, 2)
        .store_uint(3, 2)
        .store_ref(code)
        .store_ref(data)
        .store_uint(0, 1)
        .end_cell()
    )
    address = SdkAddress("0:" + state_init.bytes_hash().hex())
    return address.to_string(False), address.to_string(True, True, False)


def td_base64_accepts_32_bytes(text: str) -> bool:
    """Whether TON's ``td::base64_decode`` gives 32 bytes for ``text``, written from
    the rules of tdutils/td/utils/base64.cpp: standard alphabet, '=' padding to a
    multiple of 4, zero bits after the last byte. 32 bytes are 43 digits and one '='."""
    return (
        len(text) == 44
        and text[43] == "="
        and all(c in STANDARD_B64 for c in text[:43])
        and STANDARD_B64.index(text[42]) % 4 == 0
    )


def never_echoed(message: str, key_text: str) -> bool:
    """No 6-character run of the key text appears in the message."""
    return not any(key_text[i : i + 6] in message for i in range(max(1, len(key_text) - 5)))


# ------------------------------------------------------------------ the code


def test_the_shipped_code_is_the_hex_in_cocoons_source() -> None:
    source = COCOON / "runners/smartcontracts/CocoonWallet.cpp"
    if not source.exists():
        pytest.fail(f"COCOON's reference source is not at {COCOON}")
    match = re.search(
        r"code_str\(\) \{.*?boc_hex =\s*((?:\"[0-9a-f]+\"\s*)+);", source.read_text(), re.S
    )
    assert match is not None, "CocoonWallet::code_str() no longer holds a hex literal"
    assert bytes.fromhex("".join(re.findall(r"\"([0-9a-f]+)\"", match.group(1)))) == (
        COCOON_WALLET_CODE_BOC
    )


def test_the_pinned_code_hash_is_the_codes_hash_by_another_cell_library() -> None:
    # tonsdk computes the representation hash on its own; the design notes quote 7a48f05c.
    assert SdkCell.one_from_boc(COCOON_WALLET_CODE_BOC).bytes_hash().hex() == (
        COCOON_WALLET_CODE_HASH
    )
    assert COCOON_WALLET_CODE_HASH.startswith("7a48f05c")
    record = json.loads((CONTRACTS / "cocoon_wallet.code.json").read_text())
    assert record["code_hash"] == COCOON_WALLET_CODE_HASH
    shipped = (CONTRACTS / "cocoon_wallet.code.boc").read_bytes()
    assert record["boc_sha256"] == hashlib.sha256(shipped).hexdigest()


def test_the_codes_get_methods_are_exactly_seqno_public_key_and_owner() -> None:
    # The code starts SETCP0, DICTPUSHCONST 19, DICTIGETJMPZ: its first reference is
    # the method dictionary, keyed by 19-bit signed ids; get-methods have bit 16 set.
    root = cell_from_boc(COCOON_WALLET_CODE_BOC)
    assert root.begin_parse().load_bytes(6) == bytes.fromhex("ff00f4a413f4")
    methods = core().HashMap.parse(
        root.refs[0].begin_parse(), 19, key_deserializer=lambda bits: bits, value_deserializer=None
    )
    ids = {int(str(key), 2) for key in methods}
    getters = {i for i in ids if i >= 0x10000 and i < 2**18}
    assert getters == {
        method_id(GET_SEQNO),
        method_id(GET_PUBLIC_KEY),
        method_id(GET_OWNER_ADDRESS),
    }
    assert {0, 2**19 - 1} <= ids  # recv_internal and recv_external (-1)


# ------------------------------------------------------------------ the data, in the TVM

CONFIG = default_config_boc()


def get(data_boc: bytes, name: str) -> list[Any]:
    lib = core()
    out = run_get_method(
        code_boc=COCOON_WALLET_CODE_BOC,
        data_boc=data_boc,
        address=VECTOR_RAW,
        method_id=method_id(name),
        stack_boc=cell_to_boc(lib.VmStack.serialize([])),
        unixtime=NOW,
        balance=0,
        config_boc=CONFIG,
    )
    assert out.exit_code == 0, f"{name} exited {out.exit_code}"
    return list(lib.VmStack.deserialize(lib.Slice.one_from_boc(out.stack_boc)))


@settings(max_examples=15, deadline=None)
@given(seed=seeds, owner=owners)
def test_the_real_code_reads_seqno_public_key_and_owner_from_the_data_we_build(
    seed: bytes, owner: Address
) -> None:
    public_key = sdk_public_key(seed)
    data = node_wallet_data_boc(public_key, owner)
    assert get(data, GET_SEQNO) == [0]
    assert get(data, GET_PUBLIC_KEY) == [int.from_bytes(public_key, "big")]
    (owner_slice,) = get(data, GET_OWNER_ADDRESS)
    assert from_core_address(owner_slice.load_address()) == owner


def test_the_data_ends_with_the_owner_so_the_code_can_read_it_to_the_end() -> None:
    # recv_external reads the whole data and checks nothing is left (ENDS): the data
    # is exactly 32 + 32 + 256 + 32 + 267 bits, no references.
    data = cell_from_boc(node_wallet_data_boc(bytes(32), VECTOR_OWNER))
    assert len(data.bits) == 32 + 32 + 256 + 32 + 267 and not data.refs


# ------------------------------------------------------------------ deployed and used


def first_message(
    key: WalletKey,
    owner: Address | str,
    *,
    seqno: int = 0,
    subwallet: int = 0,
    signer: WalletKey | None = None,
    with_init: bool = True,
) -> bytes:
    """An external message in COCOON's request layout (CocoonWallet.cpp:123-125 and
    BaseRunner.cpp:932-946): signature, then subwallet, valid_until, seqno and
    (mode, ^message) pairs, the signature over the hash of the part after it."""
    lib = core()
    wallet = node_wallet_address(key.public_key, owner)
    out = internal_message_cell(Transfer(Address(0, b"\x22" * 32), nanoton(10**9), bounce=False))
    signed = (
        begin_cell()
        .store_uint(subwallet, 32)
        .store_uint(NOW + 3600, 32)
        .store_uint(seqno, 32)
        .store_uint(0, 8)
        .store_ref(out)
        .end_cell()
    )
    signature = (signer or key).sign(cell_hash(signed))
    body = begin_cell().store_bytes(signature).store_cell(signed).end_cell()
    init = None
    if with_init:
        state_init = node_wallet_state_init_boc(key.public_key, owner)
        init = lib.StateInit.deserialize(lib.Slice.one_from_boc(state_init))
    info = lib.ExternalMsgInfo(src=None, dest=to_core_address(wallet), import_fee=0)
    return cell_to_boc(lib.MessageAny(info=info, init=init, body=body).serialize())


def test_a_wallet_funded_at_the_derived_address_deploys_and_obeys_the_parsed_key() -> None:
    chain = LocalChain(clock=lambda: float(NOW))
    key = parse_node_wallet_key(VECTOR_KEY)
    wallet = node_wallet_address_of_key(VECTOR_KEY, VECTOR_OWNER)
    chain.mint(wallet, 2_500_000_000)  # non-bounceable: nothing is deployed there yet
    assert chain.account(wallet).status == "uninitialized"

    stranger = WalletKey(b"\x05" * 32)
    with pytest.raises(MessageRejected) as refused:
        chain.send_external(first_message(key, VECTOR_OWNER, signer=stranger))
    assert refused.value.exit_code == 1034  # signature does not match the stored key
    with pytest.raises(MessageRejected) as refused:
        chain.send_external(first_message(key, VECTOR_OWNER, subwallet=1))
    assert refused.value.exit_code == 1033  # subwallet is not the stored 0

    result = chain.send_external(first_message(key, VECTOR_OWNER))
    deployed, sent = result.transactions
    assert deployed.account == wallet and deployed.compute_exit_code == 0
    assert sent.account == Address(0, b"\x22" * 32) and sent.in_msg is not None
    assert sent.in_msg.source == wallet
    assert 990_000_000 < sent.in_msg.value <= 10**9  # mode 0: the forward fee comes off it
    view = chain.account(wallet)
    assert view.status == "active" and view.code_boc is not None
    assert cell_hash(cell_from_boc(view.code_boc)).hex() == COCOON_WALLET_CODE_HASH
    assert chain.run_get_method(wallet, GET_SEQNO)[2] == [1]
    with pytest.raises(MessageRejected) as refused:  # a replay is refused, nobody pays
        chain.send_external(first_message(key, VECTOR_OWNER, with_init=False))
    assert refused.value.exit_code == 1032


def test_the_contract_refuses_to_send_while_it_holds_less_than_2_ton() -> None:
    # COCOON's runner waits for 2.1 TON (BaseRunner.hpp:335-337), above this floor.
    chain = LocalChain(clock=lambda: float(NOW))
    key = parse_node_wallet_key(VECTOR_KEY)
    chain.mint(node_wallet_address_of_key(VECTOR_KEY, VECTOR_OWNER), 1_999_000_000)
    with pytest.raises(MessageRejected) as refused:
        chain.send_external(first_message(key, VECTOR_OWNER))
    assert refused.value.exit_code == 1035


# ------------------------------------------------------------------ the address


def test_the_fixed_key_and_owner_give_the_pinned_address_by_both_paths() -> None:
    key = parse_node_wallet_key(VECTOR_KEY)
    assert key.public_key.hex() == VECTOR_PUBLIC_KEY
    address = node_wallet_address(key.public_key, VECTOR_OWNER)
    assert address.to_raw() == VECTOR_RAW
    assert address.to_friendly(bounceable=False) == VECTOR_NON_BOUNCEABLE
    # The same vector by the independent path, so the pinned values are not just ours.
    assert sdk_address(bytes(range(32)), parse_address(VECTOR_OWNER).address) == (
        VECTOR_RAW,
        VECTOR_NON_BOUNCEABLE,
    )


@settings(max_examples=40, deadline=None)
@given(seed=seeds, owner=owners)
def test_the_address_agrees_with_tonsdk_and_pynacl(seed: bytes, owner: Address) -> None:
    key_text = base64.b64encode(seed).decode()
    ours = node_wallet_address_of_key(key_text, owner)
    assert (ours.to_raw(), ours.to_friendly(bounceable=False)) == sdk_address(seed, owner)


def test_the_owner_may_be_written_in_any_form() -> None:
    owner = parse_address(VECTOR_OWNER).address
    forms: list[Address | str] = [
        VECTOR_OWNER,
        owner,
        owner.to_friendly(),
        owner.to_friendly(bounceable=False),
    ]
    public_key = bytes.fromhex(VECTOR_PUBLIC_KEY)
    assert {node_wallet_address(public_key, form).to_raw() for form in forms} == {VECTOR_RAW}


def test_a_different_owner_or_key_gives_a_different_wallet() -> None:
    public_key = bytes.fromhex(VECTOR_PUBLIC_KEY)
    other_owner = node_wallet_address(public_key, "0:" + "ac" * 32)
    other_key = node_wallet_address(bytes(32), VECTOR_OWNER)
    assert len({VECTOR_RAW, other_owner.to_raw(), other_key.to_raw()}) == 3


def test_the_state_init_is_code_and_data_only() -> None:
    lib = core()
    boc = node_wallet_state_init_boc(bytes.fromhex(VECTOR_PUBLIC_KEY), VECTOR_OWNER)
    state_init = lib.StateInit.deserialize(lib.Slice.one_from_boc(boc))
    assert state_init.split_depth is None and state_init.special is None
    assert state_init.library is None
    assert cell_to_boc(state_init.code) == cell_to_boc(cell_from_boc(COCOON_WALLET_CODE_BOC))
    assert cell_hash(cell_from_boc(boc)).hex() == VECTOR_RAW.split(":")[1]


def test_a_bad_owner_or_public_key_is_refused() -> None:
    with pytest.raises(AddressError):
        node_wallet_address(bytes(32), "0:abc")
    with pytest.raises(AddressError):  # workchain 7: not basechain or masterchain
        node_wallet_address(bytes(32), "7:" + "ab" * 32)
    with pytest.raises(WalletError):
        node_wallet_address(bytes(31), VECTOR_OWNER)


# ------------------------------------------------------------------ the key text


def test_a_key_from_cocoons_own_launcher_is_accepted() -> None:
    key = parse_node_wallet_key(COCOON_EXAMPLE_KEY)
    assert key.public_key == sdk_public_key(base64.b64decode(COCOON_EXAMPLE_KEY))


@given(seed=seeds)
def test_any_32_bytes_in_standard_base64_are_accepted_and_give_nacls_public_key(
    seed: bytes,
) -> None:
    key = parse_node_wallet_key(base64.b64encode(seed).decode())
    assert key.public_key == sdk_public_key(seed)


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 48, 64])
def test_a_key_that_is_not_32_bytes_is_refused_without_echoing_it(size: int) -> None:
    text = base64.b64encode(bytes(range(100, 100 + size))).decode()
    with pytest.raises(NodeWalletKeyError) as refused:
        parse_node_wallet_key(text)
    assert never_echoed(str(refused.value), text) or not text


@pytest.mark.parametrize(
    ("spelling", "why"),
    [
        (VECTOR_KEY.rstrip("="), "missing padding"),
        (VECTOR_KEY + "=", "extra padding"),
        (VECTOR_KEY + "\n", "a newline"),
        (" " + VECTOR_KEY, "a leading space"),
        (VECTOR_KEY[:20] + " " + VECTOR_KEY[20:], "a space inside"),
        (base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "base64url"),
        (VECTOR_KEY[:42] + "9=", "non-zero bits after the 32nd byte"),
        (VECTOR_KEY[:10] + "=" + VECTOR_KEY[11:], "padding inside"),
        (bytes(range(32)).hex(), "hex instead of base64"),
    ],
)
def test_a_key_cocoon_would_refuse_is_refused_without_echoing_it(spelling: str, why: str) -> None:
    with pytest.raises(NodeWalletKeyError) as refused:
        parse_node_wallet_key(spelling)
    message = str(refused.value)
    assert message.startswith("node_wallet_key "), why
    assert never_echoed(message, spelling.strip()), why


def test_a_key_that_is_not_text_is_refused() -> None:
    with pytest.raises(NodeWalletKeyError, match="must be text"):
        parse_node_wallet_key(bytes(range(32)))  # type: ignore[arg-type]
    with pytest.raises(NodeWalletKeyError, match="empty"):
        parse_node_wallet_key("")


def near_keys() -> st.SearchStrategy[str]:
    """Valid keys with a few characters replaced, inserted or deleted."""
    alphabet = STANDARD_B64 + "=-_ \n\t.!"

    def mutate(seed: bytes, edits: list[tuple[int, int, str]]) -> str:
        text = base64.b64encode(seed).decode()
        for kind, where, char in edits:
            at = where % (len(text) + 1)
            if kind == 0:
                text = text[:at] + char + text[at + 1 :]
            elif kind == 1:
                text = text[:at] + char + text[at:]
            else:
                text = text[:at] + text[at + 1 :]
        return text

    edit = st.tuples(st.integers(0, 2), st.integers(0, 60), st.sampled_from(alphabet))
    return st.builds(mutate, seeds, st.lists(edit, max_size=3))


@settings(max_examples=400)
@given(text=near_keys())
def test_the_parser_accepts_exactly_what_tds_base64_decoder_turns_into_32_bytes(
    text: str,
) -> None:
    try:
        key = parse_node_wallet_key(text)
    except NodeWalletKeyError as exc:
        assert not td_base64_accepts_32_bytes(text)
        assert never_echoed(str(exc), text) or len(text) < 6
    else:
        assert td_base64_accepts_32_bytes(text)
        assert key.public_key == sdk_public_key(base64.b64decode(text))


def test_the_parsed_key_does_not_show_its_seed() -> None:
    key = parse_node_wallet_key(VECTOR_KEY)
    assert bytes(range(32)).hex() not in repr(key) and VECTOR_KEY not in repr(key)


# ------------------------------------------------------------------ the CLI


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ton", "node-wallet", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def key_file(tmp_path: Path, content: str | bytes) -> str:
    path = tmp_path / "node-wallet-key"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return str(path)


def assert_usage_error(code: int, out: str, err: str, flag: str) -> None:
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert f"{flag}:" in err and "Traceback" not in err


@pytest.mark.parametrize("written", [VECTOR_KEY, VECTOR_KEY + "\n", VECTOR_KEY + " \r\n\n"])
def test_the_address_of_a_key_file_is_printed_raw_and_non_bounceable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, written: str
) -> None:
    code, out, err = run(capsys, "--key-file", key_file(tmp_path, written), "--owner", VECTOR_OWNER)
    assert (code, err) == (0, "")
    assert out == f"raw: {VECTOR_RAW}\nnon-bounceable: {VECTOR_NON_BOUNCEABLE}\n"
    assert VECTOR_KEY not in out


def test_the_owner_may_be_user_friendly(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    owner = parse_address(VECTOR_OWNER).address.to_friendly(bounceable=False)
    code, out, _err = run(capsys, "--key-file", key_file(tmp_path, VECTOR_KEY), "--owner", owner)
    assert code == 0 and out.splitlines()[0] == f"raw: {VECTOR_RAW}"


def test_testnet_is_asked_for_or_follows_a_testnet_owner(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wallet = parse_address(VECTOR_RAW).address
    expected = f"non-bounceable: {wallet.to_friendly(bounceable=False, testnet=True)}"
    path = key_file(tmp_path, VECTOR_KEY)
    code, out, _err = run(capsys, "--key-file", path, "--owner", VECTOR_OWNER, "--testnet")
    assert code == 0 and out.splitlines()[1] == expected
    testnet_owner = parse_address(VECTOR_OWNER).address.to_friendly(testnet=True)
    code, out, _err = run(capsys, "--key-file", path, "--owner", testnet_owner)
    assert code == 0 and out.splitlines() == [f"raw: {VECTOR_RAW}", expected]


@pytest.mark.parametrize(
    "content",
    [
        VECTOR_KEY.rstrip("="),  # 43 characters
        base64.b64encode(bytes(range(7, 7 + 31))).decode(),  # 31 bytes
        base64.b64encode(bytes(range(7, 7 + 33))).decode(),  # 33 bytes
        base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # base64url
        VECTOR_KEY[:20] + "\n" + VECTOR_KEY[20:],  # broken over two lines
        bytes(range(32)).hex(),
        "",
    ],
)
def test_a_bad_key_file_is_one_line_naming_the_flag_and_never_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str
) -> None:
    code, out, err = run(capsys, "--key-file", key_file(tmp_path, content), "--owner", VECTOR_OWNER)
    assert_usage_error(code, out, err, "--key-file")
    for part in content.split():
        assert all(part[i : i + 6] not in err for i in range(max(1, len(part) - 5)))


def test_an_unreadable_or_odd_key_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "absent")
    code, out, err = run(capsys, "--key-file", missing, "--owner", VECTOR_OWNER)
    assert_usage_error(code, out, err, "--key-file")
    assert "No such file" in err
    code, out, err = run(capsys, "--key-file", str(tmp_path), "--owner", VECTOR_OWNER)
    assert_usage_error(code, out, err, "--key-file")
    secret_bytes = b"\xff\xfe" + bytes(range(32))
    code, out, err = run(
        capsys, "--key-file", key_file(tmp_path, secret_bytes), "--owner", VECTOR_OWNER
    )
    assert_usage_error(code, out, err, "--key-file")
    assert "UTF-8" in err
    code, out, err = run(
        capsys, "--key-file", key_file(tmp_path, VECTOR_KEY * 200), "--owner", VECTOR_OWNER
    )
    assert_usage_error(code, out, err, "--key-file")
    assert VECTOR_KEY not in err


@pytest.mark.parametrize(
    "owner", ["0:abc", "nope", "7:" + "ab" * 32, VECTOR_NON_BOUNCEABLE[:-1] + "A"]
)
def test_a_bad_owner_is_one_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, owner: str
) -> None:
    code, out, err = run(capsys, "--key-file", key_file(tmp_path, VECTOR_KEY), "--owner", owner)
    assert_usage_error(code, out, err, "--owner")
    assert VECTOR_KEY not in err


def test_the_installed_command_has_node_wallet_and_exits_2_without_a_traceback(
    tmp_path: Path,
) -> None:
    good = key_file(tmp_path, VECTOR_KEY + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cocoon_operator",
            "ton",
            "node-wallet",
            "--key-file",
            good,
            "--owner",
            VECTOR_OWNER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"raw: {VECTOR_RAW}\nnon-bounceable: {VECTOR_NON_BOUNCEABLE}\n"
    bad = tmp_path / "bad-key"
    bad.write_text(VECTOR_KEY[:-2] + "==\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cocoon_operator",
            "ton",
            "node-wallet",
            "--key-file",
            str(bad),
            "--owner",
            VECTOR_OWNER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--key-file:" in done.stderr
    assert "Traceback" not in done.stderr and VECTOR_KEY[:-2] not in done.stderr
