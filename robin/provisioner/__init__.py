"""The Kubernetes provisioner: `robin provisioner` turns PersistentVolumeClaims of robin's StorageClasses into
robin volumes (through robin's REST API, like any other client) and PersistentVolumes bound to them.
`runner` wires it; `controller` holds what it does to a claim or a volume."""
