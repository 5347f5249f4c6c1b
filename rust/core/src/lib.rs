//! pverep-core: the performance-critical parts of pverep, free of any Python dependency.
//!
//! The binding crate (`rust/py`) wraps these for Python as `pverep._core`.

/// Version of the engine crate, exposed to Python for diagnostics.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_set() {
        assert!(!super::VERSION.is_empty());
    }
}
