"""Only the extension modules live here; all metadata is in pyproject.toml."""

import os

from setuptools import Extension, setup

if os.environ.get("ROOMER_NO_EXTENSIONS") == "1":
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("roomer._codec", ["roomer/_codec.pyx"]),
            Extension("roomer._fanout", ["roomer/_fanout.pyx"]),
        ],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )

setup(ext_modules=ext_modules)
