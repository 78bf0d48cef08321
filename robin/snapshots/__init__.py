"""Snapshots of RBD images and CephFS paths, rollback and clones."""
