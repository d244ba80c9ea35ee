"""Typed boundary around the ``pytoniq_core`` cell library.

``pytoniq_core`` is mostly unannotated, so it is imported dynamically as one
``Any`` module here and every other module of this package works with bytes
(BOCs), ints and :class:`~cocoon_operator.ton.address.Address` values, plus the
opaque :data:`Cell` alias for in-process cell objects.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeAlias

from .address import Address

_core: Any = importlib.import_module("pytoniq_core")

#: A ``pytoniq_core.Cell`` (opaque to the type checker).
Cell: TypeAlias = Any


def core() -> Any:
    """The ``pytoniq_core`` module, for the few places that build TL-B structures."""
    return _core


def begin_cell() -> Any:
    return _core.begin_cell()


def empty_cell() -> Cell:
    return _core.Cell.empty()


def cell_from_boc(boc: bytes) -> Cell:
    return _core.Cell.one_from_boc(boc)


def cell_to_boc(cell: Cell) -> bytes:
    data = cell.to_boc(hash_crc32=True)
    assert isinstance(data, bytes)
    return data


def cell_hash(cell: Cell) -> bytes:
    digest = cell.hash
    assert isinstance(digest, bytes)
    return digest


def boc_hash(boc: bytes) -> bytes:
    """Representation hash of the root cell of a BOC."""
    return cell_hash(cell_from_boc(boc))


def to_core_address(address: Address) -> Any:
    return _core.Address((address.workchain, address.account_id))


def from_core_address(value: Any) -> Address | None:
    """Convert a ``pytoniq_core`` internal address; ``None`` for addr_none / external."""
    if value is None or not isinstance(value, _core.Address):
        return None
    return Address(int(value.wc), bytes(value.hash_part))


def state_init_cell(code: Cell, data: Cell) -> Cell:
    return _core.StateInit(code=code, data=data).serialize()


def contract_address(code: Cell, data: Cell, workchain: int = 0) -> Address:
    """Address of a contract deployed with this code and data (hash of its StateInit)."""
    return Address(workchain, cell_hash(state_init_cell(code, data)))
