"""Audit events: every mutating request, who made it and how it ended."""
