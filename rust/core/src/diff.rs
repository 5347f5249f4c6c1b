//! pvesr's snapshot decisions as pure functions of snapshot lists (spec §2, §4.3, §4.4), plus a
//! whole-table comparison used for reconciliation and the parse+diff benchmark.
//!
//! Functions return indices into their inputs (or names borrowed from them), so a caller can
//! map the decision back to its own objects without copying snapshots around.
use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::snapshots::{SnapshotRef, SnapshotRun, SnapshotTable};

/// Every replication snapshot starts with this, whatever its job.
pub const REPLICATION_PREFIX: &str = "__replicate_";
/// `last_sync` meaning "state unknown (guest stolen or moved): never delete anything".
pub const LAST_SYNC_UNKNOWN: u64 = 0;
/// `last_sync` meaning "delete every replication snapshot of this job".
pub const LAST_SYNC_REMOVE_ALL: u64 = 1;

/// `__replicate_<jobid>_<time>__`
pub fn replication_snapshot_name(jobid: &str, time: u64) -> String {
    format!("{REPLICATION_PREFIX}{jobid}_{time}__")
}

/// prepare's stale prefix: `__replicate_<jobid>_` (with the trailing `_`), or `__replicate_`.
pub fn job_prefix(jobid: Option<&str>) -> String {
    match jobid {
        Some(jobid) => format!("{REPLICATION_PREFIX}{jobid}_"),
        None => REPLICATION_PREFIX.to_owned(),
    }
}

/// `is_replication_snapshot(name[, jobid])`: prefix **without** the trailing `_`, so job
/// `100-1` also matches `__replicate_100-10_…` (pvesr quirk, kept for compatibility).
pub fn is_replication_snapshot(name: &str, jobid: Option<&str>) -> bool {
    match name.strip_prefix(REPLICATION_PREFIX) {
        Some(rest) => jobid.is_none_or(|j| rest.starts_with(j)),
        None => false,
    }
}

/// prepare()'s decision for one volume: indices into the snapshot list it was given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumePrepare {
    /// Snapshots that stay (prepare's result for this volume), input order.
    pub keep: Vec<usize>,
    /// Snapshots to delete as stale, input order.
    pub stale: Vec<usize>,
    /// Log `expected snapshot <keep> not present for <volid>, not removing others`.
    pub missing_keep: bool,
}

/// The parameters of one `prepare(volids, jobid, last_sync, parent_snapname)` call (§4.3).
#[derive(Debug, Clone)]
pub struct Prepare {
    prefix: String,
    keep: Option<String>,
    last_sync: u64,
    parent: Option<String>,
}

impl Prepare {
    pub fn new(jobid: Option<&str>, last_sync: u64, parent: Option<&str>) -> Self {
        Prepare {
            prefix: job_prefix(jobid),
            keep: jobid.map(|j| replication_snapshot_name(j, last_sync)),
            last_sync,
            parent: parent.map(str::to_owned),
        }
    }

    /// `__replicate_<jobid>_<last_sync>__`, the snapshot prepare must not delete.
    pub fn keep_name(&self) -> Option<&str> {
        self.keep.as_deref()
    }

    fn potentially_stale(&self, name: &str) -> bool {
        Some(name) != self.keep.as_deref()
            && Some(name) != self.parent.as_deref()
            && name.starts_with(&self.prefix)
    }

    /// Decide for one volume given its snapshot names.
    pub fn plan_volume<S: AsRef<str>>(&self, names: &[S]) -> VolumePrepare {
        let removal_ok = match self.last_sync {
            LAST_SYNC_UNKNOWN => false,
            LAST_SYNC_REMOVE_ALL => true,
            _ => match &self.keep {
                None => true,
                Some(keep) => names.iter().any(|n| n.as_ref() == keep),
            },
        };
        let mut plan = VolumePrepare::default();
        let mut any_stale = false;
        for (i, name) in names.iter().enumerate() {
            let stale = self.potentially_stale(name.as_ref());
            any_stale |= stale;
            if stale && removal_ok {
                plan.stale.push(i);
            } else {
                plan.keep.push(i);
            }
        }
        plan.missing_keep = !removal_ok && self.last_sync > LAST_SYNC_REMOVE_ALL && any_stale;
        plan
    }
}

/// What the remote prepare reported for one snapshot: its guid, or `None` when an old target
/// answered `1` (then a name match counts as common).
pub type RemoteSnapshots<'a> = HashMap<&'a str, Option<u64>>;

/// The parameters of `find_common_replication_snapshot` (§4.4) that are the same for every volume.
#[derive(Debug, Clone)]
pub struct BaseRule<'a> {
    last_name: String,
    parent: Option<&'a str>,
    config_snapshots: &'a HashSet<&'a str>,
}

/// The outcome for one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseChoice {
    /// Incremental sync from the local snapshot at this index.
    Incremental(usize),
    /// The volume does not exist on the target: full sync.
    Full,
    /// Present on both sides without a common base: the job must fail.
    Missing,
}

impl<'a> BaseRule<'a> {
    pub fn new(
        jobid: &str,
        last_sync: u64,
        parent: Option<&'a str>,
        config_snapshots: &'a HashSet<&'a str>,
    ) -> Self {
        BaseRule {
            last_name: replication_snapshot_name(jobid, last_sync),
            parent,
            config_snapshots,
        }
    }

    /// Choose the base for one volume: `last_name` if common (same name and guid), else the
    /// parent snapshot if common, else the common config/replication snapshot with the greatest
    /// creation time (> 0). Ties, which pvesr breaks by hash order, go to the greater createtxg,
    /// then to the first in input order.
    pub fn choose(
        &self,
        local: &[SnapshotRef<'_>],
        remote: Option<&RemoteSnapshots<'_>>,
    ) -> BaseChoice {
        let Some(remote) = remote else {
            return BaseChoice::Full;
        };
        let mut by_name: Option<usize> = None;
        let mut by_parent: Option<usize> = None;
        let mut newest: Option<usize> = None;
        for (i, snap) in local.iter().enumerate() {
            let common = match remote.get(snap.name) {
                None => false,
                Some(None) => true,
                Some(Some(guid)) => *guid == snap.guid,
            };
            if !common {
                continue;
            }
            if by_name.is_none() && snap.name == self.last_name {
                by_name = Some(i);
            }
            if by_parent.is_none() && Some(snap.name) == self.parent {
                by_parent = Some(i);
            }
            let candidate = self.config_snapshots.contains(snap.name)
                || snap.name.starts_with(REPLICATION_PREFIX);
            if candidate && snap.creation > 0 {
                let better = newest.is_none_or(|b| {
                    let best = &local[b];
                    (snap.creation, snap.createtxg) > (best.creation, best.createtxg)
                });
                if better {
                    newest = Some(i);
                }
            }
        }
        match by_name.or(by_parent).or(newest) {
            Some(i) => BaseChoice::Incremental(i),
            None => BaseChoice::Missing,
        }
    }
}

/// How one dataset's snapshots compare between two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetComparison<'a> {
    pub dataset: &'a str,
    /// Snapshots with the same name and guid on both sides.
    pub common: usize,
    /// Names only the local side has, local order.
    pub only_local: Vec<&'a str>,
    /// Names only the remote side has, remote order.
    pub only_remote: Vec<&'a str>,
    /// Names on both sides with different guids (same name, different data), local order.
    pub diverged: Vec<&'a str>,
    /// The common snapshot with the greatest local createtxg.
    pub newest_common: Option<&'a str>,
}

/// Indexed access to one dataset's snapshots, either straight from the table
/// ([`SnapshotRun`]) or collected (when the input interleaved datasets).
trait Listing<'a> {
    fn len(&self) -> usize;
    /// Whether snapshot `k` has the name of snapshot `j` of `other`.
    fn same_name(&self, k: usize, other: &Self, j: usize) -> bool {
        self.name(k) == other.name(j)
    }
    fn name(&self, k: usize) -> &'a str;
    fn guid(&self, k: usize) -> u64;
    fn createtxg(&self, k: usize) -> u64;
}

impl<'a> Listing<'a> for SnapshotRun<'a> {
    fn len(&self) -> usize {
        SnapshotRun::len(self)
    }
    #[inline]
    fn same_name(&self, k: usize, other: &Self, j: usize) -> bool {
        SnapshotRun::same_name(self, k, other, j)
    }
    #[inline]
    fn name(&self, k: usize) -> &'a str {
        SnapshotRun::name(self, k)
    }
    #[inline]
    fn guid(&self, k: usize) -> u64 {
        SnapshotRun::guid(self, k)
    }
    #[inline]
    fn createtxg(&self, k: usize) -> u64 {
        SnapshotRun::createtxg(self, k)
    }
}

impl<'a> Listing<'a> for &[SnapshotRef<'a>] {
    fn len(&self) -> usize {
        <[SnapshotRef<'a>]>::len(self)
    }
    fn name(&self, k: usize) -> &'a str {
        self[k].name
    }
    fn guid(&self, k: usize) -> u64 {
        self[k].guid
    }
    fn createtxg(&self, k: usize) -> u64 {
        self[k].createtxg
    }
}

/// Buffers reused from one dataset to the next.
#[derive(Default)]
struct Scratch<'a> {
    /// Unmatched remote name -> index in the remote dataset.
    index: FastMap<&'a str, usize>,
    /// Per local snapshot: index of the remote one with the same name.
    l_match: Vec<Option<usize>>,
    /// Per remote snapshot: whether a local one has its name.
    r_seen: Vec<bool>,
    /// Snapshots of an interleaved dataset, collected.
    l: Vec<SnapshotRef<'a>>,
    r: Vec<SnapshotRef<'a>>,
}

/// Compare two whole listings dataset by dataset: datasets of `local` in its order, then those
/// only `remote` has.
pub fn compare_tables<'a>(
    local: &'a SnapshotTable,
    remote: &'a SnapshotTable,
) -> Vec<DatasetComparison<'a>> {
    let mut out = Vec::with_capacity(local.dataset_count());
    let mut scratch = Scratch::default();
    for (li, dataset) in local.dataset_names().enumerate() {
        // Both sides usually list the same datasets in the same order.
        let ri = if li < remote.dataset_count() && remote.dataset_name(li) == dataset {
            Some(li)
        } else {
            remote.find_dataset(dataset)
        };
        let runs = (
            local.snapshot_run(li),
            ri.map_or(Some(None), |ri| remote.snapshot_run(ri).map(Some)),
        );
        let cmp = match runs {
            (Some(l), Some(Some(r))) => compare_dataset(dataset, l, r, &mut scratch),
            (Some(l), Some(None)) => {
                compare_dataset(dataset, l, SnapshotRun::default(), &mut scratch)
            }
            _ => {
                let (mut l, mut r) = (
                    std::mem::take(&mut scratch.l),
                    std::mem::take(&mut scratch.r),
                );
                l.clear();
                l.extend(local.snapshots(li));
                r.clear();
                if let Some(ri) = ri {
                    r.extend(remote.snapshots(ri));
                }
                let cmp = compare_dataset(dataset, &l[..], &r[..], &mut scratch);
                (scratch.l, scratch.r) = (l, r);
                cmp
            }
        };
        out.push(cmp);
    }
    for (ri, dataset) in remote.dataset_names().enumerate() {
        let same_place = ri < local.dataset_count() && local.dataset_name(ri) == dataset;
        if !same_place && local.find_dataset(dataset).is_none() {
            out.push(DatasetComparison {
                dataset,
                common: 0,
                only_local: Vec::new(),
                only_remote: remote.snapshots(ri).map(|s| s.name).collect(),
                diverged: Vec::new(),
                newest_common: None,
            });
        }
    }
    out
}

fn compare_dataset<'a, L: Listing<'a>>(
    dataset: &'a str,
    l: L,
    r: L,
    scratch: &mut Scratch<'a>,
) -> DatasetComparison<'a> {
    let Scratch {
        index,
        l_match,
        r_seen,
        ..
    } = scratch;
    // Replicas list their snapshots in the same (creation) order, so most pairs line up by
    // position; only the rest needs the name index. Names are unique per dataset, so a
    // positional name match is the match.
    l_match.clear();
    l_match.resize(l.len(), None);
    r_seen.clear();
    r_seen.resize(r.len(), false);
    let mut unmatched = l.len() != r.len();
    for k in 0..l.len().min(r.len()) {
        if l.same_name(k, &r, k) {
            l_match[k] = Some(k);
            r_seen[k] = true;
        } else {
            unmatched = true;
        }
    }
    if unmatched {
        index.clear();
        for (k, _) in r_seen.iter().enumerate().filter(|(_, seen)| !**seen) {
            index.insert(r.name(k), k);
        }
        for (k, m) in l_match.iter_mut().enumerate() {
            if m.is_none() {
                if let Some(&rk) = index.get(l.name(k)) {
                    *m = Some(rk);
                    r_seen[rk] = true;
                }
            }
        }
    }
    let mut cmp = DatasetComparison {
        dataset,
        common: 0,
        only_local: Vec::new(),
        only_remote: Vec::new(),
        diverged: Vec::new(),
        newest_common: None,
    };
    let mut newest_txg = 0u64;
    for (k, m) in l_match.iter().enumerate() {
        match *m {
            None => cmp.only_local.push(l.name(k)),
            Some(rk) if r.guid(rk) != l.guid(k) => cmp.diverged.push(l.name(k)),
            Some(_) => {
                cmp.common += 1;
                let txg = l.createtxg(k);
                if cmp.newest_common.is_none() || txg > newest_txg {
                    cmp.newest_common = Some(l.name(k));
                    newest_txg = txg;
                }
            }
        }
    }
    if unmatched {
        cmp.only_remote = (0..r.len())
            .filter(|&k| !r_seen[k])
            .map(|k| r.name(k))
            .collect();
    }
    cmp
}

/// A small multiply-rotate hasher (the FxHash scheme) for snapshot names: the maps here are
/// rebuilt per dataset from trusted local data, so DoS resistance buys nothing and SipHash
/// would dominate the comparison time.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests;
