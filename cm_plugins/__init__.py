"""cm's built-in cloud kinds, registered through the same entry points as third-party plugins."""
