"""Builds the optional compiled module, ``happyhashtags._speedups``; pyproject.toml has the rest.

`optional=True`: where no C compiler is present the install still succeeds, and the package
uses the pure-Python twins of the compiled classes (same behaviour, slower, more memory).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "happyhashtags._speedups",
                ["src/happyhashtags/_speedups.pyx"],
                extra_compile_args=["-O2"],
                optional=True,
            )
        ],
        language_level=3,
    )
)
