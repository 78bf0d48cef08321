"""The suite's `integration` marker (tests/conftest.py): `-m "not integration"` selects no test that starts the Ceph
cluster or needs root and mounts, GlusterFS or podman. Checked on the suite's own collection."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
COLLECT_TIMEOUT_S = 300
# Where tests of each kind live: Ceph through robin (api, ui), Ceph itself (integration), root and mounts (csi),
# GlusterFS (migrate), podman (image), and the database alone (api, db, ui).
COLLECTED = ("tests/api", "tests/db", "tests/ui", "tests/csi", "tests/migrate", "tests/image",
             "tests/integration/test_snapshots.py")

# Loaded into the collecting pytest: prints what the selection holds, and each selected test that needs the machine.
REPORTER = '''
def pytest_collection_finish(session):
    print(f"SELECTED {len(session.items)}")
    for item in session.items:
        if "ceph_conf" in item.fixturenames or item.nodeid.startswith(("tests/csi/", "tests/migrate/", "tests/image/")):
            print(f"NEEDS THE MACHINE {item.nodeid}")
'''


def collected(tmp_path: Path, *args: str) -> str:
    (tmp_path / "selection_reporter.py").write_text(REPORTER)
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--db=all", "-p", "no:cacheprovider",
                           "-p", "selection_reporter", *args, *COLLECTED], cwd=REPOSITORY, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=COLLECT_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_not_integration_selects_no_test_that_needs_ceph_root_or_mounts(tmp_path):
    marked = collected(tmp_path, "-m", "integration")
    for needs in ("tests/api/", "tests/csi/", "tests/migrate/", "tests/image/", "tests/integration/"):
        assert f"NEEDS THE MACHINE {needs}" in marked, needs
    selected = collected(tmp_path, "-m", "not integration")
    assert "NEEDS THE MACHINE" not in selected, [line for line in selected.splitlines() if "NEEDS" in line]
    assert "tests/api/test_projects.py::" in selected and "tests/db/test_migrations.py::" in selected
