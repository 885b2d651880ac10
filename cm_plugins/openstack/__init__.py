"""The openstack cloud kind, through openstacksdk (imported only when an OpenStack cloud is used)."""


def register_providers(register):
    """Entry-point hook: the openstack provider."""
    register("openstack", "cm_plugins.openstack.provider:OpenStackProvider")


def register_clouds(register):
    """Entry-point hook: every cloud of the user's clouds.yaml is a cm cloud of the same name."""
    from cm_plugins.openstack.clouds import discovered_clouds

    register(discovered_clouds)
