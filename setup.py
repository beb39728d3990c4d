"""Only for the cffi extension; all metadata lives in pyproject.toml.

The C data plane is optional: where it cannot be built (no C compiler, no OpenSSL headers)
the install goes on without it, and uinet-tap runs its pure-Python path, saying so once at
run time (``uinet-tap --version`` names the path that runs)."""

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):  # type: ignore[misc]
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # the compiler's error class depends on the platform
            self._skip(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    @staticmethod
    def _skip(exc: Exception) -> None:
        print(
            f"warning: the C data plane was not built ({exc}); uinet-tap will run its "
            "pure-Python path",
            file=sys.stderr,
        )


setup(cffi_modules=["stack/_fast_build.py:ffibuilder"], cmdclass={"build_ext": OptionalBuildExt})
