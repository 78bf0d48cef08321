"""Projects (tenants) and their quotas."""
