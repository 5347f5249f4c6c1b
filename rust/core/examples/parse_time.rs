//! Time the snapshot-list parser and the table comparison on generated listings (the same
//! path `SnapshotTable.from_fd` + `compare` takes):
//! `cargo run --release --example parse_time LOCAL [REMOTE] [ROUNDS]`.
use std::fs::File;
use std::time::{Duration, Instant};

use pverep_core::diff::compare_tables;
use pverep_core::snapshots::SnapshotTable;

fn parse_file(path: &str) -> SnapshotTable {
    let mut file = File::open(path).expect("open");
    let hint = usize::try_from(file.metadata().expect("stat").len()).expect("size");
    SnapshotTable::parse_reader(&mut file, hint)
        .expect("read")
        .expect("parse")
}

/// (user, system) CPU time of this process so far.
fn cpu() -> (Duration, Duration) {
    // SAFETY: getrusage only writes the struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Run `f`, print its wall, user and system time.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (u, s) = cpu();
    let t = Instant::now();
    let out = f();
    let wall = t.elapsed();
    let (u2, s2) = cpu();
    print!(
        "{what} {:.1} ms (user {:.1} sys {:.1})  ",
        ms(wall),
        ms(u2 - u),
        ms(s2 - s)
    );
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let local = args
        .first()
        .expect("usage: parse_time LOCAL [REMOTE] [ROUNDS]");
    let remote = args.get(1).unwrap_or(local);
    let rounds: usize = args.get(2).map_or(3, |r| r.parse().expect("ROUNDS"));
    for _ in 0..rounds {
        let l = timed("parse local", || parse_file(local));
        let r = timed("parse remote", || parse_file(remote));
        let common: usize = timed("compare", || {
            compare_tables(&l, &r).iter().map(|c| c.common).sum()
        });
        timed("free", || drop((l, r)));
        println!("({common} common)");
    }
}
