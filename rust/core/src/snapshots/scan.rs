//! Scanning for the `zfs list` hot loop: a million lines must parse in a few tens of
//! milliseconds, and the fields are short (names ~30 bytes, numbers 4–20 digits), too short
//! for a search call per field to pay for its setup, too long for a byte loop. Delimiters are
//! found 64 bytes at a time (SSE2 on x86_64), digits converted 8 at a time (SWAR).
//!
//! Word reads past either end of the input see zero bytes, which are neither digits nor
//! delimiters.

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

/// Value of 8 decimal digit values (0–9, one per byte, most significant in the lowest byte).
#[inline(always)]
fn combine8(mut v: u64) -> u64 {
    // Pairs, then quads, then the octet; no lane overflows into its neighbour
    // (9·10 < 2⁸, 99·100 < 2¹⁶, 9999·10⁴ < 2³²).
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    (v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff
}

const E8: u64 = 100_000_000;

/// High bit set in every byte of `w` equal to `byte`, exactly (no borrows between bytes).
#[inline(always)]
fn eq_bytes(w: u64, byte: u8) -> u64 {
    let x = w ^ (ONES * u64::from(byte));
    !(((x & !HIGHS) + !HIGHS) | x) & HIGHS
}

/// Positions of the first four `\t` or `\n` bytes at or after `p`; a missing fourth is
/// `b.len()` (a last line without newline). `None` if there are fewer than three.
///
/// All words are loaded and tested independently of each other's contents, so the search
/// does not wait for one field to be parsed before looking at the next (as a field-by-field
/// scan would): the line's layout is known before any number is parsed.
#[inline(always)]
pub fn delimiters4(b: &[u8], mut p: usize) -> Option<[usize; 4]> {
    let mut out = [b.len(); 4];
    let mut found = 0;
    while p < b.len() {
        let (mut hits, width) = match b.get(p..p + 64) {
            Some(block) => (delimiter_bits(block.try_into().expect("64 bytes")), 64),
            None => (word_bits(load8(b, p)), 8),
        };
        while hits != 0 {
            out[found] = p + hits.trailing_zeros() as usize;
            found += 1;
            if found == 4 {
                return Some(out);
            }
            hits &= hits - 1;
        }
        p += width;
    }
    (found == 3).then_some(out)
}

/// Bit i set iff `block[i]` is `\t` or `\n`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn delimiter_bits(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut bits = 0u64;
    for (i, part) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of x86_64 itself (no runtime detection needed); `part` is 16
        // readable bytes and the load has no alignment requirement.
        let mask = unsafe {
            let v = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
            let tab = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\t' as i8));
            let nl = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8));
            _mm_movemask_epi8(_mm_or_si128(tab, nl))
        };
        bits |= u64::from(mask as u16) << (16 * i);
    }
    bits
}

/// Bit i set iff `block[i]` is `\t` or `\n`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn delimiter_bits(block: &[u8; 64]) -> u64 {
    delimiter_bits_portable(block)
}

/// [`delimiter_bits`] for any architecture (and the x86_64 version's test reference).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn delimiter_bits_portable(block: &[u8; 64]) -> u64 {
    let mut bits = 0u64;
    for (i, w) in block.chunks_exact(8).enumerate() {
        bits |= word_bits(load8(w, 0)) << (8 * i);
    }
    bits
}

/// Bit i set iff byte i of `w` is `\t` or `\n`.
#[inline(always)]
fn word_bits(w: u64) -> u64 {
    let m = eq_bytes(w, b'\t') | eq_bytes(w, b'\n');
    // Gather the eight high bits into the top byte.
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// The `m` (1..=8) bytes ending at `end` as digit values in the top bytes of a word (zeros
/// below, which count as leading zeros), or `None` if one of them is not a digit.
#[inline(always)]
fn digits_ending_at(b: &[u8], end: usize, m: usize) -> Option<u64> {
    let w = match end.checked_sub(8) {
        Some(start) => load8(b, start),
        None => {
            let mut w = [0u8; 8];
            w[8 - end..].copy_from_slice(&b[..end]);
            u64::from_le_bytes(w)
        }
    };
    let x = (w ^ (ONES * u64::from(b'0'))) & (!0u64 << (8 * (8 - m)));
    let non_digit = (((x & !HIGHS) + ONES * 0x76) | x) & HIGHS;
    (non_digit == 0).then(|| combine8(x))
}

/// The value of `b[start..end]` if it is 1 to 20 ASCII digits and fits a `u64`. Longer
/// runs (leading zeros) are left to the general parser. The (up to three) 8-digit groups
/// are independent of each other.
#[inline(always)]
pub fn parse_field(b: &[u8], start: usize, end: usize) -> Option<u64> {
    let n = end.checked_sub(start)?;
    if n == 0 || n > 20 {
        return None;
    }
    let low = digits_ending_at(b, end, n.min(8))?;
    if n <= 8 {
        return Some(low);
    }
    let mid = digits_ending_at(b, end - 8, (n - 8).min(8))?;
    let below = mid * E8 + low;
    if n <= 16 {
        return Some(below);
    }
    let high = digits_ending_at(b, end - 16, n - 16)?;
    high.checked_mul(E8 * E8)?.checked_add(below)
}

/// `a == b` for slices of equal length, 8 bytes at a time (the last word may overlap the one
/// before), without a library call: names are short and compared a million times.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let mut i = 0;
    while i + 8 < n {
        if load8(a, i) != load8(b, i) {
            return false;
        }
        i += 8;
    }
    load8(a, n - 8) == load8(b, n - 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields() {
        let b = b"x12345678901234567890\t18446744073709551616\t0\t00000000000000000000042\t1a\t";
        assert_eq!(parse_field(b, 1, 21), Some(12_345_678_901_234_567_890));
        assert_eq!(parse_field(b, 22, 42), None);
        assert_eq!(parse_field(b, 43, 44), Some(0));
        assert_eq!(parse_field(b, 45, 68), None);
        assert_eq!(parse_field(b, 69, 71), None);
        assert_eq!(parse_field(b, 69, 69), None);
        assert_eq!(parse_field(b"7", 0, 1), Some(7));
        // signs are not digits, though std's u64 parser accepts a leading '+'
        assert_eq!(parse_field(b"+0", 0, 2), None);
        assert_eq!(parse_field(b"+12345678", 0, 9), None);
        assert_eq!(parse_field(b"-1", 0, 2), None);
        assert_eq!(delimiters4(b"a\tb\tc\td\ne", 0), Some([1, 3, 5, 7]));
        assert_eq!(delimiters4(b"a\tb\tc\td", 0), Some([1, 3, 5, 7]));
        assert_eq!(delimiters4(b"a\tb\nc", 0), None);
    }

    /// Every byte value in every position of fields of every length (and just before the
    /// field, where the word loads reach but must not look): the digit test is exact, also
    /// for bytes that are not UTF-8 text and for those whose low bits look like a digit.
    #[test]
    fn every_byte_in_every_position_of_a_field() {
        for len in 1..=20usize {
            for pos in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'1'; len + 1];
                    b[1..]
                        .iter_mut()
                        .zip(b"12345678901234567890")
                        .for_each(|(x, d)| *x = *d);
                    b[1 + pos] = c;
                    let want = if c.is_ascii_digit() {
                        std::str::from_utf8(&b[1..]).unwrap().parse::<u64>().ok()
                    } else {
                        None
                    };
                    assert_eq!(parse_field(&b, 1, len + 1), want, "{b:?}");
                }
            }
            for c in 0..=255u8 {
                let mut b = vec![c; 9];
                b.extend(std::iter::repeat_n(b'3', len));
                let want = std::str::from_utf8(&b[9..]).unwrap().parse::<u64>().ok();
                assert_eq!(parse_field(&b, 9, 9 + len), want, "{b:?}");
            }
        }
    }

    /// Every byte value next to every other kind of byte, in blocks and in single words:
    /// only '\t' and '\n' are delimiters, whatever their neighbours (no borrow or carry
    /// crosses a byte).
    #[test]
    fn every_byte_value_is_classified() {
        let kinds = [b'\t', b'\n', 0, 0x7f, 0x80, 0x89, 0x8a, 0xff, b'a', b'0'];
        for c in 0..=255u8 {
            for (k, d) in kinds.iter().enumerate() {
                let mut block = [0u8; 64];
                for (i, x) in block.iter_mut().enumerate() {
                    *x = match (i + k) % 3 {
                        0 => c,
                        1 => *d,
                        _ => c ^ 0x80,
                    };
                }
                let want = block
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == b'\t' || **c == b'\n')
                    .fold(0u64, |m, (i, _)| m | 1 << i);
                assert_eq!(delimiter_bits(&block), want, "{block:?}");
                assert_eq!(delimiter_bits_portable(&block), want, "{block:?}");
                for i in 0..8 {
                    let word = word_bits(load8(&block, i * 8));
                    assert_eq!(word, (want >> (i * 8)) & 0xff, "{block:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn same_bytes_is_eq(a in prop::collection::vec(0u8..3, 0..40), b in prop::collection::vec(0u8..3, 0..40)) {
            prop_assert_eq!(same_bytes(&a, &b), a == b);
            prop_assert!(same_bytes(&a, &a.clone()));
        }

        #[test]
        fn delimiter_bits_agree(block in prop::array::uniform32(prop::sample::select(vec![b'a', b'\t', b'\n', b'9', 0x89, 0x8a])),
                                rest in prop::array::uniform32(prop::sample::select(vec![b'a', b'\t', b'\n']))) {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&block);
            b[32..].copy_from_slice(&rest);
            let want = b.iter().enumerate()
                .filter(|(_, c)| **c == b'\t' || **c == b'\n')
                .fold(0u64, |m, (i, _)| m | 1 << i);
            prop_assert_eq!(delimiter_bits(&b), want);
            prop_assert_eq!(delimiter_bits_portable(&b), want);
        }

        #[test]
        fn field_agrees_with_std(s in "[0-9]{0,25}|[0-9]{0,9}[^0-9][0-9]{0,12}|[+-][0-9]{0,20}", pad in 0usize..12) {
            let text = format!("{}{s}\t", "x".repeat(pad));
            // The reference is std's parser restricted to what zfs prints: digits only. std
            // alone also takes a leading '+' ("+0"), which the field parser rightly refuses.
            let digits_only = s.bytes().all(|c| c.is_ascii_digit());
            let want = if s.len() > 20 || !digits_only { None } else { s.parse::<u64>().ok() };
            prop_assert_eq!(parse_field(text.as_bytes(), pad, pad + s.len()), want);
        }

        #[test]
        fn delimiters_agree_with_positions(s in "[a-z0-9\t\n]{0,200}", p in 0usize..200) {
            let b = s.as_bytes();
            let p = p.min(b.len());
            let mut found: Vec<usize> = (p..b.len()).filter(|&i| b[i] == b'\t' || b[i] == b'\n').take(4).collect();
            let want = match found.len() {
                4 => Some([found[0], found[1], found[2], found[3]]),
                3 => { found.push(b.len()); Some([found[0], found[1], found[2], found[3]]) }
                _ => None,
            };
            prop_assert_eq!(delimiters4(b, p), want);
        }
    }
}
