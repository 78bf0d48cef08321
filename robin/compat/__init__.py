"""APIs in the shape of clients robin does not control, whose contract is fixed elsewhere.

Each is a thin layer over robin's own services, so quotas, states and audit events stay one thing.
"""
