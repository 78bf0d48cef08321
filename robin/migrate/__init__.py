"""Moving data into robin-managed Ceph volumes: `robin migrate gluster` (command.py runs plan.py, copy.py,
verify.py, and cutover.py for Kubernetes volumes), a client of robin's API; the records it leaves in robin are
the server's (robin.migration_records)."""
