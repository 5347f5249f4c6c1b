//! Binding layer only: conversions, GIL release and error mapping for `pverep._core`.
//! The engine itself lives in the pyo3-free crate `pverep-core` (rust/core).
use pyo3::prelude::*;

mod diff;
mod errors;
mod pump;
mod snapshots;

/// The version of the Rust engine compiled into this extension.
#[pyfunction]
fn core_version() -> &'static str {
    pverep_core::VERSION
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    m.add_class::<snapshots::SnapshotInfo>()?;
    m.add_class::<snapshots::SnapshotTableObj>()?;
    m.add_class::<snapshots::DatasetComparison>()?;
    m.add_function(wrap_pyfunction!(snapshots::parse_snapshot_list, m)?)?;
    m.add_function(wrap_pyfunction!(snapshots::parse_zfs_get, m)?)?;
    m.add_class::<diff::PreparePlan>()?;
    m.add_class::<diff::BaseSelection>()?;
    m.add_function(wrap_pyfunction!(diff::plan_prepare, m)?)?;
    m.add_function(wrap_pyfunction!(diff::select_bases, m)?)?;
    m.add_class::<pump::PumpStats>()?;
    m.add_class::<pump::Pump>()?;
    m.add_class::<pump::Budget>()?;
    m.add_function(wrap_pyfunction!(pump::pump, m)?)?;
    Ok(())
}
