//! Binding layer only: conversions, GIL release and error mapping for `pverep._core`.
use pyo3::prelude::*;

/// The version of the Rust engine compiled into this extension.
#[pyfunction]
fn core_version() -> &'static str {
    pverep_core::VERSION
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    Ok(())
}
