"""The cloud-init NoCloud seed of a VM: meta-data, user-data, vendor-data and network-config on a small
ISO labelled ``cidata``.

The user's user-data reaches the guest byte for byte (a launcher's rendered
template, a script, a MIME multipart, a jinja template alike); cm's own
cloud-config (hostname, the login user with the key) then goes in
vendor-data, with a ``merge_how`` that makes cloud-init add its lists (users,
ssh_authorized_keys) to the user's and keep the user's other keys.  Without
user-data, cm's cloud-config is the user-data.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import yaml

from cm.errors import UsageError

# How cloud-init merges cm's vendor-data into the user's cloud-config: lists joined, the user's keys kept.
VENDOR_MERGE = "list(append)+dict(no_replace,recurse_list)+str()"


@dataclass
class Seed:
    """The files of a NoCloud seed ("" = left out)."""

    meta_data: str
    user_data: str
    vendor_data: str = ""
    network_config: str = ""


def meta_data(instance_id: str, hostname: str) -> str:
    return f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"


def base_config(hostname: str, user: str, public_key: str) -> dict[str, Any]:
    """cm's own cloud-config: the hostname and a default user who logs in with the user's key."""
    config: dict[str, Any] = {"hostname": hostname, "preserve_hostname": False, "ssh_pwauth": False}
    account: dict[str, Any] = {"name": user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                               "groups": ["adm"], "lock_passwd": True}
    if public_key:
        account["ssh_authorized_keys"] = [public_key]
        config["ssh_authorized_keys"] = [public_key]  # also for the image's own default user
    config["users"] = ["default", account] if user else ["default"]
    return config


def _parse_cloud_config(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UsageError(f"user-data is not valid YAML{where}; fix the file given with --user-data") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError("user-data: a #cloud-config must be a mapping of keys")
    return data


def cloud_config_text(config: dict[str, Any]) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: a tenth of the time, per VM booted
    return "#cloud-config\n" + yaml.dump(config, Dumper=dumper, sort_keys=False, default_flow_style=False)


MARKERS = ("#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler", "#upstart-job",
           "## template: jinja", "Content-Type: multipart", "MIME-Version:")


def check_user_data(text: str) -> None:
    """Refuse user-data cloud-init would ignore or choke on (a cloud-config must be a YAML mapping)."""
    first = text.lstrip().split("\n", 1)[0]
    if not first.startswith(MARKERS):
        raise UsageError("user-data must start with #cloud-config, #!, #include or another cloud-init marker")
    if first.startswith("#cloud-config"):
        _parse_cloud_config(text)


def check_network_config(text: str) -> None:
    """A NoCloud network-config is a YAML mapping (version 1 or 2)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError("network-config is not valid YAML; fix the file given with --network-config") from exc
    network = data.get("network", data) if isinstance(data, dict) else None
    if not isinstance(network, dict) or network.get("version") not in (1, 2):
        raise UsageError("network-config must be a YAML mapping with version: 1 or 2")


def user_data(hostname: str, user: str, public_key: str) -> str:
    """cm's own cloud-config: the user-data of a VM booted without --user-data."""
    return cloud_config_text(base_config(hostname, user, public_key))


def nocloud(instance_id: str, hostname: str, user: str, public_key: str, extra: str = "",
            network_config: str = "") -> Seed:
    """The seed of a VM: the user's user-data unchanged, cm's settings beside it as vendor-data."""
    meta = meta_data(instance_id, hostname)
    if network_config:
        check_network_config(network_config)
    if not extra.strip():
        return Seed(meta, user_data(hostname, user, public_key), network_config=network_config)
    check_user_data(extra)
    vendor = {**base_config(hostname, user, public_key), "merge_how": VENDOR_MERGE}
    return Seed(meta, extra, cloud_config_text(vendor), network_config)


@functools.lru_cache(maxsize=64)
def _iso_size(sizes: tuple[int, ...]) -> int:
    return len(iso_bytes(Seed(*("x" * size for size in sizes))))


def iso_size(files: Seed) -> int:
    """The size of the seed ISO iso_bytes() would make (it depends only on the files' sizes)."""
    texts = (files.meta_data, files.user_data, files.vendor_data, files.network_config)
    return _iso_size(tuple(len(text.encode()) for text in texts))


def iso_bytes(seed: Seed) -> bytes:
    """A NoCloud seed ISO (label cidata; ISO 9660 with Rock Ridge and Joliet long names)."""
    import pycdlib  # imported here: only boots need it

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="cidata", joliet=3, rock_ridge="1.09")
    files = (("METADATA.;1", "meta-data", seed.meta_data), ("USERDATA.;1", "user-data", seed.user_data),
             ("VENDORDA.;1", "vendor-data", seed.vendor_data), ("NETWORKC.;1", "network-config", seed.network_config))
    for short, long_name, text in files:
        if not text and long_name not in ("meta-data", "user-data"):
            continue
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), "/" + short, rr_name=long_name, joliet_path="/" + long_name)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
