"""Developer tooling: a throwaway single-node Ceph cluster for local runs, tests and benchmarks."""
