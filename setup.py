"""Package discovery for the cellseg-gui distribution.

The repository keeps the fixed top-level folders ``app/``, ``core/``, ``trainer/`` and
``resources/``; they install as ``cellseg.app``, ``cellseg.core``, ... so no generic top-level
name is taken in site-packages. pyproject.toml cannot express "every sub-package of this folder,
renamed under a prefix", so this file computes the mapping; all other metadata is in pyproject.
"""
from setuptools import find_packages, setup

ROOTS = {"app": "cellseg.app", "core": "cellseg.core", "trainer": "cellseg.trainer",
         "resources": "cellseg.resources"}

packages, package_dir = [], {}
for folder, name in ROOTS.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
