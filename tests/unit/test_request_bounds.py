"""Bounds on request bodies and resource values (issue 12, finding 6)."""

import argparse

import pytest

from stowd.api.params import MAX_JSON_DEPTH, parse_json
from stowd.cli import _size
from stowd.engine.errors import InvalidParameter
from stowd.engine.resources import check_resources


def test_json_depth_limit() -> None:
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_json(ok) is not None
    for depth in (MAX_JSON_DEPTH + 1, 990, 5000):
        with pytest.raises(InvalidParameter, match="nested too deep"):
            parse_json(b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("raw", [b'{"A": 18446744073709551616}', b'{"A": -9223372036854775809}',
                                 b'{"A": [1e999]}', b'{"A": NaN}', b'{"A": Infinity}'])
def test_json_numbers_out_of_range(raw: bytes) -> None:
    with pytest.raises(InvalidParameter, match=r"out of range|not a JSON number"):
        parse_json(raw)


def test_json_numbers_in_range() -> None:
    doc = parse_json(b'{"A": 18446744073709551615, "B": -9223372036854775808, "C": 1.5}')
    assert doc["A"] == 2**64 - 1


def test_resources() -> None:
    check_resources({"Memory": 1 << 30, "MemorySwap": -1, "CpuShares": 512,
                     "MemorySwappiness": -1, "OomScoreAdj": -1000, "PidsLimit": -1}, 2)
    with pytest.raises(InvalidParameter, match="out of range"):
        check_resources({"Memory": 1 << 63}, 2)
    with pytest.raises(InvalidParameter, match="not an integer"):
        check_resources({"Memory": "1g"}, 2)
    with pytest.raises(InvalidParameter, match="not an integer"):
        check_resources({"Memory": True}, 2)
    with pytest.raises(InvalidParameter, match="Memory limit when using Memoryswap"):
        check_resources({"MemorySwap": 1 << 30}, 2)
    check_resources({"MemorySwap": 1 << 30}, 2, update=True)


def test_size_flag() -> None:
    assert _size("64m") == 64 << 20
    assert _size("1048576") == 1 << 20
    assert _size("2g") == 2 << 30

    for bad in ("0", "x", "12q", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            _size(bad)
