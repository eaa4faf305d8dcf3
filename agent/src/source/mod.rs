//! URL sources for feeds: download a feed over HTTP(S) and keep the last good
//! copy on disk, so that a restart without network still protects.
//!
//! A download takes two steps. First, [`fetch`] sends a conditional GET, with
//! the stored `ETag` and `Last-Modified` as `If-None-Match` and
//! `If-Modified-Since`. It retries connection errors, timeouts, 5xx and 429
//! with exponential backoff and jitter, and streams a 200 body into a
//! temporary file next to the kept copy. Then the caller parses
//! [`TempCopy::path`], and only if the feed loads calls [`TempCopy::commit`].
//! The commit renames the temporary file over the kept copy and stores its
//! validators in the sidecar file `<path>.meta`. A temporary copy that is dropped without a commit is
//! deleted, so an error page, a truncated body or a file of garbage never
//! replaces the kept copy.
//!
//! Everything here blocks (the client is `ureq` over rustls); an async caller
//! runs it on a blocking thread.

mod http;
mod kept;
mod retry;
mod settings;
mod size;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::FeedConfig;

pub use self::kept::{TempCopy, kept_copy_age};
pub use self::settings::check_settings;
pub use self::size::deserialize_size;

/// Time allowed to set up the connection (TCP and TLS) when a feed sets no
/// `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one whole attempt, body included, when a feed sets no
/// `timeout`. Five minutes carries the default maximum size at about 7 Mbit/s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Largest body accepted when a feed sets no `max_size`: 256 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;
/// Shortest `refresh` interval the config accepts.
pub const MIN_REFRESH: Duration = Duration::from_secs(60);

/// Settings shared by every download of a process, as opposed to the
/// per-feed settings in [`FeedConfig`].
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Attempts per [`fetch`] call, the first included; at least 1.
    pub attempts: u32,
    /// Delay before the first retry; each further retry doubles it.
    pub backoff: Duration,
    /// Upper bound of a backoff delay. A `Retry-After` longer than this
    /// ends the retries, because the caller's next refresh is the better
    /// time to come back.
    pub max_backoff: Duration,
    /// Whether to use a proxy from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`
    /// and `NO_PROXY`, as curl does.
    pub proxy_from_env: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            proxy_from_env: true,
        }
    }
}

/// The result of a successful [`fetch`].
#[derive(Debug)]
pub enum Fetch {
    /// The server returned 304 Not Modified: the kept copy is current.
    Unchanged,
    /// A complete 200 body, not yet the kept copy.
    Downloaded(TempCopy),
}

/// Failures of a download. Messages leave out the feed's name, which the
/// caller puts in front.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the feed has no `url`")]
    NoUrl,
    #[error("failed to read CA file {}: {reason}", .path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("download from {url} failed after {attempts} attempts: {source}")]
    Transport {
        url: String,
        attempts: u32,
        #[source]
        source: ureq::Error,
    },
    #[error("download from {url} failed after {attempts} attempts: HTTP status {status}")]
    Status {
        url: String,
        status: u16,
        attempts: u32,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    #[error(
        "download from {url} failed after {attempts} attempts: the body ended after {received} of {expected} bytes"
    )]
    Truncated {
        url: String,
        attempts: u32,
        expected: u64,
        received: u64,
    },
    #[error(
        "download from {url} exceeds `max_size` of {limit} bytes; raise `max_size` if the feed is meant to be this large"
    )]
    TooLarge { url: String, limit: u64 },
    #[error("failed to write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// Returns the wait that a 429 or 5xx response requested in its
    /// `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Downloads `feed.url` unless the kept copy at `feed.path` is current.
///
/// Retries as set in [`FetchOptions`]. The returned [`TempCopy`] is deleted on
/// drop unless committed.
pub fn fetch(feed: &FeedConfig, options: &FetchOptions) -> Result<Fetch, SourceError> {
    let url = feed.url.as_deref().ok_or(SourceError::NoUrl)?;
    let agent = http::agent(feed, options)?;
    let validators = kept::Validators::for_kept_copy(feed, url);
    let attempts = options.attempts.max(1);
    let mut attempt = 1;
    loop {
        let failure = match http::attempt(&agent, feed, url, &validators) {
            Ok(fetch) => return Ok(fetch),
            Err(failure) => failure,
        };
        let delay = retry::delay(options, attempt, failure.retry_after);
        match delay {
            Some(delay) if failure.retryable && attempt < attempts => {
                tracing::warn!(
                    feed = %feed.name,
                    url,
                    attempt,
                    error = %failure.error,
                    retry_in_ms = delay.as_millis() as u64,
                    "download failed; retrying"
                );
                std::thread::sleep(delay);
                attempt += 1;
            }
            _ => return Err(failure.error.into_source_error(url, attempt)),
        }
    }
}

/// Computes the wait before the next download of `feed`, or `None` when
/// the feed has no `refresh`. After `failures` failed downloads in a row the wait
/// is shorter: one minute, doubling with each failure, never more than
/// `refresh`, so that a source that comes back is noticed soon.
pub fn refresh_delay(feed: &FeedConfig, failures: u32) -> Option<Duration> {
    let refresh = feed.refresh?;
    if failures == 0 {
        return Some(refresh);
    }
    let factor = 1u32 << (failures - 1).min(16);
    Some(MIN_REFRESH.saturating_mul(factor).min(refresh))
}

/// Origin of a `url` feed's data in one load, for reports and logs.
#[derive(Clone, Debug)]
pub struct SourceReport {
    pub feed: String,
    pub url: String,
    /// The kept copy.
    pub path: PathBuf,
    pub status: SourceStatus,
}

#[derive(Clone, Debug)]
pub enum SourceStatus {
    /// A new copy downloaded, loaded and kept.
    Downloaded { bytes: u64 },
    /// The server returned 304 Not Modified, and the kept copy loaded.
    Unchanged,
    /// The download failed or did not load; the kept copy loaded instead.
    KeptCopy {
        error: String,
        /// Time since the kept copy was written, when the file system
        /// reports it.
        age: Option<Duration>,
    },
}

impl fmt::Display for SourceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feed `{}` from {}: ", self.feed, self.url)?;
        match &self.status {
            SourceStatus::Downloaded { bytes } => write!(f, "downloaded {bytes} bytes"),
            SourceStatus::Unchanged => write!(f, "not modified; loaded the kept copy"),
            SourceStatus::KeptCopy { error, age } => write!(
                f,
                "{error}; loaded the kept copy {} from {}",
                self.path.display(),
                describe_age(*age)
            ),
        }
    }
}

/// Formats an age such as "3h 12m ago", rounded to whole seconds.
pub fn describe_age(age: Option<Duration>) -> String {
    match age {
        Some(age) => {
            let seconds = Duration::from_secs(age.as_secs());
            format!(
                "{} ago",
                humantime_serde::re::humantime::format_duration(seconds)
            )
        }
        None => "an unknown time ago".to_owned(),
    }
}

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;
