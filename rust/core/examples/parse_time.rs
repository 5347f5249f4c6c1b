//! Time the snapshot-list parser on a file: `cargo run --release --example parse_time FILE`.
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: parse_time FILE");
    let data = std::fs::read(path).expect("read");
    for _ in 0..3 {
        let t = Instant::now();
        let ok = std::str::from_utf8(&data).is_ok();
        let t_utf8 = t.elapsed();
        let t = Instant::now();
        let lines = memchr::memchr_iter(b'\n', &data).count();
        let t_count = t.elapsed();
        let t = Instant::now();
        let table = pverep_core::snapshots::SnapshotTable::parse(&data).expect("parse");
        let t_parse = t.elapsed();
        println!(
            "utf8 {ok} {t_utf8:?}  count {lines} {t_count:?}  parse {} {t_parse:?}",
            table.len()
        );
    }
}
