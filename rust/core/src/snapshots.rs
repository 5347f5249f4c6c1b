//! Parsers for the two `zfs` output forms pverep reads:
//!
//! * `zfs list -Hp -o name,guid,createtxg,creation -t snapshot [...]` — one snapshot per line,
//!   four tab-separated columns, grouped here into per-dataset lists in input order;
//! * `zfs get -Hp -o name,property,value [...]` — three columns, grouped by name.
//!
//! Both accept empty input, a trailing newline and blank lines; every error names the 1-based
//! line. The list parser stores all snapshot names of a table in one arena (a name repeated at
//! the same position of consecutive datasets once) and 32 bytes of numbers per snapshot, so a
//! million-line listing costs tens of MB, not hundreds.
use std::collections::HashMap;
use std::ops::Range;

use memchr::memchr;

use crate::error::{Error, Result};

mod prefault;
mod scan;

/// One snapshot of one dataset, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// The part after `@`.
    pub name: String,
    pub guid: u64,
    pub createtxg: u64,
    /// Creation time, seconds since the epoch.
    pub creation: i64,
}

/// One snapshot of a [`SnapshotTable`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRef<'a> {
    pub name: &'a str,
    pub guid: u64,
    pub createtxg: u64,
    pub creation: i64,
}

impl SnapshotRef<'_> {
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            name: self.name.to_owned(),
            guid: self.guid,
            createtxg: self.createtxg,
            creation: self.creation,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    guid: u64,
    createtxg: u64,
    creation: i64,
    name_start: u32,
    name_len: u32,
}

#[derive(Debug)]
struct DatasetGroup {
    name: Box<str>,
    /// Ranges into `entries`; one range when the input lists a dataset's snapshots together
    /// (as zfs does), more when they are interleaved with other datasets.
    ranges: Vec<Range<u32>>,
    len: usize,
}

/// The parsed form of a `zfs list ... -t snapshot` listing: datasets in order of first
/// appearance, each with its snapshots in input order.
#[derive(Debug, Default)]
pub struct SnapshotTable {
    names: String,
    entries: Vec<Entry>,
    datasets: Vec<DatasetGroup>,
    index: HashMap<Box<str>, usize>,
}

/// Columns of the list form, for messages.
const LIST_COLUMNS: &str = "name, guid, createtxg, creation";

impl SnapshotTable {
    /// Parse `zfs list -Hp -o name,guid,createtxg,creation -t snapshot` output.
    pub fn parse(data: &[u8]) -> Result<Self> {
        // Generous up-front reservations keep peak memory at the final size (no doubling on
        // growth, no copy): untouched reserved pages cost address space, not memory, and the
        // unused tails are released at the end. A line takes at least ~24 bytes in practice.
        let mut b = Builder::new(data.len(), data.len() / 24 + 1);
        b.feed(data)?;
        Ok(b.finish())
    }

    /// Parse a listing streamed from `reader` (e.g. `zfs list`'s stdout) in 1 MiB pieces, so
    /// the raw text never has to be held in memory as a whole. `size_hint`: the expected
    /// input size in bytes if known (reserving for it avoids regrowing the table).
    pub fn parse_reader(
        reader: &mut impl std::io::Read,
        size_hint: usize,
    ) -> std::io::Result<Result<Self>> {
        let mut buf = vec![0u8; 1 << 18];
        let mut filled = 0;
        let mut b = Builder::new(size_hint, size_hint / 24);
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0); // a line longer than the buffer
            }
            let n = match reader.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                if let Err(e) = b.feed(&buf[..filled]) {
                    return Ok(Err(e));
                }
                return Ok(Ok(b.finish()));
            }
            filled += n;
            if let Some(last_nl) = memchr::memrchr(b'\n', &buf[..filled]) {
                if let Err(e) = b.feed(&buf[..=last_nl]) {
                    return Ok(Err(e));
                }
                buf.copy_within(last_nl + 1..filled, 0);
                filled -= last_nl + 1;
            }
        }
    }

    fn group_for(&mut self, dataset: &str) -> usize {
        if let Some(&i) = self.index.get(dataset) {
            return i;
        }
        let i = self.datasets.len();
        self.datasets.push(DatasetGroup {
            name: dataset.into(),
            ranges: Vec::new(),
            len: 0,
        });
        self.index.insert(dataset.into(), i);
        i
    }

    /// Number of snapshots in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn dataset_count(&self) -> usize {
        self.datasets.len()
    }

    /// Dataset names in order of first appearance.
    pub fn dataset_names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.datasets.iter().map(|g| &*g.name)
    }

    pub fn dataset_name(&self, dataset: usize) -> &str {
        &self.datasets[dataset].name
    }

    pub fn find_dataset(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Number of snapshots of dataset `dataset` (an index below `dataset_count()`).
    pub fn dataset_len(&self, dataset: usize) -> usize {
        self.datasets[dataset].len
    }

    /// Snapshots of dataset `dataset` as one [`SnapshotRun`], or `None` if the input
    /// interleaved them with other datasets' (then use [`Self::snapshots`]).
    pub fn snapshot_run(&self, dataset: usize) -> Option<SnapshotRun<'_>> {
        let entries = match self.datasets[dataset].ranges.as_slice() {
            [] => &[][..],
            [r] => &self.entries[r.start as usize..r.end as usize],
            _ => return None,
        };
        Some(SnapshotRun {
            names: &self.names,
            entries,
        })
    }

    /// Snapshots of dataset `dataset`, in input order.
    pub fn snapshots(&self, dataset: usize) -> impl Iterator<Item = SnapshotRef<'_>> + '_ {
        self.datasets[dataset]
            .ranges
            .iter()
            .flat_map(|r| self.entries[r.start as usize..r.end as usize].iter())
            .map(|e| SnapshotRef {
                name: &self.names[e.name_start as usize..(e.name_start + e.name_len) as usize],
                guid: e.guid,
                createtxg: e.createtxg,
                creation: e.creation,
            })
    }
}

/// The snapshots of one dataset as the table stores them, when they are one run (always for
/// `zfs list` output, which lists each dataset's snapshots together): indexed access without
/// building a `SnapshotRef` per snapshot, for whole-table work like the comparison.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotRun<'a> {
    names: &'a str,
    entries: &'a [Entry],
}

impl<'a> SnapshotRun<'a> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[inline]
    pub fn name(&self, k: usize) -> &'a str {
        let e = &self.entries[k];
        &self.names[e.name_start as usize..][..e.name_len as usize]
    }

    /// Whether snapshot `k` has the same name as snapshot `j` of `other` (cheaper than
    /// comparing the `name`s: no char-boundary checks, no library call for short names).
    #[inline]
    pub fn same_name(&self, k: usize, other: &SnapshotRun<'_>, j: usize) -> bool {
        let (a, b) = (&self.entries[k], &other.entries[j]);
        a.name_len == b.name_len
            && scan::same_bytes(
                &self.names.as_bytes()[a.name_start as usize..][..a.name_len as usize],
                &other.names.as_bytes()[b.name_start as usize..][..b.name_len as usize],
            )
    }

    #[inline]
    pub fn guid(&self, k: usize) -> u64 {
        self.entries[k].guid
    }

    #[inline]
    pub fn createtxg(&self, k: usize) -> u64 {
        self.entries[k].createtxg
    }
}

/// Input bytes per population step (a whole listing may come as one chunk).
const POPULATE_PIECE: usize = 256 << 10;

/// Incremental construction of a table from chunks of whole lines.
struct Builder {
    table: SnapshotTable,
    current: Option<usize>,
    /// Lines consumed so far.
    lines: usize,
    /// Entries of the current run of consecutive snapshots of one dataset, and of the run
    /// before it. The snapshot at a given position of a run often has the same name as the
    /// one at that position of the run before (all disks of a guest are snapshotted
    /// together; sanoid and the like name snapshots by time), and then its name is stored
    /// once: a million-line listing touches a third less memory, which page faults make
    /// cost more than the extra comparison.
    run: Range<usize>,
    template: Range<usize>,
    /// Page population ahead of the parser for the entries and the names.
    prefault: (prefault::Prefault, prefault::Prefault),
}

impl Builder {
    fn new(name_bytes: usize, entries: usize) -> Self {
        Builder {
            table: SnapshotTable {
                names: String::with_capacity(name_bytes),
                entries: Vec::with_capacity(entries),
                ..Default::default()
            },
            current: None,
            lines: 0,
            run: 0..0,
            template: 0..0,
            prefault: Default::default(),
        }
    }

    /// `chunk` holds whole lines (only the input's last line may lack its newline).
    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        let text = utf8(chunk).map_err(|e| match e {
            Error::Parse { line, message } => Error::parse(self.lines + line, message),
            other => other,
        })?;
        let bytes = text.as_bytes();
        let mut pos = 0;
        let mut populated_for = 0;
        while pos < bytes.len() {
            if pos >= populated_for {
                let piece = (bytes.len() - pos).min(POPULATE_PIECE);
                self.populate_for(piece);
                populated_for = pos + piece;
            }
            self.lines += 1;
            if let Some(next) = self.feed_line_fast(text, pos) {
                pos = next;
                continue;
            }
            let end = memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
            let line = &text[pos..end];
            pos = end + 1;
            if line.is_empty() {
                continue;
            }
            let lineno = self.lines;
            let (dataset, snap) = parse_list_line(line, lineno)?;
            let t = &mut self.table;
            let group = match self.current {
                Some(i) if *t.datasets[i].name == *dataset => i,
                _ => t.group_for(dataset),
            };
            self.current = Some(group);
            self.push(group, snap, lineno)?;
        }
        Ok(())
    }

    /// Populate the memory that parsing the next `input` bytes will probably fill (a line
    /// takes ~24 bytes or more, its stored name well under a quarter of that); an
    /// underestimate only means some ordinary page faults.
    fn populate_for(&mut self, input: usize) {
        let (t, entry) = (&self.table, std::mem::size_of::<Entry>());
        let (entries, names) = (&t.entries, &t.names);
        self.prefault.0.ahead(
            entries.as_ptr().cast(),
            entries.len() * entry,
            entries.capacity() * entry,
            (input / 24 + 1) * entry,
        );
        self.prefault
            .1
            .ahead(names.as_ptr(), names.len(), names.capacity(), input / 4);
    }

    /// The common case in one pass over the line, without looking anything up: a
    /// well-formed line of the dataset of the previous line (zfs lists a dataset's snapshots
    /// together). Returns where the next line starts, or `None` (nothing consumed) for
    /// anything else, which the general path then parses, groups or reports.
    #[inline]
    fn feed_line_fast(&mut self, text: &str, start: usize) -> Option<usize> {
        let b = text.as_bytes();
        let group = self.current?;
        let dataset = self.table.datasets[group].name.as_bytes();
        // The current dataset has no '@' (it was cut at the first one), so a line starting
        // with it and '@' has its first '@' right there.
        let at = start + dataset.len();
        if b.get(at) != Some(&b'@') || !scan::same_bytes(&b[start..at], dataset) {
            return None;
        }
        let [tab, p, q, end] = scan::delimiters4(b, at + 1)?;
        let tabs = b[tab] == b'\t' && b[p] == b'\t' && b[q] == b'\t';
        if !tabs || tab == at + 1 || (end < b.len() && b[end] != b'\n') {
            return None;
        }
        let guid = scan::parse_field(b, tab + 1, p)?;
        let createtxg = scan::parse_field(b, p + 1, q)?;
        let creation = scan::parse_field(b, q + 1, end)?;
        let creation = i64::try_from(creation).ok()?;
        let snap = SnapshotRef {
            // Cut at ASCII delimiters, so on char boundaries.
            name: &text[at + 1..tab],
            guid,
            createtxg,
            creation,
        };
        self.push(group, snap, self.lines).ok()?;
        Some(end + 1)
    }

    #[inline(always)]
    fn push(&mut self, group: usize, snap: SnapshotRef<'_>, lineno: usize) -> Result<()> {
        let too_large = || Error::parse(lineno, "snapshot list too large (over 4 GiB)");
        let t = &mut self.table;
        let len = t.entries.len();
        let index = u32::try_from(len).map_err(|_| too_large())?;
        index.checked_add(1).ok_or_else(too_large)?;
        let g = &mut t.datasets[group];
        let new_run = !matches!(g.ranges.last(), Some(r) if r.end == index);
        if new_run {
            self.template = std::mem::replace(&mut self.run, len..len);
        }
        let same_place = t.entries[self.template.clone()].get(len - self.run.start);
        let (name_start, name_len) = match same_place {
            Some(e)
                if scan::same_bytes(
                    &t.names.as_bytes()[e.name_start as usize..][..e.name_len as usize],
                    snap.name.as_bytes(),
                ) =>
            {
                (e.name_start, e.name_len)
            }
            _ => {
                let name_start = u32::try_from(t.names.len()).map_err(|_| too_large())?;
                let name_len = u32::try_from(snap.name.len()).map_err(|_| too_large())?;
                name_start.checked_add(name_len).ok_or_else(too_large)?;
                t.names.push_str(snap.name);
                (name_start, name_len)
            }
        };
        t.entries.push(Entry {
            guid: snap.guid,
            createtxg: snap.createtxg,
            creation: snap.creation,
            name_start,
            name_len,
        });
        g.len += 1;
        if new_run {
            g.ranges.push(index..index + 1);
        } else if let Some(r) = g.ranges.last_mut() {
            r.end += 1;
        }
        self.run.end = len + 1;
        Ok(())
    }

    fn finish(mut self) -> SnapshotTable {
        self.table.names.shrink_to_fit();
        self.table.entries.shrink_to_fit();
        self.table
    }
}

/// Parse `zfs list -Hp -o name,guid,createtxg,creation -t snapshot` output into
/// `(dataset, snapshots)` pairs, datasets in order of first appearance.
pub fn parse_snapshot_list(data: &[u8]) -> Result<Vec<(String, Vec<Snapshot>)>> {
    let table = SnapshotTable::parse(data)?;
    Ok((0..table.dataset_count())
        .map(|i| {
            let snaps = table.snapshots(i).map(|s| s.to_snapshot()).collect();
            (table.dataset_name(i).to_owned(), snaps)
        })
        .collect())
}

/// Properties of one object from `zfs get`: `(property, value)` in input order.
pub type Properties = Vec<(String, String)>;

/// Parse `zfs get -Hp -o name,property,value` output into `(name, properties)` pairs, names in
/// order of first appearance. A value may be empty or contain tabs (it is the last column).
pub fn parse_zfs_get(data: &[u8]) -> Result<Vec<(String, Properties)>> {
    let text = utf8(data)?;
    let mut out: Vec<(String, Properties)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (lineno, line) in lines_of(text) {
        let mut it = line.splitn(3, '\t');
        let (Some(name), Some(property), Some(value)) = (it.next(), it.next(), it.next()) else {
            return Err(Error::parse(
                lineno,
                format!(
                    "expected 3 tab-separated columns (name, property, value), got {}: '{}'",
                    line.split('\t').count(),
                    clip(line)
                ),
            ));
        };
        if name.is_empty() || property.is_empty() {
            return Err(Error::parse(lineno, "empty name or property column"));
        }
        let i = *index.entry(name).or_insert_with(|| {
            out.push((name.to_owned(), Vec::new()));
            out.len() - 1
        });
        let props = &mut out[i].1;
        match props.iter_mut().find(|(p, _)| p == property) {
            Some(slot) => slot.1 = value.to_owned(),
            None => props.push((property.to_owned(), value.to_owned())),
        }
    }
    Ok(out)
}

fn utf8(data: &[u8]) -> Result<&str> {
    if data.is_ascii() {
        // SAFETY: ASCII is valid UTF-8 (and checking ASCII is cheaper than full validation).
        return Ok(unsafe { std::str::from_utf8_unchecked(data) });
    }
    std::str::from_utf8(data).map_err(|e| {
        let line = memchr::memchr_iter(b'\n', &data[..e.valid_up_to()]).count() + 1;
        Error::parse(line, "not valid UTF-8")
    })
}

/// Non-empty lines with their 1-based numbers.
fn lines_of(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut lineno = 0;
    std::iter::from_fn(move || loop {
        if pos >= bytes.len() {
            return None;
        }
        lineno += 1;
        let end = memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
        let line = &text[pos..end];
        pos = end + 1;
        if !line.is_empty() {
            return Some((lineno, line));
        }
    })
}

fn parse_list_line(line: &str, lineno: usize) -> Result<(&str, SnapshotRef<'_>)> {
    // Hot path (a million lines in a few tens of ms): one scan for the first tab, then the
    // numbers are parsed while looking for their terminating tab; anything unexpected is
    // re-examined by the slow path, which builds the message.
    let b = line.as_bytes();
    if let Some(tab) = memchr(b'\t', b) {
        let mut pos = tab + 1;
        let mut nums = [0u64; 3];
        let mut ok = true;
        for (i, n) in nums.iter_mut().enumerate() {
            let start = pos;
            let mut v: u64 = 0;
            while pos < b.len() && b[pos] != b'\t' {
                let d = b[pos].wrapping_sub(b'0');
                match v.checked_mul(10).and_then(|x| x.checked_add(u64::from(d))) {
                    Some(x) if d <= 9 => v = x,
                    _ => ok = false,
                }
                pos += 1;
            }
            ok &= pos > start && (if i < 2 { pos < b.len() } else { pos == b.len() });
            *n = v;
            pos += 1;
        }
        if ok {
            if let Some(at) = memchr(b'@', &b[..tab]) {
                if at > 0 && at + 1 < tab && nums[2] <= i64::MAX as u64 {
                    return Ok((
                        &line[..at],
                        SnapshotRef {
                            name: &line[at + 1..tab],
                            guid: nums[0],
                            createtxg: nums[1],
                            creation: nums[2] as i64,
                        },
                    ));
                }
            }
        }
    }
    parse_list_line_slow(line, lineno)
}

fn parse_list_line_slow(line: &str, lineno: usize) -> Result<(&str, SnapshotRef<'_>)> {
    let mut it = line.split('\t');
    let (Some(full), Some(guid), Some(txg), Some(creation), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(Error::parse(
            lineno,
            format!(
                "expected 4 tab-separated columns ({LIST_COLUMNS}), got {}: '{}'",
                line.split('\t').count(),
                clip(line)
            ),
        ));
    };
    let (dataset, name) = match full.split_once('@') {
        Some((d, n)) if !d.is_empty() && !n.is_empty() => (d, n),
        _ => {
            return Err(Error::parse(
                lineno,
                format!(
                    "expected a snapshot name <dataset>@<snapshot>, got '{}'",
                    clip(full)
                ),
            ))
        }
    };
    let number = |column: &str, value: &str| {
        parse_u64(value).ok_or_else(|| {
            Error::parse(
                lineno,
                format!(
                    "invalid {column} '{}': expected an unsigned decimal integer",
                    clip(value)
                ),
            )
        })
    };
    let guid = number("guid", guid)?;
    let createtxg = number("createtxg", txg)?;
    let creation = i64::try_from(number("creation", creation)?)
        .map_err(|_| Error::parse(lineno, format!("creation '{creation}' out of range")))?;
    Ok((
        dataset,
        SnapshotRef {
            name,
            guid,
            createtxg,
            creation,
        },
    ))
}

/// Strict unsigned decimal: digits only (no sign, no blanks), no overflow.
fn parse_u64(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// Keep messages one readable line even for a garbage megabyte.
fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIST: &str =
        "rpool/data/vm-100-disk-0@__replicate_100-0_1700000000__\t111\t10\t1700000000\n\
rpool/data/vm-100-disk-0@snap1\t112\t11\t1700000100\n\
rpool/data/vm-100-disk-1@__replicate_100-0_1700000000__\t211\t10\t1700000000\n";

    fn err_line(r: Result<impl std::fmt::Debug>) -> (usize, String) {
        match r {
            Err(Error::Parse { line, message }) => (line, message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn parses_groups_in_order() {
        let out = parse_snapshot_list(LIST.as_bytes()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "rpool/data/vm-100-disk-0");
        assert_eq!(out[0].1.len(), 2);
        assert_eq!(
            out[0].1[1],
            Snapshot {
                name: "snap1".into(),
                guid: 112,
                createtxg: 11,
                creation: 1700000100
            }
        );
        assert_eq!(out[1].1[0].guid, 211);
    }

    #[test]
    fn empty_and_trailing_newlines() {
        assert!(parse_snapshot_list(b"").unwrap().is_empty());
        assert!(parse_snapshot_list(b"\n\n").unwrap().is_empty());
        let no_nl = LIST.trim_end();
        assert_eq!(parse_snapshot_list(no_nl.as_bytes()).unwrap().len(), 2);
    }

    /// The input's last line without its newline, of the same dataset as the line before:
    /// the fast path sees its end at the end of the input (no byte there to look at).
    #[test]
    fn last_line_of_the_current_dataset_without_newline() {
        let out = parse_snapshot_list(b"a@1\t1\t2\t3\na@2\t4\t5\t6").unwrap();
        assert_eq!(out.len(), 1);
        let got: Vec<_> = out[0]
            .1
            .iter()
            .map(|s| (s.name.as_str(), s.guid, s.createtxg, s.creation))
            .collect();
        assert_eq!(got, [("1", 1, 2, 3), ("2", 4, 5, 6)]);
        let t = SnapshotTable::parse(b"a@1\t1\t2\t3\na@2\t4\t5\t6").unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn interleaved_datasets_keep_input_order() {
        let data = "a@1\t1\t1\t1\nb@1\t2\t2\t2\na@2\t3\t3\t3\n";
        let t = SnapshotTable::parse(data.as_bytes()).unwrap();
        assert_eq!(t.dataset_names().collect::<Vec<_>>(), ["a", "b"]);
        let a: Vec<_> = t.snapshots(0).map(|s| s.name).collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(t.dataset_len(0), 2);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn errors_name_the_line() {
        let (line, msg) = err_line(parse_snapshot_list(b"a@1\t1\t1\t1\n\ngarbage\n"));
        assert_eq!(line, 3);
        assert!(msg.contains("expected 4 tab-separated columns"), "{msg}");
        // Three columns, then a line that is only a number: not one line with four columns.
        let (line, msg) = err_line(parse_snapshot_list(b"a@1\t1\t1\t1\na@2\t1\t2\n5\n"));
        assert_eq!(line, 2);
        assert!(msg.contains("expected 4 tab-separated columns"), "{msg}");
        let (line, msg) = err_line(parse_snapshot_list(b"a@1\tx1\t1\t1\n"));
        assert_eq!(line, 1);
        assert!(msg.contains("invalid guid 'x1'"), "{msg}");
        let (_, msg) = err_line(parse_snapshot_list(b"a@1\t1\t-1\t1\n"));
        assert!(msg.contains("invalid createtxg"), "{msg}");
        let (_, msg) = err_line(parse_snapshot_list(b"a@1\t18446744073709551616\t1\t1\n"));
        assert!(msg.contains("invalid guid"), "{msg}");
        let (_, msg) = err_line(parse_snapshot_list(b"a\t1\t1\t1\n"));
        assert!(msg.contains("<dataset>@<snapshot>"), "{msg}");
        let (_, msg) = err_line(parse_snapshot_list(b"@x\t1\t1\t1\n"));
        assert!(msg.contains("<dataset>@<snapshot>"), "{msg}");
        let (line, msg) = err_line(parse_snapshot_list(b"a@1\t1\t1\t1\n\xff\n"));
        assert_eq!((line, msg.as_str()), (2, "not valid UTF-8"));
    }

    #[test]
    fn populates_little_beyond_what_a_big_chunk_fills() {
        let data: String = (0..100_000)
            .map(|i| format!("pool/ds-{}@snap-{i}\t{i}\t{i}\t{i}\n", i / 100))
            .collect();
        let mut b = Builder::new(data.len(), data.len() / 24);
        b.feed(data.as_bytes()).unwrap();
        let (entries, names) = (&b.table.entries, &b.table.names);
        let entry = std::mem::size_of::<Entry>();
        let limit = (1 << 20) + (POPULATE_PIECE / 24 + 1) * entry;
        assert!(
            b.prefault
                .0
                .beyond(entries.as_ptr().cast(), entries.len() * entry)
                <= limit
        );
        assert!(b.prefault.1.beyond(names.as_ptr(), names.len()) <= limit);
        assert_eq!(b.finish().len(), 100_000);
    }

    /// A reader that hands out a few bytes at a time, like a slow pipe.
    struct Trickle<'a>(&'a [u8], usize);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streamed_parse_matches_and_numbers_lines() {
        let whole = SnapshotTable::parse(LIST.as_bytes()).unwrap();
        let streamed = SnapshotTable::parse_reader(&mut Trickle(LIST.as_bytes(), 7), 0)
            .unwrap()
            .unwrap();
        assert_eq!(whole.len(), streamed.len());
        assert!(whole.snapshots(0).eq(streamed.snapshots(0)));
        let bad = format!("{LIST}\n{LIST}x@y\tz\t1\t1");
        let err = SnapshotTable::parse_reader(&mut Trickle(bad.as_bytes(), 5), 10).unwrap();
        assert_eq!(err_line(err).0, 8);
    }

    /// A line of the current dataset with a newline where a tab belongs is an error of that
    /// line, also on the fast path (which must not read the next line as its columns).
    #[test]
    fn newline_in_place_of_a_tab_is_an_error() {
        for bad in ["p/a@y\n1\t2\t3\n", "p/a@y\t1\n2\t3\n", "p/a@y\t1\t2\n3\n"] {
            let data = format!("p/a@x\t1\t2\t3\n{bad}");
            let result = SnapshotTable::parse(data.as_bytes()).map(|t| t.len());
            assert_eq!(err_line(result).0, 2, "{bad:?}");
        }
    }

    /// The run view of a table: one per dataset listed together, none for one interleaved
    /// with another; names compared by bytes and length.
    #[test]
    fn runs_lengths_and_names() {
        let empty = SnapshotTable::parse(b"").unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(SnapshotRun::default().is_empty());
        let t = SnapshotTable::parse(
            b"p/a@x\t1\t2\t3\np/a@yy\t4\t5\t6\np/b@yy\t7\t8\t9\np/b@x\t1\t1\t1\np/b@zz\t2\t2\t2\n",
        )
        .unwrap();
        assert!(!t.is_empty() && t.len() == 5);
        let (a, b) = (t.snapshot_run(0).unwrap(), t.snapshot_run(1).unwrap());
        assert!(!a.is_empty() && a.len() == 2 && b.len() == 3);
        assert_eq!((a.name(1), a.guid(1), a.createtxg(1)), ("yy", 4, 5));
        assert!(a.same_name(1, &b, 0) && a.same_name(0, &b, 1));
        assert!(!a.same_name(0, &b, 0), "x / yy");
        assert!(!a.same_name(1, &b, 2), "yy / zz: same length");
        let t = SnapshotTable::parse(b"p/a@x\t1\t2\t3\np/b@x\t1\t2\t3\np/a@y\t1\t2\t3\n").unwrap();
        assert!(t.snapshot_run(0).is_none(), "interleaved");
        assert_eq!(t.snapshot_run(1).unwrap().name(0), "x");
    }

    /// The disks of a guest, snapshotted together, store each snapshot name once: the name
    /// at a position of a dataset's run is shared with that position of the run before, the
    /// last position included; a different name there is stored.
    #[test]
    fn runs_share_names_with_the_run_before() {
        let line = |d: &str, n: &str| format!("p/{d}@{n}\t1\t2\t3\n");
        let same: String = ["a", "b", "c"]
            .iter()
            .flat_map(|d| [line(d, "s1"), line(d, "s22")])
            .collect();
        let t = SnapshotTable::parse(same.as_bytes()).unwrap();
        assert_eq!(t.names, "s1s22");
        assert_eq!(
            t.snapshots(2).map(|s| s.name).collect::<Vec<_>>(),
            ["s1", "s22"]
        );
        let other = [
            line("a", "s1"),
            line("a", "s22"),
            line("b", "s1"),
            line("b", "s33"),
        ]
        .concat();
        let t = SnapshotTable::parse(other.as_bytes()).unwrap();
        assert_eq!(t.names, "s1s22s33");
        assert_eq!(
            t.snapshots(1).map(|s| s.name).collect::<Vec<_>>(),
            ["s1", "s33"]
        );
    }

    /// A line longer than the read buffer (256 KiB) grows the buffer instead of splitting it.
    #[test]
    fn streamed_parse_takes_a_line_longer_than_its_buffer() {
        let long = "s".repeat(600_000);
        let data = format!("pool/d@{long}\t1\t2\t3\npool/d@b\t4\t5\t6\n");
        let streamed = SnapshotTable::parse_reader(&mut Trickle(data.as_bytes(), 50_000), 0)
            .unwrap()
            .unwrap();
        let names: Vec<&str> = streamed.snapshots(0).map(|s| s.name).collect();
        assert_eq!(names, [long.as_str(), "b"]);
        assert_eq!(streamed.snapshots(0).map(|s| s.creation).sum::<i64>(), 9);
    }

    /// A reader interrupted by a signal before every piece, then failing for real once
    /// `fail_after` pieces are out (if set).
    struct Flaky<'a> {
        inner: Trickle<'a>,
        interrupt: bool,
        fail_after: Option<usize>,
    }

    impl std::io::Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            match &mut self.fail_after {
                Some(0) => return Err(std::io::Error::from_raw_os_error(libc::EIO)),
                Some(n) => *n -= 1,
                None => {}
            }
            self.inner.read(buf)
        }
    }

    /// EINTR is retried (the listing is whole); any other read error is the caller's, at
    /// once, however often it would come again.
    #[test]
    fn streamed_parse_retries_interrupts_and_returns_errors() {
        let whole = SnapshotTable::parse(LIST.as_bytes()).unwrap();
        let mut reader = Flaky {
            inner: Trickle(LIST.as_bytes(), 9),
            interrupt: false,
            fail_after: None,
        };
        let streamed = SnapshotTable::parse_reader(&mut reader, 0)
            .unwrap()
            .unwrap();
        assert_eq!(whole.len(), streamed.len());
        assert!(whole.snapshots(0).eq(streamed.snapshots(0)));
        let mut reader = Flaky {
            inner: Trickle(LIST.as_bytes(), 9),
            interrupt: false,
            fail_after: Some(2),
        };
        match SnapshotTable::parse_reader(&mut reader, 0) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
            Ok(other) => panic!("{other:?}"),
        }
        assert_eq!(reader.fail_after, Some(0));
    }

    #[test]
    fn zfs_get_three_columns() {
        let data = b"pool/a\tguid\t42\npool/a\trefquota\t0\npool/b@s\tguid\t7\npool/a\tguid\t43\n";
        let out = parse_zfs_get(data).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].1,
            vec![
                ("guid".to_owned(), "43".to_owned()),
                ("refquota".to_owned(), "0".to_owned())
            ]
        );
        assert_eq!(
            out[1],
            ("pool/b@s".to_owned(), vec![("guid".into(), "7".into())])
        );
        assert_eq!(parse_zfs_get(b"x\ty\t\n").unwrap()[0].1[0].1, "");
        let (line, _) = err_line(parse_zfs_get(b"x\ty\tz\nonly-two\tcols\n"));
        assert_eq!(line, 2);
    }

    #[test]
    fn zfs_get_refuses_an_empty_name_or_property() {
        for data in [&b"a\tguid\t1\n\tguid\t2\n"[..], b"a\tguid\t1\na\t\t2\n"] {
            let (line, msg) = err_line(parse_zfs_get(data));
            assert_eq!((line, msg.as_str()), (2, "empty name or property column"));
        }
    }

    /// Lines the fast path must not take for good ones: each is one field short, long, empty
    /// or out of range, and the message is the general parser's.
    #[test]
    fn near_miss_lines_are_errors() {
        let cases: [(&[u8], &str); 8] = [
            // 3 columns, and the name ends in a digit (a field started one byte early
            // would read "1", "5", "6" as guid, createtxg, creation).
            (b"a@1\t5\t6\n", "expected 4 tab-separated columns"),
            (b"a@1\t1\t2\t3\t4\n", "expected 4 tab-separated columns"),
            (b"a@1\t\t1\t1\n", "invalid guid ''"),
            // All three empty, or all three without a single digit: no field is a number.
            (b"a@1\t\t\t\n", "invalid guid ''"),
            (b"a@1\tx\ty\tz\n", "invalid guid 'x'"),
            (b"a@1\t1\t\t1\n", "invalid createtxg ''"),
            (
                b"a@\t1\t1\t1\n",
                "expected a snapshot name <dataset>@<snapshot>, got 'a@'",
            ),
            (
                b"a@1\t1\t1\t9223372036854775808\n",
                "creation '9223372036854775808' out of range",
            ),
        ];
        for (data, want) in cases {
            let (line, msg) = err_line(parse_snapshot_list(data));
            assert_eq!(line, 1);
            assert!(msg.contains(want), "{msg}");
        }
        // The largest creation that fits is taken.
        let out = parse_snapshot_list(b"a@1\t1\t1\t9223372036854775807\n").unwrap();
        assert_eq!(out[0].1[0].creation, i64::MAX);
    }

    /// Messages quote at most 80 bytes of a line, cut at a character boundary.
    #[test]
    fn messages_clip_long_lines() {
        let long = "x".repeat(200);
        let (_, msg) = err_line(parse_snapshot_list(long.as_bytes()));
        assert!(
            msg.ends_with(&format!(": '{}...'", "x".repeat(80))),
            "{msg}"
        );
        // 'é' takes bytes 79 and 80: the cut falls before it.
        let wide = format!("{}\u{e9}{}", "x".repeat(79), "y".repeat(50));
        let (_, msg) = err_line(parse_snapshot_list(wide.as_bytes()));
        assert!(
            msg.ends_with(&format!(": '{}...'", "x".repeat(79))),
            "{msg}"
        );
        // Exactly 80 bytes: quoted whole.
        let (_, msg) = err_line(parse_snapshot_list("z".repeat(80).as_bytes()));
        assert!(msg.ends_with(&format!(": '{}'", "z".repeat(80))), "{msg}");
    }

    /// The obvious implementation, line by line through the general (slow) line parser.
    fn reference(data: &str) -> Result<Vec<(String, Vec<Snapshot>)>> {
        let mut out: Vec<(String, Vec<Snapshot>)> = Vec::new();
        for (lineno, line) in data.split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let (dataset, snap) = parse_list_line_slow(line, lineno + 1)?;
            match out.iter_mut().find(|(d, _)| d == dataset) {
                Some((_, snaps)) => snaps.push(snap.to_snapshot()),
                None => out.push((dataset.to_owned(), vec![snap.to_snapshot()])),
            }
        }
        Ok(out)
    }

    /// Lines that are mostly well-formed (so whole listings often are), with every way to be
    /// slightly wrong mixed in.
    fn listing() -> impl Strategy<Value = String> {
        fn mostly<T: Clone + std::fmt::Debug + 'static>(
            good: Vec<T>,
            odd: Vec<T>,
        ) -> BoxedStrategy<T> {
            prop_oneof![12 => prop::sample::select(good), 1 => prop::sample::select(odd)].boxed()
        }
        let dataset = mostly(
            vec!["p/a", "p/a/b", "p/ab", "p", "p/\u{e9}"],
            vec!["", "p/a@x", "p/a\r"],
        );
        let at = mostly(vec!["@"], vec!["", "@@"]);
        let name = mostly(
            vec![
                "s",
                "__replicate_100-0_1700000000__",
                "autosnap_2023-11-14_22:00:00_hourly",
                "\u{e9}t\u{e9}",
            ],
            vec!["", "x@y", "a b", "a\tb", "s\r"],
        );
        let number = prop_oneof![
            30 => any::<u64>().prop_map(|n| n.to_string()),
            10 => (0u64..100_000).prop_map(|n| n.to_string()),
            1 => (0u64..100).prop_map(|n| format!("000{n}")),
            1 => prop::sample::select(vec![
                "", "-1", "+1", "1 ", "18446744073709551615", "18446744073709551616",
                "9223372036854775807", "9223372036854775808", "99999999999999999999", "1x", "0",
            ]).prop_map(str::to_owned),
        ];
        let count = prop_oneof![30 => Just(3usize), 1 => 1usize..6];
        let numbers = count.prop_flat_map(move |n| prop::collection::vec(number.clone(), n));
        let end = mostly(vec!["\n"], vec!["\n\n", "", "\r\n"]);
        let line = (dataset, at, name, numbers, end)
            .prop_map(|(d, at, n, nums, end)| format!("{d}{at}{n}\t{}{end}", nums.join("\t")));
        prop::collection::vec(line, 0..12).prop_map(|lines| lines.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn parser_agrees_with_reference(data in listing(), piece in 1usize..40) {
            let want = reference(&data);
            let got = parse_snapshot_list(data.as_bytes());
            let streamed = SnapshotTable::parse_reader(&mut Trickle(data.as_bytes(), piece), 0).unwrap();
            match want {
                Ok(want) => {
                    prop_assert!(data.is_empty() || !want.is_empty());
                    prop_assert_eq!(got.as_ref().ok(), Some(&want));
                    let streamed = streamed.unwrap();
                    let streamed: Vec<(String, Vec<Snapshot>)> = (0..streamed.dataset_count())
                        .map(|i| (streamed.dataset_name(i).to_owned(), streamed.snapshots(i).map(|s| s.to_snapshot()).collect()))
                        .collect();
                    prop_assert_eq!(streamed, want);
                }
                Err(Error::Parse { line, message }) => {
                    let (gl, gm) = err_line(got);
                    prop_assert_eq!((gl, gm), (line, message.clone()));
                    prop_assert_eq!(err_line(streamed), (line, message));
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
