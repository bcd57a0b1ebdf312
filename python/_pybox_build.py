"""The build backend of `pip install ./python`: setuptools' own, run on a copy of this directory
in a temporary one, so that building leaves nothing in the source tree (setuptools writes
build/ and pybox.egg-info/ where it builds, and pip builds in place). Editable installs build
in place, as they must: they point at the source tree.

pyproject.toml names it (build-backend, backend-path); it is not part of the installed
packages."""
import contextlib
import os
import shutil
import tempfile

from setuptools import build_meta as _setuptools

# What a build of this directory makes, and what is never worth copying.
_IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.pyc")


@contextlib.contextmanager
def _in_a_copy():
    src = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="pybox-build-") as tmp:
        copy = os.path.join(tmp, "src")
        shutil.copytree(src, copy, ignore=_IGNORE)
        os.chdir(copy)
        try:
            yield
        finally:
            os.chdir(src)


def _abs(path):
    return None if path is None else os.path.abspath(path)


def get_requires_for_build_wheel(config_settings=None):
    with _in_a_copy():
        return _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    with _in_a_copy():
        return _setuptools.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    metadata_directory = _abs(metadata_directory)
    with _in_a_copy():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel_directory, metadata_directory = _abs(wheel_directory), _abs(metadata_directory)
    with _in_a_copy():
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    sdist_directory = _abs(sdist_directory)
    with _in_a_copy():
        return _setuptools.build_sdist(sdist_directory, config_settings)


# Editable installs: in place.
if hasattr(_setuptools, "build_editable"):
    get_requires_for_build_editable = _setuptools.get_requires_for_build_editable
    prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
    build_editable = _setuptools.build_editable
