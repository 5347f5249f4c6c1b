//! The data pump: copy a readable fd to a writable fd until EOF, optionally rate-limited, with
//! progress counters readable while it runs, a cancel token and a stall watchdog.
//!
//! **fd ownership:** the pump never closes the fds it is given; the caller owns and closes
//! them (and must keep them open until `run` returns). While `run` executes, both fds are
//! switched to non-blocking mode (so the watchdog and cancellation can act between system
//! calls); their original file status flags are restored before `run` returns.
//!
//! Fast path: `splice(2)` when either side is a pipe (no copy through user space), also under
//! a rate limit; otherwise, or if the kernel refuses splice for a pair of files, a read/write
//! loop. Pipes the pump is given are enlarged to `pipe_size` (default 256 KiB): across CPUs a
//! 64 KiB pipe costs a wake-up per 64 KiB, while on one CPU bigger pipes start to cost cache.
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::budget::Budget;
use crate::error::{Error, Result, Side};
use crate::ratelimit::TokenBucket;

pub const DEFAULT_PIPE_SIZE: usize = 256 << 10;
pub const DEFAULT_CHUNK: usize = 1 << 20;
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct PumpConfig {
    /// Bytes per second; None = unlimited.
    pub rate: Option<f64>,
    /// Token-bucket burst in bytes (see [`TokenBucket::new`]).
    pub burst: Option<u64>,
    /// Fail with [`Error::Stalled`] when no byte moved for this long.
    pub stall_timeout: Option<Duration>,
    /// Enlarge pipes among the fds to at least this many bytes; 0 leaves them alone.
    pub pipe_size: usize,
    /// Largest single transfer (splice length / buffer size).
    pub chunk: usize,
    /// How often the hook runs and the current rate is refreshed.
    pub tick: Duration,
    /// A bandwidth budget shared with other pumps (on top of `rate`).
    pub budget: Option<Arc<Budget>>,
}

impl Default for PumpConfig {
    fn default() -> Self {
        PumpConfig {
            rate: None,
            burst: None,
            stall_timeout: None,
            pipe_size: DEFAULT_PIPE_SIZE,
            chunk: DEFAULT_CHUNK,
            tick: DEFAULT_TICK,
            budget: None,
        }
    }
}

/// A snapshot of the progress counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Bytes delivered to the destination.
    pub bytes: u64,
    /// Time since `run` started (frozen when it ends).
    pub elapsed: Duration,
    /// Bytes/s over the last tick while running; the average over the whole run once done.
    pub rate: f64,
}

/// Progress counters, shared with any thread that wants to watch.
#[derive(Debug)]
pub struct Progress {
    bytes: AtomicU64,
    rate_bits: AtomicU64,
    start: OnceLock<Instant>,
    final_ns: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            bytes: AtomicU64::new(0),
            rate_bits: AtomicU64::new(0f64.to_bits()),
            start: OnceLock::new(),
            final_ns: AtomicU64::new(u64::MAX),
        }
    }
}

impl Progress {
    pub fn stats(&self) -> Stats {
        let final_ns = self.final_ns.load(Ordering::Acquire);
        let elapsed = if final_ns != u64::MAX {
            Duration::from_nanos(final_ns)
        } else {
            self.start.get().map_or(Duration::ZERO, Instant::elapsed)
        };
        Stats {
            bytes: self.bytes.load(Ordering::Relaxed),
            elapsed,
            rate: f64::from_bits(self.rate_bits.load(Ordering::Relaxed)),
        }
    }

    fn set_rate(&self, rate: f64) {
        self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }
}

/// One copy job from `src` to `dst`. Create with [`Pump::new`], run once with [`Pump::run`].
#[derive(Debug)]
pub struct Pump {
    src: RawFd,
    dst: RawFd,
    config: PumpConfig,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    started: AtomicBool,
}

impl Pump {
    /// Validate the configuration and the fds (open, readable / writable).
    pub fn new(src: RawFd, dst: RawFd, config: PumpConfig) -> Result<Self> {
        check_fd("src_fd", src, Side::Read)?;
        check_fd("dst_fd", dst, Side::Write)?;
        if let Some(rate) = config.rate {
            TokenBucket::new(rate, config.burst, Duration::ZERO)?;
        }
        if let Some(t) = config.stall_timeout {
            if t.is_zero() {
                return Err(Error::InvalidArgument(
                    "stall_timeout must be positive".into(),
                ));
            }
        }
        if config.chunk == 0 || config.tick.is_zero() {
            return Err(Error::InvalidArgument(
                "chunk and tick must be positive".into(),
            ));
        }
        Ok(Pump {
            src,
            dst,
            config,
            progress: Arc::default(),
            cancel: Arc::default(),
            started: AtomicBool::new(false),
        })
    }

    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    pub fn stats(&self) -> Stats {
        self.progress.stats()
    }

    /// The cancel token: storing `true` makes `run` stop with [`Error::Cancelled`] within one
    /// system call (at most one tick while it waits).
    pub fn cancel_token(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// Copy until EOF on `src`. `hook` runs about once per tick (and right after a signal
    /// interrupted a system call) with the current stats; returning `false` cancels.
    pub fn run(&self, hook: &mut dyn FnMut(&Stats) -> bool) -> Result<Stats> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::InvalidArgument("a pump can only run once".into()));
        }
        let start = Instant::now();
        let _ = self.progress.start.set(start);
        let result = self.copy(start, hook);
        let elapsed = start.elapsed();
        let bytes = self.progress.bytes.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        self.progress
            .set_rate(if secs > 0.0 { bytes as f64 / secs } else { 0.0 });
        self.progress.final_ns.store(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX - 1),
            Ordering::Release,
        );
        result.map(|()| self.progress.stats())
    }

    fn copy(&self, start: Instant, hook: &mut dyn FnMut(&Stats) -> bool) -> Result<()> {
        let cfg = &self.config;
        let _src_flags = NonBlocking::set(self.src, Side::Read)?;
        let _dst_flags = NonBlocking::set(self.dst, Side::Write)?;
        let src_pipe = is_pipe(self.src);
        let dst_pipe = is_pipe(self.dst);
        if cfg.pipe_size > 0 {
            for (fd, pipe) in [(self.src, src_pipe), (self.dst, dst_pipe)] {
                if pipe {
                    enlarge_pipe(fd, cfg.pipe_size);
                }
            }
        }
        let mut mover = if src_pipe || dst_pipe {
            Mover::Splice { tried: false }
        } else {
            Mover::ReadWrite(Buffer::new(cfg.chunk))
        };
        let mut bucket = match cfg.rate {
            Some(rate) => Some(TokenBucket::new(rate, cfg.burst, Duration::ZERO)?),
            None => None,
        };
        let mut suspect = Side::Read;
        let mut woke: Option<Side> = None;
        let mut fruitless = 0u32;
        let mut last_progress = start;
        let mut next_tick = start + cfg.tick;
        let mut tick_start = (start, 0u64);
        let mut moved_total = 0u64;
        loop {
            if self.cancel.load(Ordering::Acquire) {
                return Err(Error::Cancelled);
            }
            let now = Instant::now();
            if now >= next_tick {
                let dt = now.duration_since(tick_start.0).as_secs_f64();
                if dt > 0.0 {
                    self.progress
                        .set_rate((moved_total - tick_start.1) as f64 / dt);
                }
                tick_start = (now, moved_total);
                next_tick = now + cfg.tick;
                if !hook(&self.progress.stats()) {
                    self.cancel();
                    return Err(Error::Cancelled);
                }
            }
            let mut max = cfg.chunk;
            let delivers = mover.delivers_next();
            let mut wait = None;
            if let Some(bucket) = bucket.as_mut().filter(|_| delivers) {
                match bucket.grant(now.duration_since(start), max as u64) {
                    Ok(n) => max = usize::try_from(n).unwrap_or(max),
                    Err(w) => wait = Some(w),
                }
            }
            // The shared budget last: its tokens are reserved, and given back unless they move.
            let mut reserved = 0u64;
            if let (None, Some(budget)) = (wait, cfg.budget.as_deref().filter(|_| delivers)) {
                match budget.take(max as u64) {
                    Ok(n) => {
                        reserved = n;
                        max = usize::try_from(n).unwrap_or(max);
                    }
                    Err(w) => wait = Some(w),
                }
            }
            if let Some(wait) = wait {
                std::thread::sleep(wait.min(next_tick.saturating_duration_since(now)));
                // Waiting for tokens is not a stall.
                last_progress = Instant::now();
                continue;
            }
            let step = mover.step(self.src, self.dst, max);
            if let Some(budget) = cfg.budget.as_deref() {
                let used = match &step {
                    Ok(Step::Moved { delivered, .. }) => *delivered as u64,
                    _ => 0,
                };
                budget.give_back(reserved.saturating_sub(used));
            }
            match step? {
                Step::Moved { delivered, read } => {
                    if delivered > 0 {
                        moved_total += delivered as u64;
                        self.progress
                            .bytes
                            .fetch_add(delivered as u64, Ordering::Relaxed);
                        if let Some(b) = bucket.as_mut() {
                            b.consume(delivered as u64);
                        }
                    }
                    if delivered > 0 || read > 0 {
                        last_progress = now;
                        woke = None;
                        fruitless = 0;
                    }
                }
                Step::Eof => return Ok(()),
                Step::Interrupted => next_tick = now,
                Step::Blocked(side) => {
                    let deadline = cfg.stall_timeout.map(|t| last_progress + t);
                    let mut until = next_tick;
                    if let Some(d) = deadline {
                        if now >= d {
                            return Err(Error::Stalled {
                                side: self.blocked_side(side),
                                seconds: cfg.stall_timeout.unwrap_or_default().as_secs_f64(),
                            });
                        }
                        until = until.min(d);
                    }
                    let side = match side {
                        Some(s) => s,
                        None => {
                            // splice's EAGAIN does not say which side blocks: wait for the one
                            // that blocked last time; if it was ready and splice still
                            // blocks, the other side is the one.
                            if woke == Some(suspect) {
                                suspect = other_side(suspect);
                                fruitless += 1;
                                if fruitless > 2 {
                                    // Both look ready, yet nothing moves: do not spin.
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                            }
                            suspect
                        }
                    };
                    woke = match self.wait(side, until.saturating_duration_since(now))? {
                        Wait::Ready => Some(side),
                        Wait::TimedOut => None,
                        Wait::Interrupted => {
                            next_tick = Instant::now();
                            None
                        }
                    };
                }
            }
        }
    }

    /// Which side a stall belongs to: the one that is not ready (for splice, whose EAGAIN
    /// does not say).
    fn blocked_side(&self, known: Option<Side>) -> Side {
        if let Some(s) = known {
            return s;
        }
        match readiness(self.src, self.dst) {
            (false, _) => Side::Read,
            (true, false) => Side::Write,
            (true, true) => Side::Read,
        }
    }

    fn wait(&self, side: Side, timeout: Duration) -> Result<Wait> {
        let (fd, events) = match side {
            Side::Read => (self.src, libc::POLLIN),
            Side::Write => (self.dst, libc::POLLOUT),
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // Round up so a sub-millisecond remainder does not become a busy loop.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(Wait::Interrupted);
            }
            return Err(Error::io(side, e));
        }
        Ok(if r == 0 { Wait::TimedOut } else { Wait::Ready })
    }
}

fn other_side(side: Side) -> Side {
    match side {
        Side::Read => Side::Write,
        Side::Write => Side::Read,
    }
}

enum Wait {
    Ready,
    TimedOut,
    Interrupted,
}

enum Step {
    /// `delivered` bytes reached the destination; `read` bytes were taken from the source.
    Moved {
        delivered: usize,
        read: usize,
    },
    Eof,
    /// Would block; the side if known (splice's EAGAIN does not say which).
    Blocked(Option<Side>),
    Interrupted,
}

enum Mover {
    Splice { tried: bool },
    ReadWrite(Buffer),
}

struct Buffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buffer {
    fn new(size: usize) -> Self {
        Buffer {
            data: vec![0; size],
            start: 0,
            end: 0,
        }
    }
}

impl Mover {
    /// Whether the next step delivers bytes (and so needs rate-limit tokens).
    fn delivers_next(&self) -> bool {
        match self {
            Mover::Splice { .. } => true,
            Mover::ReadWrite(b) => b.start < b.end,
        }
    }

    fn step(&mut self, src: RawFd, dst: RawFd, max: usize) -> Result<Step> {
        match self {
            Mover::Splice { tried } => {
                let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MORE;
                // SAFETY: plain fds, null offsets (use the file positions).
                let n = unsafe {
                    libc::splice(
                        src,
                        std::ptr::null_mut(),
                        dst,
                        std::ptr::null_mut(),
                        max,
                        flags,
                    )
                };
                if n > 0 {
                    *tried = true;
                    let n = n as usize;
                    return Ok(Step::Moved {
                        delivered: n,
                        read: n,
                    });
                }
                if n == 0 {
                    return Ok(Step::Eof);
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(Step::Blocked(None)),
                    Some(libc::EINTR) => Ok(Step::Interrupted),
                    // This pair of files does not splice (e.g. some file systems or devices):
                    // nothing moved, so switching to read/write loses nothing.
                    Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) if !*tried => {
                        *self = Mover::ReadWrite(Buffer::new(DEFAULT_CHUNK));
                        Ok(Step::Moved {
                            delivered: 0,
                            read: 0,
                        })
                    }
                    _ => Err(Error::io(error_side(src, dst, &e), e)),
                }
            }
            Mover::ReadWrite(buf) => {
                if buf.start == buf.end {
                    // SAFETY: writing into our own buffer, length = its size.
                    let n =
                        unsafe { libc::read(src, buf.data.as_mut_ptr().cast(), buf.data.len()) };
                    if n > 0 {
                        buf.start = 0;
                        buf.end = n as usize;
                        return Ok(Step::Moved {
                            delivered: 0,
                            read: n as usize,
                        });
                    }
                    if n == 0 {
                        return Ok(Step::Eof);
                    }
                    let e = std::io::Error::last_os_error();
                    return match e.raw_os_error() {
                        Some(libc::EAGAIN) => Ok(Step::Blocked(Some(Side::Read))),
                        Some(libc::EINTR) => Ok(Step::Interrupted),
                        _ => Err(Error::io(Side::Read, e)),
                    };
                }
                let len = (buf.end - buf.start).min(max);
                // SAFETY: the range lies inside our buffer.
                let n = unsafe { libc::write(dst, buf.data[buf.start..].as_ptr().cast(), len) };
                if n >= 0 {
                    // A short write leaves the rest for the next step.
                    buf.start += n as usize;
                    return Ok(Step::Moved {
                        delivered: n as usize,
                        read: 0,
                    });
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(Step::Blocked(Some(Side::Write))),
                    Some(libc::EINTR) => Ok(Step::Interrupted),
                    _ => Err(Error::io(Side::Write, e)),
                }
            }
        }
    }
}

/// Which side a failed splice belongs to: errors only a writer gets, else by poll flags.
fn error_side(src: RawFd, dst: RawFd, e: &std::io::Error) -> Side {
    match e.raw_os_error() {
        Some(libc::EPIPE | libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Side::Write,
        _ => {
            let mut fds = [
                libc::pollfd {
                    fd: src,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: dst,
                    events: libc::POLLOUT,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds; zero timeout.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 0) };
            if fds[1].revents & libc::POLLERR != 0 && fds[0].revents & libc::POLLERR == 0 {
                Side::Write
            } else {
                Side::Read
            }
        }
    }
}

/// (src readable or at EOF/error, dst writable or in error), without waiting.
fn readiness(src: RawFd, dst: RawFd) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: src,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: dst,
            events: libc::POLLOUT,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds; zero timeout.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, 0) };
    (fds[0].revents != 0, fds[1].revents != 0)
}

fn check_fd(what: &str, fd: RawFd, side: Side) -> Result<()> {
    if fd < 0 {
        return Err(Error::InvalidArgument(format!(
            "{what} must be a non-negative file descriptor, got {fd}"
        )));
    }
    // SAFETY: F_GETFL only reads the flags of the fd.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::InvalidArgument(format!(
            "{what} {fd} is not an open file descriptor"
        )));
    }
    let mode = flags & libc::O_ACCMODE;
    let ok = match side {
        Side::Read => mode == libc::O_RDONLY || mode == libc::O_RDWR,
        Side::Write => mode == libc::O_WRONLY || mode == libc::O_RDWR,
    };
    if !ok || flags & libc::O_PATH != 0 {
        let how = match side {
            Side::Read => "reading",
            Side::Write => "writing",
        };
        return Err(Error::InvalidArgument(format!(
            "{what} {fd} is not open for {how}"
        )));
    }
    Ok(())
}

fn is_pipe(fd: RawFd) -> bool {
    // SAFETY: fstat into a zeroed stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
    }
}

/// Best effort: a pipe we cannot enlarge (limit, EBUSY) still works at its current size.
fn enlarge_pipe(fd: RawFd, size: usize) {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: pipe size queries/updates on a pipe fd.
    unsafe {
        let current = libc::fcntl(fd, libc::F_GETPIPE_SZ);
        if current >= 0 && current < size {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, size);
        }
    }
}

/// Puts an fd in non-blocking mode and restores its original flags on drop.
struct NonBlocking {
    fd: RawFd,
    flags: libc::c_int,
}

impl NonBlocking {
    fn set(fd: RawFd, side: Side) -> Result<Option<NonBlocking>> {
        // SAFETY: flag query/update on an fd validated by Pump::new.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(Error::io(side, std::io::Error::last_os_error()));
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(None);
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(Error::io(side, std::io::Error::last_os_error()));
        }
        Ok(Some(NonBlocking { fd, flags }))
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        // SAFETY: restoring the flags we read; the caller still owns the fd.
        unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
    }
}

#[cfg(test)]
mod tests;
