"""The kvm cloud kind: local or remote libvirt (imported lazily: listing kinds never loads libvirt)."""


def register_providers(register):
    """Entry-point hook: the kvm provider."""
    register("kvm", "cm_plugins.kvm.provider:KvmProvider")
