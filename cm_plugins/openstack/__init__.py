"""The openstack cloud kind, through openstacksdk (imported only when an OpenStack cloud is used)."""


def register_providers(register):
    """Entry-point hook: the openstack provider."""
    register("openstack", "cm_plugins.openstack.provider:OpenStackProvider")
