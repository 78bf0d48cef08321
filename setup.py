"""What the wheel holds, where pyproject.toml cannot say it: the packages, with the top-level migrations/ mapped
into robin as robin._migrations (Alembic's scripts travel with the code that needs them), and the CSI shim's gRPC
stubs generated from csi_shim/csi.proto at build and install time (editable installs included); they are build
output, not committed. All metadata is in pyproject.toml."""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
# Installed, the migrations are robin/_migrations, beside the code that reads them (robin.db.MIGRATIONS_DIR); a
# checkout, editable install or not, reads its own migrations/.
MIGRATIONS = {"robin._migrations": "migrations", "robin._migrations.versions": "migrations/versions"}


def generate_csi_stubs() -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")  # google/protobuf/*.proto
    # Paths relative to the repository root, so the stubs import each other as csi_shim.csi_pb2.
    status = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"-I{well_known}", f"--python_out={HERE}",
                          f"--pyi_out={HERE}", f"--grpc_python_out={HERE}", os.path.join(HERE, "csi_shim", "csi.proto")])
    if status != 0:
        raise RuntimeError(f"protoc failed on csi_shim/csi.proto (exit {status})")


class BuildPyWithCsiStubs(build_py):
    def run(self):
        generate_csi_stubs()
        super().run()


setup(
    packages=find_packages(include=["robin", "robin.*", "csi_shim", "csi_shim.*"]) + list(MIGRATIONS),
    package_dir=MIGRATIONS,
    cmdclass={"build_py": BuildPyWithCsiStubs},
)
