//! Word-at-a-time (SWAR) scanning for the `zfs list` hot loop: a million lines must parse in
//! a few tens of milliseconds, and the fields are short (names ~30 bytes, numbers 4–20
//! digits), too short for SIMD searches to pay for their setup, too long for a byte loop.
//!
//! Every function reads whole 8-byte words; past the end of the input it sees zero bytes,
//! which are neither digits nor delimiters.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The 8 bytes at `p` as a little-endian word (first byte lowest), zero-padded past the end.
#[inline(always)]
fn load8(b: &[u8], p: usize) -> u64 {
    match b.get(p..p + 8) {
        Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
        None => {
            let mut w = [0u8; 8];
            let rest = b.get(p..).unwrap_or_default();
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
    }
}

/// High bit set in every byte of `w` that is zero. Borrows can only set bits above the
/// first zero byte, so the lowest set bit is exact (all this module needs).
#[inline(always)]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// Index of the first `\t` or `\n` at or after `p`, or `b.len()` if there is none.
#[inline(always)]
pub fn find_tab_or_newline(b: &[u8], mut p: usize) -> usize {
    while p < b.len() {
        let w = load8(b, p);
        let hit =
            zero_bytes(w ^ (ONES * u64::from(b'\t'))) | zero_bytes(w ^ (ONES * u64::from(b'\n')));
        if hit != 0 {
            return (p + (hit.trailing_zeros() / 8) as usize).min(b.len());
        }
        p += 8;
    }
    b.len()
}

/// Value of 8 decimal digit values (0–9, one per byte, most significant in the lowest byte).
#[inline(always)]
fn combine8(mut v: u64) -> u64 {
    // Pairs, then quads, then the octet; no lane overflows into its neighbour
    // (9·10 < 2⁸, 99·100 < 2¹⁶, 9999·10⁴ < 2³²).
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    (v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff
}

const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Parse the run of ASCII digits starting at `p`: `Some((value, end))` with `end` the index
/// of the first non-digit (`end == p`: no digits), `None` if the value overflows `u64`.
/// Leading zeros are fine, as in [`str::parse`].
#[inline(always)]
pub fn parse_digits(b: &[u8], mut p: usize) -> Option<(u64, usize)> {
    let mut acc: u64 = 0;
    loop {
        // Digits become 0..=9; anything else has a byte ≥ 10.
        let x = load8(b, p) ^ (ONES * u64::from(b'0'));
        let non_digit = (((x & !HIGHS) + ONES * 0x76) | x) & HIGHS;
        let k = (non_digit.trailing_zeros() / 8) as usize; // 8 when all are digits
        if k > 0 {
            // Move the k digits to the top so the zeros below act as leading zeros.
            let digits = combine8(x << (8 * (8 - k)));
            acc = acc.checked_mul(POW10[k])?.checked_add(digits)?;
            p += k;
        }
        if k < 8 {
            return Some((acc, p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digits() {
        let cases: &[(&str, Option<(u64, usize)>)] = &[
            ("", Some((0, 0))),
            ("x", Some((0, 0))),
            ("7\t", Some((7, 1))),
            ("12345678", Some((12_345_678, 8))),
            ("123456789\n", Some((123_456_789, 9))),
            ("18446744073709551615", Some((u64::MAX, 20))),
            ("18446744073709551616", None),
            ("99999999999999999999", None),
            ("000000000000000000000000042\t", Some((42, 27))),
            ("12:3", Some((12, 2))),
            ("1/", Some((1, 1))),
        ];
        for (s, want) in cases {
            assert_eq!(parse_digits(s.as_bytes(), 0), *want, "{s:?}");
        }
    }

    #[test]
    fn delimiters() {
        assert_eq!(find_tab_or_newline(b"", 0), 0);
        assert_eq!(find_tab_or_newline(b"abc", 0), 3);
        assert_eq!(find_tab_or_newline(b"abcdefghij\tk", 0), 10);
        assert_eq!(find_tab_or_newline(b"a\nb\tc", 0), 1);
        assert_eq!(find_tab_or_newline(b"a\nb\tc", 2), 3);
        assert_eq!(find_tab_or_newline("\u{0109}\u{010a}x\t".as_bytes(), 0), 5);
    }

    proptest! {
        #[test]
        fn digits_agree_with_std(s in "[0-9]{0,25}[^0-9]?[0-9]{0,3}", pad in 0usize..9) {
            let text = format!("{}{s}", "x".repeat(pad));
            let run = s.bytes().take_while(u8::is_ascii_digit).count();
            let want = if run == 0 { Some((0, pad)) } else {
                s[..run].parse::<u64>().ok().map(|v| (v, pad + run))
            };
            prop_assert_eq!(parse_digits(text.as_bytes(), pad), want);
        }

        #[test]
        fn delimiter_agrees_with_position(s in "[a-z\t\n\u{80}-\u{3ff}]{0,40}", p in 0usize..40) {
            let b = s.as_bytes();
            let p = p.min(b.len());
            let want = b[p..].iter().position(|&c| c == b'\t' || c == b'\n').map_or(b.len(), |i| p + i);
            prop_assert_eq!(find_tab_or_newline(b, p), want);
        }
    }
}
