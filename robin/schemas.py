"""Schema pieces shared by every resource: strict integers, names, pages."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from robin.config import BIGINT_MAX
from robin.pagination import DEFAULT_LIMIT

# Patterns end in \Z, not $: `$` also matches before a final newline, and "abc\n" is not "abc".
# DNS-1123 label: what a Kubernetes namespace may be called, so every namespace can be a project.
PROJECT_NAME = validate.Regexp(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z",
                               error="must be 1-63 lowercase letters, digits or '-', starting and ending "
                                     "with a letter or digit")
# Stricter than Ceph (which forbids only '/' and '@'): safe in shells, URLs and PV names.
CEPH_NAME = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z",
                            error="must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")


# What the database's Integer columns (counts) hold; BigInteger ones (bytes) hold BIGINT_MAX. A larger
# value is a 422 here rather than an "integer out of range" (a 500) from PostgreSQL.
INTEGER_MAX = 2**31 - 1


def byte_count(*, minimum: int = 0, **kwargs) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=minimum, max=BIGINT_MAX), **kwargs)


def count(**kwargs) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=INTEGER_MAX), **kwargs)


class PageArgs(Schema):
    limit = fields.Integer(strict=False, load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None)


class PageSchema(Schema):
    next_cursor = fields.String(allow_none=True)
