//! pverep-core: the performance-critical parts of pverep, free of any Python dependency.
//!
//! * [`snapshots`]: parse `zfs list`/`zfs get` output;
//! * [`diff`]: pvesr's prepare/base-selection decisions and table comparison;
//! * [`ratelimit`] and [`pump`]: the rate-limited fd-to-fd data pump;
//! * [`budget`]: one bandwidth budget shared by the pumps running at once.
//!
//! The binding crate (`rust/py`) wraps these for Python as `pverep._core`.
pub mod budget;
pub mod diff;
pub mod error;
pub mod pump;
pub mod ratelimit;
pub mod snapshots;

pub use error::{Error, Result, Side};

/// Version of the engine crate, exposed to Python for diagnostics.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_set() {
        assert!(!super::VERSION.is_empty());
    }
}
