"""Only here to generate the CSI shim's gRPC stubs from csi_shim/csi.proto at build and install time (editable
installs included); all metadata is in setup.cfg. The stubs are not committed: they are build output."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


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


setup(cmdclass={"build_py": BuildPyWithCsiStubs})
