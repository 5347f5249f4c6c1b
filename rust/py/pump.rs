//! `Pump` / `pump()`: the engine's data pump with the GIL released, Ctrl-C and progress
//! callbacks served from the pump's tick hook.
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use pverep_core::budget::Budget as CoreBudget;
use pverep_core::pump::{self as core_pump, PumpConfig};
use pverep_core::Error;

use crate::errors::{invalid_argument, to_py, CancelledError};

/// A snapshot of a pump's progress counters.
#[pyclass(frozen, get_all, module = "pverep._core")]
#[derive(Clone, Copy)]
pub struct PumpStats {
    /// Bytes delivered to the destination.
    bytes: u64,
    /// Seconds since the pump started (frozen when it ends).
    elapsed: f64,
    /// Current bytes/s (last tick) while running; the average over the run once done.
    rate: f64,
}

impl From<core_pump::Stats> for PumpStats {
    fn from(s: core_pump::Stats) -> Self {
        PumpStats {
            bytes: s.bytes,
            elapsed: s.elapsed.as_secs_f64(),
            rate: s.rate,
        }
    }
}

#[pymethods]
impl PumpStats {
    fn __repr__(&self) -> String {
        format!(
            "PumpStats(bytes={}, elapsed={:.3}, rate={:.0})",
            self.bytes, self.elapsed, self.rate
        )
    }
}

/// A bandwidth budget shared by every pump it is given to, on any thread.
#[pyclass(frozen, module = "pverep._core")]
pub struct Budget {
    inner: Arc<CoreBudget>,
}

#[pymethods]
impl Budget {
    #[new]
    fn new(py: Python<'_>, rate: f64) -> PyResult<Self> {
        let inner = CoreBudget::new(rate).map_err(|e| to_py(py, e))?;
        Ok(Budget {
            inner: Arc::new(inner),
        })
    }

    /// Bytes per second.
    #[getter]
    fn rate(&self) -> f64 {
        self.inner.rate()
    }

    /// Change the rate; running pumps follow at their next step.
    fn set_rate(&self, py: Python<'_>, rate: f64) -> PyResult<()> {
        self.inner.set_rate(rate).map_err(|e| to_py(py, e))
    }

    /// Bytes moved under this budget so far.
    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.bytes()
    }

    fn __repr__(&self) -> String {
        format!("Budget(rate={:.0})", self.inner.rate())
    }
}

fn seconds(py: Python<'_>, what: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => Err(invalid_argument(
            py,
            format!("{what} must be a positive number of seconds, got {v}"),
        )),
    }
}

fn config(
    py: Python<'_>,
    rate: Option<f64>,
    burst: Option<i64>,
    stall_timeout: Option<f64>,
    pipe_size: Option<i64>,
    budget: Option<&Budget>,
) -> PyResult<PumpConfig> {
    let burst = burst
        .map(|b| {
            u64::try_from(b).ok().filter(|b| *b > 0).ok_or_else(|| {
                invalid_argument(py, format!("burst must be at least 1 byte, got {b}"))
            })
        })
        .transpose()?;
    let pipe_size = match pipe_size {
        None => core_pump::DEFAULT_PIPE_SIZE,
        Some(p) => usize::try_from(p)
            .map_err(|_| invalid_argument(py, format!("pipe_size must be >= 0, got {p}")))?,
    };
    Ok(PumpConfig {
        rate,
        burst,
        stall_timeout: seconds(py, "stall_timeout", stall_timeout)?,
        pipe_size,
        budget: budget.map(|b| Arc::clone(&b.inner)),
        ..PumpConfig::default()
    })
}

/// Run `pump` with the GIL released. Every tick the hook takes the GIL briefly to let Python
/// handle signals (Ctrl-C cancels) and, if given, to call `progress`; an exception from either
/// cancels the pump and becomes the __cause__ of the CancelledError (or is re-raised as is for
/// a progress callback).
fn run_detached(
    py: Python<'_>,
    pump: &core_pump::Pump,
    progress: Option<(&Bound<'_, PyAny>, Duration)>,
) -> PyResult<PumpStats> {
    let callback = progress.map(|(f, every)| (f.clone().unbind(), every));
    let mut interrupt: Option<PyErr> = None;
    let mut callback_error: Option<PyErr> = None;
    let mut last_call = std::time::Instant::now();
    let result = py.detach(|| {
        pump.run(&mut |stats| {
            Python::attach(|py| {
                if let Err(e) = py.check_signals() {
                    interrupt = Some(e);
                    return false;
                }
                if let Some((f, every)) = &callback {
                    if last_call.elapsed() >= *every {
                        last_call = std::time::Instant::now();
                        if let Err(e) = f.bind(py).call1((PumpStats::from(*stats),)) {
                            callback_error = Some(e);
                            return false;
                        }
                    }
                }
                true
            })
        })
    });
    match result {
        Ok(stats) => Ok(stats.into()),
        Err(Error::Cancelled) if callback_error.is_some() => {
            Err(callback_error.unwrap_or_else(|| CancelledError::new_err("pump cancelled")))
        }
        Err(Error::Cancelled) if interrupt.is_some() => {
            let err = CancelledError::new_err("pump cancelled (interrupted)");
            err.set_cause(py, interrupt);
            Err(err)
        }
        Err(e) => Err(to_py(py, e)),
    }
}

/// Copy `src_fd` to `dst_fd` until EOF (see the stub for the full contract).
#[pyclass(frozen, module = "pverep._core")]
pub struct Pump {
    inner: core_pump::Pump,
}

#[pymethods]
impl Pump {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (src_fd, dst_fd, *, rate=None, burst=None, stall_timeout=None, pipe_size=None, budget=None))]
    fn new(
        py: Python<'_>,
        src_fd: i32,
        dst_fd: i32,
        rate: Option<f64>,
        burst: Option<i64>,
        stall_timeout: Option<f64>,
        pipe_size: Option<i64>,
        budget: Option<PyRef<'_, Budget>>,
    ) -> PyResult<Self> {
        let config = config(py, rate, burst, stall_timeout, pipe_size, budget.as_deref())?;
        let inner = core_pump::Pump::new(src_fd, dst_fd, config).map_err(|e| to_py(py, e))?;
        Ok(Pump { inner })
    }

    /// Copy until EOF with the GIL released; Ctrl-C cancels. A pump runs once.
    fn run(&self, py: Python<'_>) -> PyResult<PumpStats> {
        run_detached(py, &self.inner, None)
    }

    /// The progress counters; safe to call from another thread while run() runs.
    fn stats(&self) -> PumpStats {
        self.inner.stats().into()
    }

    /// Make run() stop with CancelledError (from any thread).
    fn cancel(&self) {
        self.inner.cancel();
    }
}

#[pyfunction]
#[pyo3(signature = (src_fd, dst_fd, *, rate=None, burst=None, stall_timeout=None, pipe_size=None, budget=None, progress=None, progress_interval=1.0))]
#[allow(clippy::too_many_arguments)]
pub fn pump(
    py: Python<'_>,
    src_fd: i32,
    dst_fd: i32,
    rate: Option<f64>,
    burst: Option<i64>,
    stall_timeout: Option<f64>,
    pipe_size: Option<i64>,
    budget: Option<PyRef<'_, Budget>>,
    progress: Option<&Bound<'_, PyAny>>,
    progress_interval: f64,
) -> PyResult<PumpStats> {
    let mut config = config(py, rate, burst, stall_timeout, pipe_size, budget.as_deref())?;
    let every = seconds(py, "progress_interval", Some(progress_interval))?
        .unwrap_or(core_pump::DEFAULT_TICK);
    if progress.is_some() {
        config.tick = config.tick.min(every);
    }
    let inner = core_pump::Pump::new(src_fd, dst_fd, config).map_err(|e| to_py(py, e))?;
    run_detached(py, &inner, progress.map(|f| (f, every)))
}
