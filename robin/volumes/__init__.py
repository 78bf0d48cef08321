"""RBD images (and, later, CephFS paths) owned by projects, and their lifecycle states."""
