"""Migration records: what `robin migrate gluster` moved into a project's volumes, step by step, as it reported it."""
