from __future__ import annotations

import pytest

from robin.auth.identity import Identity
from robin.auth.models import Role
from robin.errors import Forbidden

ADMIN = Identity("a", Role.ADMIN)
AUDITOR = Identity("b", Role.AUDITOR)
MEMBER = Identity("c", Role.MEMBER, project="blue")


@pytest.mark.parametrize("identity, project, read, write", [
    (ADMIN, "blue", True, True),
    (AUDITOR, "blue", True, False),
    (MEMBER, "blue", True, True),
    (MEMBER, "red", False, False),
])
def test_permissions(identity, project, read, write):
    assert identity.can_read(project) is read and identity.can_write(project) is write


def test_only_admins_administer():
    ADMIN.require_admin()
    for identity in (AUDITOR, MEMBER):
        with pytest.raises(Forbidden):
            identity.require_admin()
