"""A local, stateful server speaking enough of Keystone v3, Nova v2.1 (up to
microversion 2.79 by default), Glance v2 and Neutron v2.0 for the real,
unpatched openstacksdk to drive a whole VM workflow over HTTP.
Standard library only; state in memory behind one lock.

    from tests.osapi import start_server
    fake = start_server(0, build_delay=0.2)        # 0 = ephemeral port
    fake.write_clouds_yaml(path, "fake")           # then OS_CLIENT_CONFIG_FILE=path
    conn = openstack.connect(cloud="fake")         # user demo / password secret
    ...
    fake.stop()

Control surface of ``FakeOpenStack`` (all thread-safe, effective at once):
  url / auth_url, base_url, port, stop(), reset(), clouds_yaml(name),
  cloud_entry(), write_clouds_yaml(path, name)
  set_build_delay(s), set_create_delay(s), set_action_delay(s)
  inject_fault(method, path_regex, status=500, count=1, message=None)
  drop_connection(method, path_regex, count=1), inject_latency(s, method, path_regex)
  clear_faults(), fail_next_boot(message, code=500, count=1, name=''), corrupt_next_upload(count=1)
  set_quota(instances=.., cores=.., ram=.., key_pairs=.., floatingip=.., security_group=..)
  add_server_directly(name, flavor=, image=, network=, status=) -> id
  add_keypair_directly(name, public_key), expire_tokens()
  add_network_directly(name, cidr, first=, last=) -> id, fixed_addresses(server_id)
  server(id) / servers() (internal records incl. user_data),
  request_log, request_count(method, path_regex), clear_request_log()

Seeded cloud: flavors m1.tiny/small/medium/large (ids 1-4); images
cirros-0.6.2-x86_64-disk, ubuntu-22.04, debian-12; networks "private"
(10.0.0.0/24, routed) and external "public" (172.24.4.0/24); router1;
security group "default"; Nova quota 10 instances / 20 cores / 51200 MB.

Run standalone with ``python -m tests.osapi --port 5000 --build-delay 2``.
"""

from .server import (DEFAULT_BOOT_FAULT, DEMO_PASSWORD, DEMO_PROJECT, DEMO_USER,
                     PROJECT_ID, USER_ID, FakeOpenStack, cloud_entry, clouds_yaml,
                     start_server)

__all__ = ["FakeOpenStack", "start_server", "clouds_yaml", "cloud_entry", "DEMO_USER",
           "DEMO_PASSWORD", "DEMO_PROJECT", "PROJECT_ID", "USER_ID", "DEFAULT_BOOT_FAULT"]
