"""The package version (a leaf module: the engine and export read it without importing the public API)."""

__version__ = "0.1.0"
