"""The registry of Ceph clusters robin manages; the default one comes from ROBIN_CEPH_CONF."""
