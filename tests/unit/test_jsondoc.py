"""JSON from outside: a document nested too deep is a ValueError like any other bad one."""

from __future__ import annotations

import pytest

from cocoon_operator import jsondoc


def test_a_document_reads_as_json_loads_reads_it() -> None:
    assert jsondoc.loads('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert jsondoc.loads(b"[true]") == [True]


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_a_document_nested_deeper_than_the_parser_recurses_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        jsondoc.loads(text)


def test_malformed_json_stays_the_decoder_s_own_error() -> None:
    with pytest.raises(ValueError, match="Expecting"):
        jsondoc.loads('{"a":')
