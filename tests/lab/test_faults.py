"""Fault injection: cut/heal (with quorum), bandwidth shaping, freezing a node."""

from __future__ import annotations

import json

from pverep.lab.control import Lab

SSH_FAST_FAIL = ["ssh", "-o", "ConnectTimeout=3"]


def test_cut_node_is_unreachable_and_loses_quorum_until_healed(lab: Lab) -> None:
    lab.cut("pve3")
    try:
        # bounded: ssh must give up on its own (ConnectTimeout), well before the timeout
        failed = lab.exec("pve1", [*SSH_FAST_FAIL, "pve3", "true"], timeout=20)
        assert failed.returncode == 255
        assert lab.exec("pve3", ["touch", "/etc/pve/cut-test"]).returncode != 0
        lab.exec("pve1", ["touch", "/etc/pve/cut-test"], check=True)
        lab.exec("pve1", ["rm", "/etc/pve/cut-test"], check=True)
        members = json.loads(lab.exec("pve3", ["cat", "/etc/pve/.members"], check=True).stdout)
        assert members["cluster"]["quorate"] == 0
        assert members["nodelist"]["pve1"]["online"] == 0
        assert "cut" in next(s for s in lab.status() if s.node == "pve3").flags
    finally:
        lab.heal("pve3")
    assert lab.exec("pve1", [*SSH_FAST_FAIL, "pve3", "hostname"], check=True).stdout == "pve3\n"
    lab.exec("pve3", ["touch", "/etc/pve/heal-test"], check=True)
    lab.exec("pve3", ["rm", "/etc/pve/heal-test"], check=True)


def test_two_of_three_cut_leaves_nobody_quorate(lab: Lab) -> None:
    lab.cut("pve2")
    lab.cut("pve3")
    try:
        for node in lab.nodes:
            assert lab.exec(node, ["touch", "/etc/pve/q-test"]).returncode != 0, node
    finally:
        lab.heal("pve2")
        lab.heal("pve3")
    lab.exec("pve1", ["touch", "/etc/pve/q-test"], check=True)
    lab.exec("pve1", ["rm", "/etc/pve/q-test"], check=True)


def test_shape_puts_tbf_on_both_ends(lab: Lab) -> None:
    lab.shape("pve2", "8mbit")
    try:
        inside = lab.exec("pve2", ["tc", "qdisc", "show", "dev", "eth0"], check=True).stdout
        assert "tbf" in inside and "8Mbit" in inside
        lab.exec(
            "pve1",
            ["sh", "-c", "head -c 300000 /dev/zero | ssh pve2 'cat > /dev/null'"],
            check=True,
        )
    finally:
        lab.shape("pve2", None)
    assert "tbf" not in lab.exec("pve2", ["tc", "qdisc", "show", "dev", "eth0"], check=True).stdout


def test_frozen_node_does_not_answer_until_thawed(lab: Lab) -> None:
    lab.freeze("pve2")
    try:
        hung = lab.exec("pve1", ["ssh", "-o", "ConnectTimeout=2", "pve2", "true"], timeout=20)
        assert hung.returncode == 255
        assert "timed out" in hung.stderr
    finally:
        lab.thaw("pve2")
    lab.exec("pve1", [*SSH_FAST_FAIL, "pve2", "true"], check=True)
