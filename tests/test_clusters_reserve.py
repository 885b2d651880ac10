"""Addresses reserved ahead of boot (one wave) on libvirt's test hypervisor: each node's address is a
DHCP host entry (MAC, IP, name) on the cloud's network and the MAC is on its VM; deleting a node
or the cluster leaves no entry; a cloud whose VMs are on no network launches without them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.test_clusters_local import local  # noqa: F401  (the fixture: the test hypervisor with an image)


def hypervisor(cm_home: Path, cloud: str = "local") -> ET.Element:
    """The test hypervisor's saved state (what `virsh dumpxml`/`net-dumpxml` would show)."""
    return ET.parse(cm_home / "kvm-test" / f"{cloud}.xml").getroot()


def dhcp_hosts(cm_home: Path) -> dict[str, tuple[str, str]]:
    """{name: (mac, ip)} of the DHCP host entries of the network 'default'."""
    net = next(n for n in hypervisor(cm_home).findall("network") if n.findtext("name") == "default")
    return {h.get("name"): (h.get("mac"), h.get("ip")) for h in net.findall("ip/dhcp/host")}


def vm_macs(cm_home: Path) -> dict[str, str]:
    return {d.findtext("name"): d.find("devices/interface/mac").get("address")
            for d in hypervisor(cm_home).findall("domain") if d.find("devices/interface/mac") is not None}


def test_every_node_gets_a_reserved_address_its_vm_carries_and_delete_releases_them_all(local, cm_home):
    cm = local
    assert "reserve_addresses" in cm("cloud", "show", "local", "-f", "json").out
    launched = cm("slurm", "-n", "2", "--name", "s1", "-f", "json")
    assert launched.code == 0, launched.err
    nodes = {n["name"]: n["address"] for n in json.loads(launched.out)}
    hosts = dhcp_hosts(cm_home)
    assert sorted(hosts) == ["s1-head", "s1-worker1", "s1-worker2"]
    assert {name: ip for name, (_, ip) in hosts.items()} == nodes  # the address cm rendered is the one reserved
    assert len(set(nodes.values())) == 3 and all(a.startswith("192.168.122.") for a in nodes.values())
    assert vm_macs(cm_home) == {name: mac for name, (mac, _) in hosts.items()}
    timeline = json.loads(cm("cluster", "timeline", "s1", "-f", "json").out)
    assert max(row["requested"] for row in timeline) < 1  # head and workers requested together: one wave

    grown = cm("cluster", "resize", "s1", "+1", "-f", "json")
    assert grown.code == 0, grown.err
    new = json.loads(grown.out)[-1]
    assert dhcp_hosts(cm_home)["s1-worker3"][1] == new["address"] not in nodes.values()

    assert cm("vm", "delete", "s1-worker3").code == 0  # a VM deleted by hand takes its entry along
    assert "s1-worker3" not in dhcp_hosts(cm_home)
    deleted = cm("cluster", "delete", "s1")
    assert deleted.code == 0, deleted.err
    assert dhcp_hosts(cm_home) == {}
    assert vm_macs(cm_home) == {}


def test_a_cloud_whose_vms_are_on_no_network_cannot_reserve_and_still_launches(local, cm_home):
    cm = local
    assert cm("cloud", "add", "bare", "--kind", "kvm", "uri=test:///default", "network=none").code == 0
    image = cm_home.parent / "cirros.qcow2"
    assert cm("image", "add", "cirros", str(image), "--cloud", "bare").code == 0
    launched = cm("slurm", "-n", "1", "--name", "s2", "--cloud", "bare", "--flavor", "small",
                  "--image", "cirros", "-f", "json")
    assert launched.code == 0, launched.err
    assert [n["state"] for n in json.loads(launched.out)] == ["running", "running"]
    assert "reserve" not in launched.err
    assert cm("cluster", "delete", "s2", "--cloud", "bare").code == 0


def test_a_deleted_nodes_address_is_renewed_with_its_mac_and_ip_and_refused_once_another_took_it(local, cm_home):
    """What the launcher does for a failed head that workers were given the address of: delete, renew, boot again."""
    import pytest

    from cm.errors import ProviderError
    from cm.provider import Reservation
    from cm_plugins.kvm.provider import KvmProvider

    cm = local
    assert cm("slurm", "-n", "1", "--name", "s1").code == 0
    mac, ip = dhcp_hosts(cm_home)["s1-head"]
    held = Reservation(name="s1-head", address=ip, network="default", mac=mac)
    provider = KvmProvider("local", {"uri": "test:///default", "pool": "default", "network": "default"})
    provider.state_dir = cm_home
    try:
        provider.delete_vm("s1-head")
        assert "s1-head" not in dhcp_hosts(cm_home)  # a deleted VM's entry goes with it
        provider.renew_addresses([held])
        provider.renew_addresses([held])  # already held: nothing to do
        assert dhcp_hosts(cm_home)["s1-head"] == (mac, ip)
        other = Reservation(name="s1-other", address=ip, network="default", mac="52:54:00:aa:bb:cc")
        with pytest.raises(ProviderError, match=rf"the address {ip} of s1-other was given to another entry "
                                                rf"\(s1-head {mac} {ip}\) meanwhile"):
            provider.renew_addresses([other])
    finally:
        provider.close()
    assert cm("cluster", "delete", "s1").code == 0
    assert dhcp_hosts(cm_home) == {}
