"""API tokens (stored hashed), roles and the identity of each request."""
