"""IPAM auxiliary addresses (engine/network/ipam.py): reserved, checked as dockerd does."""

import pytest

from stowd.engine.errors import Conflict, Forbidden, InvalidParameter
from stowd.engine.network import ipam


def test_aux_addresses_are_never_given_out() -> None:
    pool = ipam.Pool.of("10.231.0.0/24", aux={"a": "10.231.0.2", "b": "10.231.0.3"})
    assert str(pool.allocate()) == "10.231.0.4"
    with pytest.raises(Conflict, match=r"Address already in use: 10\.231\.0\.3"):
        pool.allocate("10.231.0.3")


def test_aux_addresses_checked() -> None:
    with pytest.raises(Forbidden, match=r"auxiliary address: \(a:10.232.0.2\) must belong to "
                                        r"the master pool: 10.231.0.0/24"):
        ipam.Pool.of("10.231.0.0/24", aux={"a": "10.232.0.2"})
    with pytest.raises(InvalidParameter, match="invalid auxiliary address a"):
        ipam.Pool.of("10.231.0.0/24", aux={"a": "zz"})
    with pytest.raises(InvalidParameter):
        ipam.Pool.of("10.231.0.0/24", aux=["10.231.0.2"])  # type: ignore[arg-type]
