"""Moving data into robin-managed Ceph volumes: `robin migrate gluster` (command.py runs plan.py, copy.py,
verify.py, and cutover.py for Kubernetes volumes) and the migration records it leaves in robin (api.py)."""
