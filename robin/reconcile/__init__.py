"""Converging the database and Ceph after crashes, and reporting drift."""
