"""Install the Functions Python worker library for the runtime harness (tests/functions_host).

``azure-functions-runtime`` is the library the Functions host's Python worker runs. It
declares Python >= 3.13 but imports and runs on 3.11, so it goes into a folder of its own
(``--no-deps --ignore-requires-python --target``), never into the app's requirements. The host's
gRPC message classes (FunctionRpc) ship only inside ``azure-functions-runtime-v1``'s wheel,
under a top-level ``tests`` package that would clash with ours: they are copied into
``functionrpc_protos``. Everything comes from PyPI, pinned exactly.

    python -m devtools.install_functions_runtime .runtime
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

RUNTIME = "azure-functions-runtime==1.3.0"
PROTOS_FROM = "azure-functions-runtime-v1==1.2.0"
PROTOS_PACKAGE = "functionrpc_protos"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]


def install(target: Path) -> Path:
    """Install both into ``target/lib`` and return that folder (put it on sys.path)."""
    lib = target / "lib"
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    subprocess.run(
        [*PIP, "install", "--no-deps", "--ignore-requires-python", "--target", str(lib), RUNTIME],
        check=True,
    )
    with tempfile.TemporaryDirectory() as download:
        fetch = ["download", "--no-deps", "--ignore-requires-python", f"--dest={download}"]
        subprocess.run([*PIP, *fetch, PROTOS_FROM], check=True)
        (wheel,) = Path(download).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("tests/protos/") and name.endswith(".py"):
                    destination = lib / PROTOS_PACKAGE / name.removeprefix("tests/protos/")
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(archive.read(name))
    if not (lib / PROTOS_PACKAGE / "FunctionRpc_pb2.py").exists():
        raise SystemExit(f"{PROTOS_FROM} did not contain tests/protos/FunctionRpc_pb2.py")
    return lib


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".runtime")
    print(f"installing {RUNTIME} and the FunctionRpc protos of {PROTOS_FROM} into {folder}/lib")
    install(folder)
