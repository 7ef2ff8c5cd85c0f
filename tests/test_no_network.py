"""The pack never touches the network: not at import, not while loading, not while running."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_comfy_nodes import _graph, _scene

ROOT = Path(__file__).resolve().parents[1]

BLOCK = """
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network access is blocked in this test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""


def test_pbe_core_needs_no_network(tmp_path):
    code = BLOCK + f"""
import torch, pbe_core, pbe_core.testing
path = pbe_core.testing.make_random_checkpoint({str(tmp_path / 'm.safetensors')!r})
encoder = pbe_core.read_checkpoint(path).build_encoder()
print(tuple(encoder(pbe_core.prepare_references(torch.rand(1, 30, 30, 3))).shape), len(attempts))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "0" and "(1, 1, 768)" in result.stdout


@pytest.fixture
def blocked_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is blocked in this test")

    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                        (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, refuse)
    return attempts


def test_main_graph_runs_with_sockets_blocked(comfy, blocked_network):
    source, mask, reference = _scene(comfy, seed=5)
    graph = _graph(source, mask, reference, steps=2, seed=11)
    graph["6"]["inputs"]["steps"] = 2
    out = comfy.run(graph, ["6"])
    assert out["6"][0].shape == (1, 64, 96, 3)
    assert blocked_network == [], f"network access was attempted: {blocked_network}"
