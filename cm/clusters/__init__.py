"""Virtual clusters: records in the mirror (kind "cluster"), launched from recipes (cm.recipes).

- :mod:`cm.clusters.model`     the record and its states, per-node phases and timeline;
- :mod:`cm.clusters.store`     clusters in the mirror, node VM tags, per-cluster secrets (0600 file);
- :mod:`cm.clusters.plan`      input checks before any VM boots, rendering each node's user-data;
- :mod:`cm.clusters.launch`    the engine: parallel boot, console readiness markers, replacement;
- :mod:`cm.clusters.teardown`  drain, resize down, delete everything a cluster made;
- :mod:`cm.clusters.service`   the public functions: launch, resize, delete, nodes, head_address, login;
- :mod:`cm.clusters.timeline`  phase tables, terminal chart, PNG.
"""
