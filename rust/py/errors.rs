//! The exception hierarchy of `pverep._core` and the one mapping from the engine's error enum.
//!
//! PverepError is the root of every pverep exception (python/pverep/errors.py re-exports it and
//! derives its own classes from it); CoreError is the root of everything raised from Rust.
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use pverep_core::Error;

create_exception!(
    pverep._core,
    PverepError,
    PyException,
    "Root of all expected pverep errors; str(err) is the one-line user-facing message."
);
create_exception!(
    pverep._core,
    CoreError,
    PverepError,
    "Base of the errors raised by the Rust core."
);
create_exception!(
    pverep._core,
    SnapshotParseError,
    CoreError,
    "Malformed `zfs list`/`zfs get` output; the message names the 1-based line."
);
create_exception!(
    pverep._core,
    PumpError,
    CoreError,
    "I/O failure in the pump; .side is 'read' or 'write', .errno the OS error number (if any)."
);
create_exception!(
    pverep._core,
    StallError,
    PumpError,
    "No progress for stall_timeout seconds; .side is 'read' or 'write'."
);
create_exception!(
    pverep._core,
    CancelledError,
    PumpError,
    "The pump was cancelled (cancel() or Ctrl-C)."
);

static INVALID_ARGUMENT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `InvalidArgumentError(CoreError, ValueError)`: a bad value passed to the core. It is also a
/// ValueError so generic callers can catch it the Python way; pyo3 can only derive a new
/// exception from one base, so this one is built with `type()`.
pub fn invalid_argument_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    INVALID_ARGUMENT
        .get_or_try_init(py, || {
            let bases = (py.get_type::<CoreError>(), py.get_type::<PyValueError>());
            let ns = PyDict::new(py);
            ns.set_item("__module__", "pverep._core")?;
            ns.set_item(
                "__doc__",
                "A value passed to the core is invalid (negative rate, closed fd, ...).",
            )?;
            let ty = py
                .get_type::<PyType>()
                .call1(("InvalidArgumentError", bases, ns))?;
            Ok::<_, PyErr>(ty.cast_into::<PyType>()?.unbind())
        })
        .map(|t| t.bind(py))
}

pub fn invalid_argument(py: Python<'_>, message: impl Into<String>) -> PyErr {
    match invalid_argument_type(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), message.into()),
        Err(e) => e,
    }
}

/// The one mapping from the engine's error enum to Python exceptions.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::Parse { .. } => SnapshotParseError::new_err(message),
        Error::InvalidArgument(_) => invalid_argument(py, message),
        Error::Io { side, source } => {
            let e = set_side(py, &PumpError::new_err(message), side);
            // Callers tell "the receiver closed its pipe" (EPIPE) from real I/O errors by it.
            match e.value(py).setattr("errno", source.raw_os_error()) {
                Ok(()) => e,
                Err(err) => err,
            }
        }
        Error::Stalled { side, .. } => {
            let e = StallError::new_err(message);
            set_side(py, &e, side)
        }
        Error::Cancelled => CancelledError::new_err(message),
    }
}

fn set_side(py: Python<'_>, err: &PyErr, side: pverep_core::Side) -> PyErr {
    match err.value(py).setattr("side", side.as_str()) {
        Ok(()) => err.clone_ref(py),
        Err(e) => e,
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PverepError", py.get_type::<PverepError>())?;
    m.add("CoreError", py.get_type::<CoreError>())?;
    m.add("SnapshotParseError", py.get_type::<SnapshotParseError>())?;
    m.add("PumpError", py.get_type::<PumpError>())?;
    m.add("StallError", py.get_type::<StallError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("InvalidArgumentError", invalid_argument_type(py)?)?;
    // Class-level defaults so the attribute exists on every instance (and for stubtest);
    // instances raised by the pump overwrite them.
    py.get_type::<PumpError>().setattr("side", py.None())?;
    py.get_type::<PumpError>().setattr("errno", py.None())?;
    Ok(())
}

/// Run `f` with the GIL released and map its error: the one "leave Python" helper for every
/// long call into the engine.
pub fn detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: Send + FnOnce() -> pverep_core::Result<T>,
    T: Send,
{
    py.detach(f).map_err(|e| to_py(py, e))
}
