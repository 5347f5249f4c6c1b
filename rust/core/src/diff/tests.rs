use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::snapshots::SnapshotTable;

fn snap(name: &str, guid: u64, creation: i64) -> SnapshotRef<'_> {
    SnapshotRef {
        name,
        guid,
        createtxg: creation as u64,
        creation,
    }
}

fn names_of<'a>(names: &[&'a str], idx: &[usize]) -> Vec<&'a str> {
    idx.iter().map(|&i| names[i]).collect()
}

#[test]
fn prepare_deletes_other_snapshots_of_the_job_only() {
    let names = [
        "__replicate_100-0_1000__",
        "__replicate_100-0_2000__",
        "__replicate_100-1_1500__",
        "__replicate_100-10_1500__",
        "manual",
    ];
    let plan = Prepare::new(Some("100-0"), 2000, None).plan_volume(&names);
    assert_eq!(names_of(&names, &plan.stale), ["__replicate_100-0_1000__"]);
    assert_eq!(plan.keep.len(), 4);
    assert!(!plan.missing_keep);

    // job 100-1 must not touch 100-10's snapshot (prefix keeps the trailing '_')
    let plan = Prepare::new(Some("100-1"), 1500, None).plan_volume(&names);
    assert!(plan.stale.is_empty());
    let plan = Prepare::new(Some("100-1"), 1, None).plan_volume(&names);
    assert_eq!(names_of(&names, &plan.stale), ["__replicate_100-1_1500__"]);
}

#[test]
fn prepare_special_last_sync_values() {
    let names = ["__replicate_100-0_1000__", "__replicate_100-0_2000__"];
    // 0: state unknown, never delete, and no "expected snapshot" message
    let plan = Prepare::new(Some("100-0"), 0, None).plan_volume(&names);
    assert_eq!((plan.stale.len(), plan.missing_keep), (0, false));
    // 1: delete all of this job's replication snapshots
    let plan = Prepare::new(Some("100-0"), 1, None).plan_volume(&names);
    assert_eq!(plan.stale, [0, 1]);
    // keep missing: nothing removed, message requested
    let plan = Prepare::new(Some("100-0"), 3000, None).plan_volume(&names);
    assert_eq!((plan.stale.len(), plan.missing_keep), (0, true));
    // keep missing but nothing to remove: no message
    let plan = Prepare::new(Some("100-0"), 3000, None).plan_volume(&["manual"]);
    assert!(!plan.missing_keep);
}

#[test]
fn prepare_protects_parent_and_handles_no_jobid() {
    let names = [
        "__replicate_100-0_1000__",
        "__replicate_100-0_2000__",
        "__replicate_200-0_5__",
    ];
    let plan = Prepare::new(Some("100-0"), 1, Some("__replicate_100-0_1000__")).plan_volume(&names);
    assert_eq!(names_of(&names, &plan.stale), ["__replicate_100-0_2000__"]);
    let plan = Prepare::new(None, 5, None).plan_volume(&names);
    assert_eq!(plan.stale, [0, 1, 2]);
    let plan = Prepare::new(None, 0, None).plan_volume(&names);
    assert!(plan.stale.is_empty());
}

#[test]
fn prepare_names_the_snapshot_it_keeps() {
    // the name goes into pvesr's "expected snapshot <name> not present" log line
    let rule = Prepare::new(Some("100-0"), 1_700_000_100, None);
    assert_eq!(rule.keep_name(), Some("__replicate_100-0_1700000100__"));
    assert_eq!(
        Prepare::new(None, 1_700_000_100, Some("p")).keep_name(),
        None
    );
}

#[test]
fn replication_snapshot_predicates() {
    assert_eq!(
        replication_snapshot_name("100-0", 17),
        "__replicate_100-0_17__"
    );
    assert!(is_replication_snapshot(
        "__replicate_100-10_5__",
        Some("100-1")
    ));
    assert!(is_replication_snapshot("__replicate_x", None));
    assert!(!is_replication_snapshot(
        "__replicate_200-0_5__",
        Some("100-0")
    ));
    assert!(!is_replication_snapshot("snap", None));
}

#[test]
fn base_selection_order_of_preference() {
    let config: HashSet<&str> = ["cfg"].into_iter().collect();
    let rule = BaseRule::new("100-0", 2000, Some("parent"), &config);
    let local = [
        snap("__replicate_100-0_1000__", 1, 1000),
        snap("cfg", 2, 1500),
        snap("parent", 3, 1200),
        snap("__replicate_100-0_2000__", 4, 2000),
        snap("other", 5, 3000),
    ];
    let mut remote: RemoteSnapshots = local.iter().map(|s| (s.name, Some(s.guid))).collect();
    assert_eq!(
        rule.choose(&local, Some(&remote)),
        BaseChoice::Incremental(3)
    );
    // last_sync snapshot diverged (other guid) -> parent
    remote.insert("__replicate_100-0_2000__", Some(99));
    assert_eq!(
        rule.choose(&local, Some(&remote)),
        BaseChoice::Incremental(2)
    );
    // no parent -> newest common config/replication snapshot by creation ("other" is neither)
    remote.remove("parent");
    assert_eq!(
        rule.choose(&local, Some(&remote)),
        BaseChoice::Incremental(1)
    );
    remote.remove("cfg");
    assert_eq!(
        rule.choose(&local, Some(&remote)),
        BaseChoice::Incremental(0)
    );
    remote.remove("__replicate_100-0_1000__");
    assert_eq!(rule.choose(&local, Some(&remote)), BaseChoice::Missing);
    assert_eq!(rule.choose(&local, None), BaseChoice::Full);
    // a legacy target answering `1` (no guid) matches by name
    let legacy: RemoteSnapshots = [("__replicate_100-0_2000__", None)].into_iter().collect();
    assert_eq!(
        rule.choose(&local, Some(&legacy)),
        BaseChoice::Incremental(3)
    );
}

#[test]
fn base_selection_ties_and_zero_creation() {
    let config = HashSet::new();
    let rule = BaseRule::new("1-0", 9, None, &config);
    let mut a = snap("__replicate_1-0_5__", 1, 100);
    a.createtxg = 7;
    let mut b = snap("__replicate_2-0_5__", 2, 100);
    b.createtxg = 8;
    let local = [a, b];
    let remote: RemoteSnapshots = local.iter().map(|s| (s.name, Some(s.guid))).collect();
    assert_eq!(
        rule.choose(&local, Some(&remote)),
        BaseChoice::Incremental(1)
    );
    let zero = [snap("__replicate_1-0_5__", 1, 0)];
    let remote: RemoteSnapshots = zero.iter().map(|s| (s.name, Some(s.guid))).collect();
    assert_eq!(rule.choose(&zero, Some(&remote)), BaseChoice::Missing);
    // two snapshots taken in one txg (`zfs snapshot a@x a@y`): equal creation and createtxg;
    // the first in listing order stays the choice, so a run's base never flips between them
    let twins = [
        snap("__replicate_1-0_5__", 1, 100),
        snap("__replicate_2-0_5__", 2, 100),
    ];
    let remote: RemoteSnapshots = twins.iter().map(|s| (s.name, Some(s.guid))).collect();
    assert_eq!(
        rule.choose(&twins, Some(&remote)),
        BaseChoice::Incremental(0)
    );
}

#[test]
fn compare_tables_counts() {
    let l = b"d@a\t1\t1\t1\nd@b\t2\t2\t2\nd@c\t3\t3\t3\ne@x\t9\t9\t9\n";
    let r = b"d@a\t1\t1\t1\nd@b\t7\t2\t2\nd@z\t4\t4\t4\nf@y\t5\t5\t5\n";
    let (l, r) = (
        SnapshotTable::parse(l).unwrap(),
        SnapshotTable::parse(r).unwrap(),
    );
    let c = compare_tables(&l, &r);
    assert_eq!(c.len(), 3);
    assert_eq!(c[0].dataset, "d");
    assert_eq!(c[0].common, 1);
    assert_eq!(c[0].diverged, ["b"]);
    assert_eq!(c[0].only_local, ["c"]);
    assert_eq!(c[0].only_remote, ["z"]);
    assert_eq!(c[0].newest_common, Some("a"));
    assert_eq!((c[1].dataset, c[1].only_local.len()), ("e", 1));
    assert_eq!((c[2].dataset, c[2].only_remote.clone()), ("f", vec!["y"]));
    // twins of one txg (`zfs snapshot d@p d@q`): the first listed stays the newest common
    let twins = b"d@p\t1\t5\t5\nd@q\t2\t5\t5\n";
    let t = SnapshotTable::parse(twins).unwrap();
    assert_eq!(compare_tables(&t, &t)[0].newest_common, Some("p"));
}

// ---- naive reference implementations, transcribed from the spec text, for property tests ----

fn reference_prepare(
    names: &[&str],
    jobid: Option<&str>,
    last_sync: u64,
    parent: Option<&str>,
) -> (Vec<usize>, Vec<usize>, bool) {
    let prefix = match jobid {
        Some(j) => format!("__replicate_{j}_"),
        None => "__replicate_".to_string(),
    };
    let keep = jobid.map(|j| format!("__replicate_{j}_{last_sync}__"));
    let mut removal_ok = match &keep {
        None => true,
        Some(k) => names.contains(&k.as_str()),
    };
    if last_sync == 0 {
        removal_ok = false;
    }
    if last_sync == 1 {
        removal_ok = true;
    }
    let pot = |n: &str| Some(n) != keep.as_deref() && Some(n) != parent && n.starts_with(&prefix);
    let missing = !removal_ok && last_sync > 1 && names.iter().any(|n| pot(n));
    let (mut k, mut s) = (vec![], vec![]);
    for (i, n) in names.iter().enumerate() {
        if pot(n) && removal_ok {
            s.push(i)
        } else {
            k.push(i)
        }
    }
    (k, s, missing)
}

fn reference_base(
    local: &[SnapshotRef<'_>],
    remote: Option<&HashMap<&str, Option<u64>>>,
    jobid: &str,
    last_sync: u64,
    parent: Option<&str>,
    config: &HashSet<&str>,
) -> BaseChoice {
    let Some(remote) = remote else {
        return BaseChoice::Full;
    };
    let find = |name: &str| local.iter().position(|s| s.name == name);
    let common = |name: &str| match (find(name), remote.get(name)) {
        (Some(i), Some(r)) => r.is_none_or(|g| g == local[i].guid),
        _ => false,
    };
    let last = format!("__replicate_{jobid}_{last_sync}__");
    if common(&last) {
        return BaseChoice::Incremental(find(&last).unwrap());
    }
    if let Some(p) = parent {
        if common(p) {
            return BaseChoice::Incremental(find(p).unwrap());
        }
    }
    let mut best: Option<usize> = None;
    for (i, s) in local.iter().enumerate() {
        if !common(s.name) || !(config.contains(s.name) || s.name.starts_with("__replicate_")) {
            continue;
        }
        if s.creation <= 0 {
            continue;
        }
        match best {
            Some(b) if (local[b].creation, local[b].createtxg) >= (s.creation, s.createtxg) => {}
            _ => best = Some(i),
        }
    }
    best.map_or(BaseChoice::Missing, BaseChoice::Incremental)
}

const NAMES: &[&str] = &[
    "__replicate_100-0_0__",
    "__replicate_100-0_1__",
    "__replicate_100-0_5__",
    "__replicate_100-0_7__",
    "__replicate_100-1_5__",
    "__replicate_100-10_5__",
    "__replicate_200-0_5__",
    "snap1",
    "cfg",
    "autosnap",
];

fn jobid() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![None, Some("100-0"), Some("100-1"), Some("100-10")])
}

fn parent() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![None, Some("snap1"), Some("__replicate_100-0_5__")])
}

fn last_sync() -> impl Strategy<Value = u64> {
    prop::sample::select(vec![0u64, 1, 5, 7, 9])
}

/// Unique names (a volume's snapshots are a map) with small guids and creations so that
/// collisions and ties happen often.
fn local_snaps() -> impl Strategy<Value = Vec<(&'static str, u64, i64, u64)>> {
    prop::sample::subsequence(NAMES.to_vec(), 0..NAMES.len())
        .prop_flat_map(|names| {
            let n = names.len();
            (
                Just(names),
                prop::collection::vec((0u64..3, -1i64..4, 0u64..3), n),
            )
        })
        .prop_shuffle_names()
}

trait ShuffleNames {
    fn prop_shuffle_names(self) -> BoxedStrategy<Vec<(&'static str, u64, i64, u64)>>;
}

impl<S> ShuffleNames for S
where
    S: Strategy<Value = (Vec<&'static str>, Vec<(u64, i64, u64)>)> + 'static,
{
    fn prop_shuffle_names(self) -> BoxedStrategy<Vec<(&'static str, u64, i64, u64)>> {
        self.prop_map(|(names, nums)| {
            names
                .into_iter()
                .zip(nums)
                .map(|(n, (g, c, t))| (n, g, c, t))
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
        .boxed()
    }
}

proptest! {
    #[test]
    fn prepare_agrees_with_reference(
        names in prop::sample::subsequence(NAMES.to_vec(), 0..NAMES.len()).prop_shuffle(),
        jobid in jobid(), last_sync in last_sync(), parent in parent(),
    ) {
        let plan = Prepare::new(jobid, last_sync, parent).plan_volume(&names);
        let (keep, stale, missing) = reference_prepare(&names, jobid, last_sync, parent);
        prop_assert_eq!(plan.keep, keep);
        prop_assert_eq!(plan.stale, stale);
        prop_assert_eq!(plan.missing_keep, missing);
    }

    #[test]
    fn base_agrees_with_reference(
        local in local_snaps(),
        remote_pick in prop::collection::vec((any::<bool>(), 0u64..4), NAMES.len()),
        absent in any::<bool>(),
        jobid in prop::sample::select(vec!["100-0", "100-1"]),
        last_sync in last_sync(), parent in parent(),
        config_has_cfg in any::<bool>(),
    ) {
        let local: Vec<SnapshotRef> = local
            .iter()
            .map(|&(name, guid, creation, createtxg)| SnapshotRef { name, guid, createtxg, creation })
            .collect();
        // remote: each known name present or not; guid 3 means "legacy `1` answer"
        let remote: RemoteSnapshots = NAMES
            .iter()
            .zip(&remote_pick)
            .filter(|(_, (present, _))| *present)
            .map(|(n, (_, g))| (*n, if *g == 3 { None } else { Some(*g) }))
            .collect();
        let remote_opt = if absent { None } else { Some(&remote) };
        let config: HashSet<&str> = if config_has_cfg { ["cfg"].into_iter().collect() } else { HashSet::new() };
        let rule = BaseRule::new(jobid, last_sync, parent, &config);
        prop_assert_eq!(
            rule.choose(&local, remote_opt),
            reference_base(&local, remote_opt, jobid, last_sync, parent, &config)
        );
    }
}

proptest! {
    /// The positional fast path and the name index agree with a set-based reference.
    #[test]
    fn compare_agrees_with_reference(
        local in prop::sample::subsequence(NAMES.to_vec(), 0..NAMES.len()).prop_shuffle(),
        remote in prop::sample::subsequence(NAMES.to_vec(), 0..NAMES.len()).prop_shuffle(),
        guid_flip in prop::collection::vec(any::<bool>(), NAMES.len()),
    ) {
        let guid = |n: &str, remote: bool| {
            let i = NAMES.iter().position(|x| *x == n).unwrap();
            if remote && guid_flip[i] { 1000 + i } else { i }
        };
        let text = |names: &[&str], remote: bool| {
            names.iter().enumerate()
                .map(|(k, n)| format!("d@{n}\t{}\t{}\t{}\n", guid(n, remote), k + 1, k + 1))
                .collect::<String>()
        };
        let (lt, rt) = (text(&local, false), text(&remote, true));
        let (l, r) = (SnapshotTable::parse(lt.as_bytes()).unwrap(), SnapshotTable::parse(rt.as_bytes()).unwrap());
        let c = compare_tables(&l, &r);
        if local.is_empty() && remote.is_empty() {
            prop_assert!(c.is_empty());
            return Ok(());
        }
        let c = &c[0];
        let only_local: Vec<&str> = local.iter().copied().filter(|n| !remote.contains(n)).collect();
        let only_remote: Vec<&str> = remote.iter().copied().filter(|n| !local.contains(n)).collect();
        let both: Vec<&str> = local.iter().copied().filter(|n| remote.contains(n)).collect();
        let common: Vec<&str> = both.iter().copied().filter(|n| guid(n, false) == guid(n, true)).collect();
        let diverged: Vec<&str> = both.iter().copied().filter(|n| guid(n, false) != guid(n, true)).collect();
        prop_assert_eq!(&c.only_local, &only_local);
        prop_assert_eq!(&c.only_remote, &only_remote);
        prop_assert_eq!(&c.diverged, &diverged);
        prop_assert_eq!(c.common, common.len());
        prop_assert_eq!(c.newest_common, common.last().copied());
    }
}

/// One side of a multi-dataset listing: (dataset, name) lines in listing order.
fn listing_lines() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    let dataset = || prop::sample::subsequence(NAMES.to_vec(), 0..NAMES.len()).prop_shuffle();
    (
        dataset(),
        dataset(),
        dataset(),
        any::<bool>(),
        prop::collection::vec(0u8..4, 64),
    )
        .prop_map(|(d, e, f, interleave, keys)| {
            let mut lines: Vec<(&str, &str)> = [("d", d), ("e", e), ("f", f)]
                .into_iter()
                .flat_map(|(ds, names)| names.into_iter().map(move |n| (ds, n)))
                .collect();
            if interleave {
                // Datasets' lines mixed (each dataset's own order changes too).
                let mut keyed: Vec<_> = lines
                    .iter()
                    .zip(keys.iter().cycle())
                    .map(|(l, k)| (*k, *l))
                    .collect();
                keyed.sort_by_key(|(k, _)| *k);
                lines = keyed.into_iter().map(|(_, l)| l).collect();
            }
            lines
        })
}

proptest! {
    /// Several datasets, some only on one side, maybe interleaved (the collected path), agree
    /// with a set-based reference, in local-then-remote-only dataset order.
    #[test]
    fn compare_tables_agrees_with_reference(
        local in listing_lines(),
        remote in listing_lines(),
        guid_flip in prop::collection::vec(any::<bool>(), 3 * NAMES.len()),
    ) {
        let guid = |ds: &str, n: &str, remote: bool| {
            let i = ["d", "e", "f"].iter().position(|x| *x == ds).unwrap() * NAMES.len()
                + NAMES.iter().position(|x| *x == n).unwrap();
            if remote && guid_flip[i] { 1000 + i } else { i }
        };
        let text = |lines: &[(&str, &str)], remote: bool| {
            lines.iter().enumerate()
                .map(|(k, (ds, n))| format!("{ds}@{n}\t{}\t{}\t{}\n", guid(ds, n, remote), k + 1, k + 1))
                .collect::<String>()
        };
        let (lt, rt) = (text(&local, false), text(&remote, true));
        let (l, r) = (SnapshotTable::parse(lt.as_bytes()).unwrap(), SnapshotTable::parse(rt.as_bytes()).unwrap());
        let got = compare_tables(&l, &r);

        // Local datasets first (first appearance), then remote-only ones (remote order).
        let mut order: Vec<&str> = Vec::new();
        for (ds, _) in local.iter().chain(&remote) {
            if !order.contains(ds) {
                order.push(ds);
            }
        }
        prop_assert_eq!(got.iter().map(|c| c.dataset).collect::<Vec<_>>(), order.clone());
        for (c, ds) in got.iter().zip(&order) {
            let names = |lines: &[(&'static str, &'static str)]| -> Vec<&'static str> {
                lines.iter().filter(|(d, _)| d == ds).map(|(_, n)| *n).collect()
            };
            let (ln, rn) = (names(&local), names(&remote));
            let only_local: Vec<&str> = ln.iter().copied().filter(|n| !rn.contains(n)).collect();
            let only_remote: Vec<&str> = rn.iter().copied().filter(|n| !ln.contains(n)).collect();
            let both: Vec<&str> = ln.iter().copied().filter(|n| rn.contains(n)).collect();
            let common: Vec<&str> = both.iter().copied().filter(|n| guid(ds, n, false) == guid(ds, n, true)).collect();
            let diverged: Vec<&str> = both.iter().copied().filter(|n| guid(ds, n, false) != guid(ds, n, true)).collect();
            // Lines are numbered by position, so createtxg grows with the listing order.
            prop_assert_eq!(&c.only_local, &only_local);
            prop_assert_eq!(&c.only_remote, &only_remote);
            prop_assert_eq!(&c.diverged, &diverged);
            prop_assert_eq!(c.common, common.len());
            prop_assert_eq!(c.newest_common, common.last().copied());
        }
    }
}
