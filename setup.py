"""Build the Cython extensions in ``ext/`` into ``fastfeed._ext.*``.

All compiler directives live in ``DIRECTIVES``.  Environment switches:
``FASTFEED_ANNOTATE=1`` writes Cython's HTML annotation next to each ``.pyx``;
``FASTFEED_DEBUG=1`` builds with bounds checks on and -O0 -g;
``FASTFEED_EXTS=engine,decode`` builds only the named extensions (development).

Every ``ext/*.pxd`` is installed next to the compiled modules (``fastfeed/_ext/``), so
that a user's Cython code can ``cimport`` them.
"""
import glob
import os
import shutil

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

DEBUG = os.environ.get("FASTFEED_DEBUG") == "1"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "nonecheck": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "freethreading_compatible": False,
}

CFLAGS = ["-O0", "-g"] if DEBUG else ["-O3"]
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def ext(name: str) -> Extension:
    return Extension(
        f"fastfeed._ext.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=[numpy.get_include(), "ext"],
        define_macros=MACROS,
        extra_compile_args=CFLAGS,
        depends=sorted(glob.glob("ext/*.h")),     # C headers included by the .pyx
    )


NAMES = ["engine", "decode", "listener", "simencode", "seconds", "shm"]
ONLY = [n for n in os.environ.get("FASTFEED_EXTS", "").split(",") if n]

class build_py_with_pxd(build_py):
    """``build_py`` that also copies ``ext/*.pxd`` into the package's ``_ext`` directory."""

    def run(self) -> None:
        super().run()
        dest = os.path.join(self.build_lib, "fastfeed", "_ext")
        os.makedirs(dest, exist_ok=True)
        for pxd in sorted(glob.glob(os.path.join("ext", "*.pxd"))):
            shutil.copy2(pxd, dest)


setup(
    cmdclass={"build_py": build_py_with_pxd},
    ext_modules=cythonize(
        [ext(n) for n in NAMES if not ONLY or n in ONLY],
        compiler_directives=DIRECTIVES,
        # ".": a module's own .pxd is found by its qualified name (fastfeed/_ext/engine.pxd)
        include_path=["ext", "."],
        annotate=os.environ.get("FASTFEED_ANNOTATE") == "1",
    ),
)
