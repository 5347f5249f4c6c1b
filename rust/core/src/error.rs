//! The one error enum of the engine. Its `Display` texts are stable: the binding turns them
//! into the message of the matching Python exception, and the engine logs them verbatim.
use std::fmt;
use std::io;

/// Which end of a pump an I/O failure or a stall belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The source fd (e.g. `zfs send`'s stdout).
    Read,
    /// The destination fd (e.g. `zfs recv`'s or ssh's stdin).
    Write,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Read => "read",
            Side::Write => "write",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub enum Error {
    /// Malformed line in `zfs list`/`zfs get` output; `line` is 1-based.
    Parse { line: usize, message: String },
    /// A caller passed a value that can never work (negative rate, bad fd, ...).
    InvalidArgument(String),
    /// A system call on one side of the pump failed.
    Io { side: Side, source: io::Error },
    /// No byte moved for `seconds`; `side` is the end that was being waited for.
    Stalled { side: Side, seconds: f64 },
    /// The pump was cancelled (cancel token or Ctrl-C).
    Cancelled,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn parse(line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            line,
            message: message.into(),
        }
    }

    pub fn io(side: Side, source: io::Error) -> Self {
        Error::Io { side, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse { line, message } => write!(f, "line {line}: {message}"),
            Error::InvalidArgument(message) => f.write_str(message),
            Error::Io { side, source } => write!(f, "pump {side} side failed: {source}"),
            Error::Stalled { side, seconds } => write!(
                f,
                "pump stalled: no progress on the {side} side for {seconds:.1} s"
            ),
            Error::Cancelled => f.write_str("pump cancelled"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_texts_are_the_stable_ones() {
        // the binding and the job log show these verbatim
        let io_err = Error::io(Side::Write, io::Error::from_raw_os_error(32));
        assert_eq!(
            io_err.to_string(),
            "pump write side failed: Broken pipe (os error 32)"
        );
        let stalled = Error::Stalled {
            side: Side::Read,
            seconds: 600.0,
        };
        assert_eq!(
            stalled.to_string(),
            "pump stalled: no progress on the read side for 600.0 s"
        );
        assert_eq!(Error::parse(3, "bad guid").to_string(), "line 3: bad guid");
        assert_eq!(Error::Cancelled.to_string(), "pump cancelled");
        assert_eq!(
            (Side::Read.as_str(), Side::Write.as_str()),
            ("read", "write")
        );
        // the OS error stays reachable (the binding maps its errno)
        let source = io_err.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(source.and_then(io::Error::raw_os_error), Some(32));
        assert!(Error::Cancelled.source().is_none());
    }
}
