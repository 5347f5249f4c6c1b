"""Relocated guests: detect jobs whose guest moved (HA recovery, manual config move) and repair
them as explicit, observable steps (``pverep reconcile``, the hookscript, the HA watcher).

* ``model``    the inputs (a snapshot of the cluster as one node sees it) and the typed steps
* ``ha``       manager_status / the API's HA status parsing, recovery → started transitions (pure)
* ``planner``  view → plan (pure: strings in, steps out)
* ``orphans``  ``pverep cleanup``: orphaned replication snapshots/volumes on one node (pure)
* ``target``   the target-side verbs (read-only replica listing, validated clean-up)
* ``gather``   builds the view from the cluster files, the state file, zfs and the targets
* ``executor`` carries the steps out and records what was done
* ``journal``  the node-local record of repairs that ``pverep status`` reports
* ``clusterplan`` / ``clusterexec``  the cluster-wide pass through the API backend: the whole
  cluster's view → config-level steps (pure) / carried out and verified through the API;
  disk-level work is reported as deferred to the guest's node
"""
