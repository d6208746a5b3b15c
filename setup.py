"""Only the extension modules live here; all metadata is in pyproject.toml."""

import os

from setuptools import Extension, setup

if os.environ.get("ROOMER_NO_EXTENSIONS") == "1":
    ext_modules = []
else:
    import picows
    from Cython.Build import cythonize

    # _fanout compiles picows' struct layouts in; it refuses to import beside another
    # picows version than this one (roomer.errors.ExtensionMismatch).
    picows_version = ("ROOMER_PICOWS_VERSION", '"%s"' % picows.__version__)
    ext_modules = cythonize(
        [
            Extension("roomer._codec", ["roomer/_codec.pyx"]),
            Extension("roomer._fanout", ["roomer/_fanout.pyx"], define_macros=[picows_version]),
        ],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )

setup(ext_modules=ext_modules)
