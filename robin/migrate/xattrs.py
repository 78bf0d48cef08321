"""Extended attributes and POSIX ACLs, as the copy and its verification read and write them.

What is copied: `user.*`, `trusted.*`, `security.*` and the two POSIX ACLs, which Linux shows as the xattrs
`system.posix_acl_access` and `system.posix_acl_default` (their raw values carry every entry, the mask included).
Other `system.*` names are the file system's own views (e.g. `system.nfs4_acl`), and names like `ceph.*` or
`glusterfs.*` are a file system's virtual attributes: neither is the workload's data.

robin marks the root of a CephFS volume it made with `user.robin.volume_id` (robin.ceph.cephfs_ops.OWNER_XATTR):
that name at a destination's root is robin's own, never copied over, removed or compared.
"""
from __future__ import annotations

import errno
import os
import struct

from robin.ceph.cephfs_ops import OWNER_XATTR

ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
ACLS = frozenset({ACL_ACCESS, ACL_DEFAULT})
COPIED_PREFIXES = ("user.", "trusted.", "security.")
# Names a destination may refuse without the copy failing: the refusal is reported per file (a security label
# the destination's LSM or privileges do not allow, a trusted.* name this host may not write).
REFUSABLE_PREFIXES = ("security.", "trusted.")
REFUSALS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EACCES, errno.EINVAL})
ROOT_ONLY_OURS = frozenset({OWNER_XATTR})  # at a destination's root: robin's own mark
NO_XATTRS = (errno.EOPNOTSUPP, errno.ENOTSUP)

Xattrs = dict[str, bytes]


def copied(name: str) -> bool:
    return name.startswith(COPIED_PREFIXES) or name in ACLS


def read(path: str, ignore: frozenset[str] = frozenset()) -> Xattrs:
    """The copied names of the entry at `path` (not followed if a symlink) and their values; a name removed
    between the listing and its read is left out, and a file system without xattrs has none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in NO_XATTRS:
            return {}
        raise
    found = {}
    for name in names:
        if not copied(name) or name in ignore:
            continue
        try:
            found[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
    return found


def apply(target: str | int, wanted: Xattrs, have: Xattrs | None) -> list[tuple[str, OSError]]:
    """Make the copied attributes of the entry at `target` (a path, not followed, or an open file) `wanted`: set
    what differs, remove what the source does not have.
    `have` is what the entry holds (None: unknown, e.g. a new file that may have inherited a default ACL, whose
    ACL names are then removed unless wanted). The refusals of names a destination may refuse, (name, error);
    any other failure raises."""
    unfollowed = {} if isinstance(target, int) else {"follow_symlinks": False}
    refused = []
    for name, value in wanted.items():
        if have is not None and have.get(name) == value:
            continue
        try:
            os.setxattr(target, name, value, **unfollowed)
        except OSError as exc:
            if name.startswith(REFUSABLE_PREFIXES) and exc.errno in REFUSALS:
                refused.append((name, exc))
                continue
            raise
    extra = set(have) - set(wanted) if have is not None else ACLS - set(wanted)
    for name in sorted(extra):
        try:
            os.removexattr(target, name, **unfollowed)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, *NO_XATTRS):
                raise
    return refused


def has_acl(xattrs: Xattrs) -> bool:
    return any(name in ACLS for name in xattrs)


ACL_TAGS = {0x01: "user:", 0x02: "user:{}", 0x04: "group:", 0x08: "group:{}", 0x10: "mask:", 0x20: "other:"}
ACL_HEADER = 4  # a version number (2), then 8-byte entries: tag (u16), permissions (u16), id (u32)


def acl_text(value: bytes) -> str:
    """A POSIX ACL's raw value as getfacl's short form: `user::rw-,user:33:rw-,group::r--,mask::rw-,other::---`."""
    parts = []
    for offset in range(ACL_HEADER, len(value) - 7, 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, offset)
        who = ACL_TAGS.get(tag, f"tag{tag}:").format(ident)
        parts.append(f"{who}:{'r' if perm & 4 else '-'}{'w' if perm & 2 else '-'}{'x' if perm & 1 else '-'}")
    return ",".join(parts)


def shown(name: str, value: bytes | None) -> str | None:
    """An attribute for a report: absent (None), an ACL in getfacl's words, text if printable, else hex."""
    if value is None:
        return None
    if name in ACLS:
        return f"{name}={acl_text(value)}"
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return f"{name}=0x{value.hex()}"
    return f"{name}={text}" if text.isprintable() else f"{name}=0x{value.hex()}"
