"""Type stubs for the Rust extension module (checked with mypy.stubtest)."""

__all__ = ["core_version"]

def core_version() -> str: ...
