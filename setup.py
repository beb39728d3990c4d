"""Only for the cffi extension; all metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["stack/_fast_build.py:ffibuilder"])
