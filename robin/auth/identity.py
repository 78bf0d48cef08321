"""Who is making this request, and what they may do."""
from __future__ import annotations

from dataclasses import dataclass

from robin.auth.models import Role
from robin.errors import Forbidden


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role
    project: str | None = None
    token_id: int | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}" if self.token_id else self.name

    @property
    def sees_all_projects(self) -> bool:
        return self.role in (Role.ADMIN, Role.AUDITOR)

    def can_read(self, project: str) -> bool:
        return self.sees_all_projects or self.project == project

    def can_write(self, project: str) -> bool:
        return self.role is Role.ADMIN or (self.role is Role.MEMBER and self.project == project)

    def require_read(self, project: str) -> None:
        if not self.can_read(project):
            raise Forbidden(f"this token may not read project {project!r}", details={"project": project})

    def require_write(self, project: str) -> None:
        if not self.can_write(project):
            verb = "is read-only" if self.role is Role.AUDITOR else f"may not change project {project!r}"
            raise Forbidden(f"this token {verb}", details={"project": project, "role": self.role.value})

    def require_metrics(self) -> None:
        """/metrics names every project with its quota and usage: for those who see every project anyway."""
        if not (self.sees_all_projects or self.role is Role.METRICS):
            raise Forbidden("the metrics name every project: they need an admin, auditor or metrics token "
                            "(robin token create --role metrics)", details={"role": self.role.value})

    def require_node_credentials(self) -> None:
        """A volume's cephx key opens its file system's data pool to RADOS: for the hosts that mount, never tenants."""
        if self.role not in (Role.ADMIN, Role.NODE):
            raise Forbidden("a volume's Ceph credentials are for the hosts that mount it: they need an admin or node "
                            "token (robin token create --role node)", details={"role": self.role.value})

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise Forbidden("this needs an admin token", details={"role": self.role.value})


# The identity of robin's own command line (token creation, migrations): it has a shell on the host.
LOCAL_ADMIN = Identity(name="robin-cli", role=Role.ADMIN)
