"""See inside the VMs cm manages: collect, store, show, and understand their resource use.

- :mod:`cm.monitoring.procfs`     counters from /proc text (the local host, guests over ssh);
- :mod:`cm.monitoring.sample`     two readings of counters -> one sample of rates;
- :mod:`cm.monitoring.store`      the SQLite (WAL) time-series store under the user directory;
- :mod:`cm.monitoring.sources`    where readings come from: the cloud's hypervisor, ssh, this host;
- :mod:`cm.monitoring.collector`  the background process that samples every interval;
- :mod:`cm.monitoring.daemon`     starting, stopping and inspecting that process;
- :mod:`cm.monitoring.targets`    which VMs a command means (a cluster, hostlists, a cloud's VMs);
- :mod:`cm.monitoring.dashboard`  the terminal dashboard (sparklines) and the PNG (matplotlib);
- :mod:`cm.monitoring.export`     samples as CSV or Parquet;
- :mod:`cm.monitoring.runs`       runs: time windows on nodes, Slurm jobs (sacct/sstat) joined to samples;
- :mod:`cm.monitoring.features`   a run described by its resource-usage features;
- :mod:`cm.monitoring.profiles`   workload profiles learnt with scikit-learn, and a run's deviation from them;
- :mod:`cm.monitoring.bottleneck` the resource a run is bound by, and whether the VM or its host;
- :mod:`cm.monitoring.tuning`     the change a bottleneck calls for, and making it on a kvm VM.
"""
