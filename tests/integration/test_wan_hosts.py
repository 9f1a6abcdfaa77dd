"""The WAN benchmark's network: namespaces joined by capped veth pairs, reached only through the delay
relay, and removed afterwards, also when the benchmark fails halfway."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._procs import free_port  # noqa: E402
from bench.netns import Hosts, leftovers  # noqa: E402
from bench.wan import relay  # noqa: E402

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"),
                                 reason="network namespaces need root and iproute2")]

ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("READY", flush=True)
c, _ = s.accept()
while data := c.recv(65536):
    c.sendall(data)
"""
PING = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(5):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(1); rtts.append(time.perf_counter() - t)
print(min(rtts))
"""


def _ours() -> list[str]:
    return [ns for ns in leftovers() if ns.startswith(f"tsrwan{os.getpid() % 100000}x")]


def test_hosts_talk_through_the_relay_with_its_delay_and_are_removed_afterwards():
    with Hosts(2, rate_mbit=100) as hosts:
        assert len(_ours()) == 2
        assert "tbf" in subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
        port, via = free_port(), free_port()
        echo = subprocess.Popen([*hosts.exec(1), sys.executable, "-c", ECHO, hosts.address(1), str(port)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert echo.stdout.readline().startswith("READY")
            # host 0 cannot reach host 1 directly: nothing is routed between hosts
            direct = subprocess.run([*hosts.exec(0), sys.executable, "-c", PING, hosts.address(1), str(port)],
                                    capture_output=True, text=True, timeout=30)
            assert direct.returncode != 0
            with relay([f"{hosts.gateway(0)}:{via}={hosts.address(1)}:{port}"], delay_ms=40, jitter_ms=0):
                t0 = time.perf_counter()
                out = subprocess.run([*hosts.exec(0), sys.executable, "-c", PING, hosts.gateway(0), str(via)],
                                     capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            rtt = float(out.stdout)
            assert 0.080 <= rtt < 0.080 + (time.perf_counter() - t0)  # 2 x 40 ms one way, at least
        finally:
            echo.kill()
            echo.wait(5)
    assert _ours() == []


def test_namespaces_are_removed_when_the_block_fails():
    with pytest.raises(RuntimeError, match="benchmark failed"):
        with Hosts(3):
            assert len(_ours()) == 3
            raise RuntimeError("benchmark failed halfway")
    assert _ours() == []
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert f"tw{os.getpid() % 100000}h" not in links  # the veth pairs went with their namespaces
