"""What robin's provisioner and its GlusterFS migration share of Kubernetes: the API client wrapper (`client`),
robin's StorageClasses (`classes`), what a claim asks for (`claims`) and the PersistentVolumes robin makes
(`volumes`)."""
