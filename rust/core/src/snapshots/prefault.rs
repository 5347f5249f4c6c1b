//! Populating the memory a table is about to fill 1 MiB at a time, with one `madvise` call,
//! instead of taking one page fault per 4 KiB page as the parser first writes to it: the
//! faults are a large part of the cost of parsing a big listing (here about 2 µs per page,
//! 0.5 ms per MB), and populating in bulk saves about a quarter of that.
//!
//! Purely an optimisation: the contents of the memory do not change, and where the call is
//! not available (other systems, Linux before 5.14) the pages are simply faulted in later.

/// Bytes populated per call.
const STEP: usize = 1 << 20;
const PAGE: usize = 4096;

/// How far one vector's spare capacity has been populated.
#[derive(Debug, Default)]
pub struct Prefault {
    /// Address of the vector's buffer when last populated (a reallocation starts over).
    base: usize,
    /// Populated up to this address.
    done: usize,
}

impl Prefault {
    /// Make sure at least the next `ahead` bytes after the `used` bytes of the buffer at
    /// `base` are populated (as far as its `capacity` in bytes goes), populating at least
    /// `STEP` bytes whenever it does anything.
    #[inline]
    pub fn ahead(&mut self, base: *const u8, used: usize, capacity: usize, ahead: usize) {
        let base = base as usize;
        let (used, capacity) = (base + used, base + capacity);
        if base != self.base {
            (self.base, self.done) = (base, used);
        }
        let want = (used + ahead).min(capacity);
        if want <= self.done {
            return;
        }
        let start = self.done.max(used).next_multiple_of(PAGE);
        let end = (start + STEP.max(want.saturating_sub(start))).min(capacity / PAGE * PAGE);
        if end > start {
            populate(start, end - start);
        }
        self.done = end.max(want);
    }
}

impl Prefault {
    /// Bytes populated beyond the first `used` bytes of the buffer at `base`.
    #[cfg(test)]
    pub fn beyond(&self, base: *const u8, used: usize) -> usize {
        assert_eq!(self.base, base as usize, "buffer moved");
        self.done.saturating_sub(self.base + used)
    }
}

#[cfg(target_os = "linux")]
fn populate(addr: usize, len: usize) {
    // SAFETY: [addr, addr+len) is page-aligned spare capacity of a live Vec owned by the
    // caller; MADV_POPULATE_WRITE only maps pages in, it never changes their contents. An
    // error (e.g. EINVAL before Linux 5.14) just means the pages fault in later as usual.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn populate(_addr: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populates_ahead_and_keeps_contents() {
        let mut v: Vec<u64> = Vec::with_capacity(1 << 20);
        v.extend(0..1000);
        let mut p = Prefault::default();
        let ahead = |p: &mut Prefault, v: &Vec<u64>, n| {
            p.ahead(v.as_ptr().cast(), v.len() * 8, v.capacity() * 8, n)
        };
        ahead(&mut p, &v, 4096);
        assert!(p.done >= p.base + 1000 * 8 + 4096);
        assert!(p.done <= p.base + v.capacity() * 8);
        let done = p.done;
        ahead(&mut p, &v, 16);
        assert_eq!(p.done, done, "nothing more to do");
        v.extend(1000..(1 << 20));
        ahead(&mut p, &v, 1 << 30);
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
        // a reallocation starts over
        v.push(0);
        ahead(&mut p, &v, 8);
        assert_eq!(p.base, v.as_ptr() as usize);
    }

    /// Which of the pages in [addr, addr + len) are mapped in (addr page-aligned).
    fn resident(addr: usize, len: usize) -> Vec<bool> {
        let mut map = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: mincore only reports on the pages; `map` has one byte per page.
        let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, map.as_mut_ptr()) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        map.iter().map(|m| m & 1 != 0).collect()
    }

    /// The populated range, exactly: from the first page boundary after what is used, at
    /// least 1 MiB (STEP), never past the last whole page of the capacity; and the pages are
    /// really mapped in (a fresh anonymous mapping has none; an allocator's block could be
    /// recycled, so the buffer is mapped here, at an offset like a heap block's header).
    #[test]
    fn populates_whole_pages_of_the_spare_capacity() {
        // The step the module promises (1 MiB), written out: not the constant under test.
        const MIB: usize = 1 << 20;
        let cap = 8 << 20;
        // SAFETY: a private anonymous mapping, unmapped at the end.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap + PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let base = map as usize + 16;
        let ptr = base as *const u8;
        let first = base.next_multiple_of(PAGE);
        let last = (base + cap) / PAGE * PAGE;
        assert!(
            !resident(first, 2 * MIB).iter().any(|r| *r),
            "a fresh mapping"
        );
        let mut p = Prefault::default();
        p.ahead(ptr, 0, cap, 100);
        assert_eq!(p.done, first + MIB);
        assert_eq!(p.beyond(ptr, 0), first + MIB - base);
        assert!(resident(first, MIB).iter().all(|r| *r));
        assert!(!resident(first + MIB, MIB).iter().any(|r| *r));

        // half a MiB used, 3 MiB ahead: from where it stopped, the
        // whole distance in one call (more than a step).
        p.ahead(ptr, MIB / 2, cap, 3 << 20);
        assert_eq!(p.done, base + MIB / 2 + (3 << 20));
        let end = p.done / PAGE * PAGE;
        assert!(resident(first, end - first).iter().all(|r| *r));

        // up to the end, from what is used (the caller has written that): whole pages only,
        // `done` at the capacity
        p.ahead(ptr, 6 << 20, cap, 1 << 30);
        assert_eq!(p.done, base + cap);
        let from = (base + (6 << 20)).next_multiple_of(PAGE);
        assert!(resident(from, last - from).iter().all(|r| *r));
        assert!(!resident(end + PAGE, from - end - PAGE).iter().any(|r| *r));
        if last < base + cap {
            assert_eq!(
                resident(last, PAGE),
                [false],
                "the partial last page is left alone"
            );
        }
        // SAFETY: the mapping made above, no longer used.
        assert_eq!(unsafe { libc::munmap(map, cap + PAGE) }, 0);
    }
}
