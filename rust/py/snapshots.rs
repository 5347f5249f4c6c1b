//! `SnapshotInfo`, the `zfs list`/`zfs get` parsers and the table comparison.
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use pverep_core::diff::compare_tables;
use pverep_core::snapshots::{self, Snapshot, SnapshotTable};

use crate::errors::detached;

/// One snapshot of one dataset, as `zfs list -Hp -o name,guid,createtxg,creation` shows it.
#[pyclass(frozen, eq, hash, module = "pverep._core")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SnapshotInfo {
    pub dataset: String,
    pub snap: Snapshot,
}

#[pymethods]
impl SnapshotInfo {
    #[new]
    #[pyo3(signature = (dataset, name, guid, createtxg, creation))]
    fn new(dataset: String, name: String, guid: u64, createtxg: u64, creation: i64) -> Self {
        SnapshotInfo {
            dataset,
            snap: Snapshot {
                name,
                guid,
                createtxg,
                creation,
            },
        }
    }

    #[getter]
    fn dataset(&self) -> &str {
        &self.dataset
    }

    #[getter]
    fn name(&self) -> &str {
        &self.snap.name
    }

    #[getter]
    fn guid(&self) -> u64 {
        self.snap.guid
    }

    #[getter]
    fn createtxg(&self) -> u64 {
        self.snap.createtxg
    }

    #[getter]
    fn creation(&self) -> i64 {
        self.snap.creation
    }

    /// `<dataset>@<name>`
    #[getter]
    fn full_name(&self) -> String {
        format!("{}@{}", self.dataset, self.snap.name)
    }

    fn __repr__(&self) -> String {
        format!(
            "SnapshotInfo(dataset={:?}, name={:?}, guid={}, createtxg={}, creation={})",
            self.dataset, self.snap.name, self.snap.guid, self.snap.createtxg, self.snap.creation
        )
    }
}

/// Borrow the bytes of a `bytes` or `str` argument (no copy).
pub fn text_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes());
    }
    Err(PyTypeError::new_err(format!(
        "expected bytes or str, got {}",
        obj.get_type().name()?
    )))
}

fn table_to_dict<'py>(py: Python<'py>, table: &SnapshotTable) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (i, dataset) in table.dataset_names().enumerate() {
        let list = PyList::empty(py);
        for s in table.snapshots(i) {
            list.append(SnapshotInfo {
                dataset: dataset.to_owned(),
                snap: s.to_snapshot(),
            })?;
        }
        out.set_item(dataset, list)?;
    }
    Ok(out)
}

/// Parse `zfs list -Hp -o name,guid,createtxg,creation -t snapshot` output.
#[pyfunction]
pub fn parse_snapshot_list<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let bytes = text_bytes(data)?;
    let table = detached(py, || SnapshotTable::parse(bytes))?;
    table_to_dict(py, &table)
}

/// Parse `zfs get -Hp -o name,property,value` output: name -> property -> value.
#[pyfunction]
pub fn parse_zfs_get<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let bytes = text_bytes(data)?;
    let parsed = detached(py, || snapshots::parse_zfs_get(bytes))?;
    let out = PyDict::new(py);
    for (name, props) in parsed {
        let d = PyDict::new(py);
        for (p, v) in props {
            d.set_item(p, v)?;
        }
        out.set_item(name, d)?;
    }
    Ok(out)
}

/// A parsed listing kept on the Rust side: no Python object per snapshot until asked for.
#[pyclass(frozen, name = "SnapshotTable", module = "pverep._core")]
pub struct SnapshotTableObj {
    table: Arc<SnapshotTable>,
}

#[pymethods]
impl SnapshotTableObj {
    #[new]
    fn new(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bytes = text_bytes(data)?;
        let table = detached(py, || SnapshotTable::parse(bytes))?;
        Ok(SnapshotTableObj {
            table: Arc::new(table),
        })
    }

    /// Parse a listing read from `fd` until EOF (e.g. `zfs list`'s stdout pipe) with the GIL
    /// released, without holding the whole text in memory. The fd is not closed.
    #[staticmethod]
    fn from_fd(py: Python<'_>, fd: i32) -> PyResult<Self> {
        if fd < 0 {
            return Err(crate::errors::invalid_argument(
                py,
                format!("fd must be a non-negative file descriptor, got {fd}"),
            ));
        }
        let result = py.detach(|| {
            // SAFETY: the caller owns fd and keeps it open for this call; ManuallyDrop keeps
            // the File from closing it.
            let mut file = std::mem::ManuallyDrop::new(unsafe {
                <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
            });
            // A regular file says how big it is; a pipe does not (then the table grows).
            let hint = file
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map_or(0, |m| usize::try_from(m.len()).unwrap_or(0));
            SnapshotTable::parse_reader(&mut *file, hint)
        });
        let table = result
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("reading fd {fd}: {e}")))?
            .map_err(|e| crate::errors::to_py(py, e))?;
        Ok(SnapshotTableObj {
            table: Arc::new(table),
        })
    }

    /// Number of snapshots.
    fn __len__(&self) -> usize {
        self.table.len()
    }

    /// Dataset names in order of first appearance.
    fn datasets(&self) -> Vec<&str> {
        self.table.dataset_names().collect()
    }

    fn __contains__(&self, dataset: &str) -> bool {
        self.table.find_dataset(dataset).is_some()
    }

    /// The snapshots of one dataset in input order (empty if the dataset is unknown).
    fn snapshots(&self, dataset: &str) -> Vec<SnapshotInfo> {
        match self.table.find_dataset(dataset) {
            None => Vec::new(),
            Some(i) => self
                .table
                .snapshots(i)
                .map(|s| SnapshotInfo {
                    dataset: dataset.to_owned(),
                    snap: s.to_snapshot(),
                })
                .collect(),
        }
    }

    /// Everything as `parse_snapshot_list` returns it.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        table_to_dict(py, &self.table)
    }

    /// Compare with another listing (e.g. the target's), dataset by dataset.
    fn compare(&self, py: Python<'_>, remote: &Self) -> PyResult<Vec<DatasetComparison>> {
        let (l, r) = (Arc::clone(&self.table), Arc::clone(&remote.table));
        detached(py, move || {
            Ok(compare_tables(&l, &r)
                .into_iter()
                .map(|c| DatasetComparison {
                    dataset: c.dataset.to_owned(),
                    common: c.common,
                    only_local: c.only_local.into_iter().map(str::to_owned).collect(),
                    only_remote: c.only_remote.into_iter().map(str::to_owned).collect(),
                    diverged: c.diverged.into_iter().map(str::to_owned).collect(),
                    newest_common: c.newest_common.map(str::to_owned),
                })
                .collect())
        })
    }
}

/// How one dataset's snapshots compare between two listings.
#[pyclass(frozen, get_all, module = "pverep._core")]
pub struct DatasetComparison {
    dataset: String,
    common: usize,
    only_local: Vec<String>,
    only_remote: Vec<String>,
    diverged: Vec<String>,
    newest_common: Option<String>,
}

#[pymethods]
impl DatasetComparison {
    fn __repr__(&self) -> String {
        format!(
            "DatasetComparison(dataset={:?}, common={}, only_local={}, only_remote={}, diverged={}, newest_common={})",
            self.dataset,
            self.common,
            self.only_local.len(),
            self.only_remote.len(),
            self.diverged.len(),
            match &self.newest_common {
                Some(n) => format!("{n:?}"),
                None => "None".to_owned(),
            }
        )
    }
}
