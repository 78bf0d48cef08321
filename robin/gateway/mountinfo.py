"""What is mounted where, read from the kernel (/proc/self/mountinfo), never remembered.

os.path.ismount compares device numbers, so it misses a bind mount within one file system; the mount
table does not.
"""
from __future__ import annotations

import re

MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mount_points() -> set[str]:
    with open(MOUNTINFO) as table:
        return {_unescape(line.split()[4]) for line in table}


def is_mount_point(path: str) -> bool:
    return path in mount_points()
