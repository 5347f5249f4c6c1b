//! pvesr's prepare() and base selection as Python functions returning plain data.
use std::collections::HashSet;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use pverep_core::diff::{BaseChoice, BaseRule, Prepare, RemoteSnapshots};
use pverep_core::snapshots::SnapshotRef;

use crate::errors::invalid_argument;
use crate::snapshots::SnapshotInfo;

/// prepare() (spec §4.3) as data: what stays, what to delete, which volumes to warn about.
#[pyclass(frozen, get_all, module = "pverep._core")]
pub struct PreparePlan {
    /// volid -> snapshot name -> SnapshotInfo that stays (prepare's result); every volid.
    keep: Py<PyDict>,
    /// volid -> names of stale snapshots to delete, input order; every volid (maybe empty).
    stale: Py<PyDict>,
    /// volids for which to log `expected snapshot <keep_name> not present for <volid>, ...`.
    missing_keep: Py<PyList>,
    /// `__replicate_<jobid>_<last_sync>__`, or None without a jobid.
    keep_name: Option<String>,
}

fn check_last_sync(py: Python<'_>, last_sync: i64) -> PyResult<u64> {
    u64::try_from(last_sync)
        .map_err(|_| invalid_argument(py, format!("last_sync must be >= 0, got {last_sync}")))
}

/// `(key, value)` pairs of any Mapping.
fn items<'py>(
    mapping: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    mapping
        .call_method0("items")?
        .try_iter()?
        .map(|item| item?.extract())
        .collect()
}

#[pyfunction]
#[pyo3(signature = (snapshots, jobid, last_sync, parent_snapname=None))]
pub fn plan_prepare(
    py: Python<'_>,
    snapshots: &Bound<'_, PyAny>,
    jobid: Option<&str>,
    last_sync: i64,
    parent_snapname: Option<&str>,
) -> PyResult<PreparePlan> {
    let rule = Prepare::new(jobid, check_last_sync(py, last_sync)?, parent_snapname);
    let keep = PyDict::new(py);
    let stale = PyDict::new(py);
    let missing_keep = PyList::empty(py);
    for (volid, seq) in items(snapshots)? {
        let volid = volid.cast_into::<PyString>()?;
        let snaps: Vec<Bound<'_, SnapshotInfo>> = seq
            .try_iter()?
            .map(|s| Ok(s?.cast_into::<SnapshotInfo>()?))
            .collect::<PyResult<_>>()?;
        let names: Vec<&str> = snaps.iter().map(|s| s.get().snap.name.as_str()).collect();
        let plan = rule.plan_volume(&names);
        let kept = PyDict::new(py);
        for &i in &plan.keep {
            kept.set_item(names[i], &snaps[i])?;
        }
        let removed = PyList::new(py, plan.stale.iter().map(|&i| names[i]))?;
        keep.set_item(&volid, kept)?;
        stale.set_item(&volid, removed)?;
        if plan.missing_keep {
            missing_keep.append(&volid)?;
        }
    }
    Ok(PreparePlan {
        keep: keep.unbind(),
        stale: stale.unbind(),
        missing_keep: missing_keep.unbind(),
        keep_name: rule.keep_name().map(str::to_owned),
    })
}

/// find_common_replication_snapshot (spec §4.4) as data.
#[pyclass(frozen, get_all, module = "pverep._core")]
pub struct BaseSelection {
    /// volid -> base snapshot for an incremental sync.
    bases: Py<PyDict>,
    /// volids absent on the target: full sync.
    full: Py<PyList>,
    /// volids without a common base: the job fails.
    missing: Py<PyList>,
}

#[pyfunction]
#[pyo3(signature = (local, remote, jobid, last_sync, parent_snapname, config_snapshots))]
pub fn select_bases(
    py: Python<'_>,
    local: &Bound<'_, PyAny>,
    remote: &Bound<'_, PyAny>,
    jobid: &str,
    last_sync: i64,
    parent_snapname: Option<&str>,
    config_snapshots: &Bound<'_, PyAny>,
) -> PyResult<BaseSelection> {
    let last_sync = check_last_sync(py, last_sync)?;
    let config_owned: Vec<String> = config_snapshots
        .try_iter()?
        .map(|s| s?.extract::<String>())
        .collect::<PyResult<_>>()?;
    let config: HashSet<&str> = config_owned.iter().map(String::as_str).collect();
    let rule = BaseRule::new(jobid, last_sync, parent_snapname, &config);

    let bases = PyDict::new(py);
    let full = PyList::empty(py);
    let missing = PyList::empty(py);
    for (volid, snaps) in items(local)? {
        let volid = volid.cast_into::<PyString>()?;
        let mut local_owned: Vec<(Bound<'_, PyString>, Bound<'_, SnapshotInfo>)> = Vec::new();
        for (name, info) in items(&snaps)? {
            local_owned.push((name.cast_into()?, info.cast_into()?));
        }
        let mut local_refs = Vec::with_capacity(local_owned.len());
        for (name, info) in &local_owned {
            let s = &info.get().snap;
            local_refs.push(SnapshotRef {
                name: name.to_str()?,
                guid: s.guid,
                createtxg: s.createtxg,
                creation: s.creation,
            });
        }
        let remote_vol = remote.call_method1("get", (&volid,))?;
        let choice = if remote_vol.is_none() {
            rule.choose(&local_refs, None)
        } else {
            let mut pairs: Vec<(Bound<'_, PyString>, Option<u64>)> = Vec::new();
            for (name, guid) in items(&remote_vol)? {
                pairs.push((name.cast_into()?, guid.extract()?));
            }
            let mut remote_map = RemoteSnapshots::with_capacity(pairs.len());
            for (name, guid) in &pairs {
                remote_map.insert(name.to_str()?, *guid);
            }
            rule.choose(&local_refs, Some(&remote_map))
        };
        match choice {
            BaseChoice::Incremental(i) => bases.set_item(&volid, &local_owned[i].0)?,
            BaseChoice::Full => full.append(&volid)?,
            BaseChoice::Missing => missing.append(&volid)?,
        }
    }
    Ok(BaseSelection {
        bases: bases.unbind(),
        full: full.unbind(),
        missing: missing.unbind(),
    })
}
