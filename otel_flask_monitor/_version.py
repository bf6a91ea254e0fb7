"""The package's version, in one place: pyproject.toml reads it from here (hatch), the code imports it."""

__version__ = "0.1.0"
