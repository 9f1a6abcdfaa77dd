"""Chain fixtures shared by integration tests.

* ``anvil_devnet``: one anvil (native binary) per session on a free 127.0.0.1 port, always
  stopped (a :class:`chain.devnet.Devnet`: ``rpc_url``, ``ws_url``, ``pid``, ``port``).
* ``anvil``: its HTTP RPC URL (str).
* ``anvil_w3``: a Web3 connected to it.
* ``deployed``: fresh contracts on that anvil for each test, as a TesseraChain for dev account 0.
* ``embedded_deployed``: the same on an in-process py-evm chain, once per module (slow chain).
* ``nodes_3x3``: 9 registered nodes over a 30-block model "m" and the matching 3x3 Plan
  (helpers in :mod:`chain.testing`).
"""

from __future__ import annotations

import pytest
from web3 import Web3

from chain import devnet
from chain.testing import deploy_fresh, setup_3x3


@pytest.fixture(scope="session")
def anvil_devnet(tmp_path_factory):
    net = devnet.start_anvil(log_file=tmp_path_factory.mktemp("anvil") / "anvil.log")
    try:
        yield net
    finally:
        devnet.stop_anvil(net)


@pytest.fixture(scope="session")
def anvil(anvil_devnet) -> str:
    return anvil_devnet.rpc_url


@pytest.fixture(scope="session")
def anvil_w3(anvil) -> Web3:
    return Web3(Web3.HTTPProvider(anvil))


@pytest.fixture
def deployed(anvil, anvil_w3):
    """Fresh contracts; the deployment records the anvil URL (save_deployment() it for CLI use)."""
    return deploy_fresh(anvil_w3, anvil)


@pytest.fixture(scope="module")
def embedded_deployed():
    return deploy_fresh(devnet.embedded_web3())


@pytest.fixture
def nodes_3x3(deployed):
    return setup_3x3(deployed)
