"""The package version (one place: the root package and the benchmarks' machine info read it)."""

__version__ = "0.1.0"
