//! One download attempt with `ureq`: the request, the status and the body.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::http::{HeaderMap, StatusCode};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::kept::{TempCopy, Validators};
use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_SIZE, DEFAULT_TIMEOUT, Fetch, FetchOptions, SourceError,
    retry,
};
use crate::config::FeedConfig;

/// Builds a client with the feed's timeouts and trusted roots.
pub(super) fn agent(feed: &FeedConfig, options: &FetchOptions) -> Result<Agent, SourceError> {
    let roots = match &feed.ca_file {
        Some(path) => RootCerts::new_with_certs(&read_ca_file(path)?),
        None => RootCerts::WebPki,
    };
    let tls = TlsConfig::builder().root_certs(roots).build();
    let mut config = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(
            feed.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        ))
        .timeout_global(Some(feed.timeout.unwrap_or(DEFAULT_TIMEOUT)))
        .user_agent(concat!("intelwall/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls);
    if !options.proxy_from_env {
        config = config.proxy(None);
    }
    Ok(config.build().new_agent())
}

fn read_ca_file(path: &PathBuf) -> Result<Vec<Certificate<'static>>, SourceError> {
    let ca_error = |reason: String| SourceError::CaFile {
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(certificate) = item.map_err(|e| ca_error(e.to_string()))? {
            certificates.push(certificate);
        }
    }
    if certificates.is_empty() {
        return Err(ca_error("no PEM certificate found".to_owned()));
    }
    Ok(certificates)
}

/// Failure of one attempt, before it is known whether another follows.
#[derive(Debug)]
pub(super) enum AttemptError {
    Transport(ureq::Error),
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    Truncated {
        expected: u64,
        received: u64,
    },
    TooLarge {
        limit: u64,
    },
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Transport(error) => write!(f, "{error}"),
            AttemptError::Status { status, .. } => write!(f, "HTTP status {status}"),
            AttemptError::Truncated { expected, received } => {
                write!(f, "the body ended after {received} of {expected} bytes")
            }
            AttemptError::TooLarge { limit } => write!(f, "the body exceeds {limit} bytes"),
            AttemptError::Write { path, source } => {
                write!(f, "failed to write {}: {source}", path.display())
            }
        }
    }
}

impl AttemptError {
    pub(super) fn into_source_error(self, url: &str, attempts: u32) -> SourceError {
        let url = url.to_owned();
        match self {
            AttemptError::Transport(source) => SourceError::Transport {
                url,
                attempts,
                source,
            },
            AttemptError::Status {
                status,
                retry_after,
            } => SourceError::Status {
                url,
                status,
                attempts,
                retry_after,
            },
            AttemptError::Truncated { expected, received } => SourceError::Truncated {
                url,
                attempts,
                expected,
                received,
            },
            AttemptError::TooLarge { limit } => SourceError::TooLarge { url, limit },
            AttemptError::Write { path, source } => SourceError::Write { path, source },
        }
    }
}

#[derive(Debug)]
pub(super) struct Failure {
    pub error: AttemptError,
    /// Whether the same request may succeed later: connection errors,
    /// timeouts, a cut body, 408, 429 and 5xx.
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn new(error: AttemptError) -> Failure {
        let retryable = match &error {
            AttemptError::Transport(error) => is_transient(error),
            AttemptError::Status { status, .. } => is_transient_status(*status),
            AttemptError::Truncated { .. } => true,
            AttemptError::TooLarge { .. } | AttemptError::Write { .. } => false,
        };
        let retry_after = match &error {
            AttemptError::Status { retry_after, .. } => *retry_after,
            _ => None,
        };
        Failure {
            error,
            retryable,
            retry_after,
        }
    }
}

/// Transport errors worth another attempt. TLS and certificate errors are
/// left out because they come back the same on every attempt. The rustls
/// stream reports them as I/O errors of kind `InvalidData`.
fn is_transient(error: &ureq::Error) -> bool {
    if let ureq::Error::Io(error) = error {
        return error.kind() != std::io::ErrorKind::InvalidData;
    }
    matches!(
        error,
        ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_)
    )
}

fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// Sends one conditional GET and, on 200, streams the body into a temporary
/// copy next to the kept one.
pub(super) fn attempt(
    agent: &Agent,
    feed: &FeedConfig,
    url: &str,
    validators: &Validators,
) -> Result<Fetch, Failure> {
    let started = Instant::now();
    let mut request = agent.get(url);
    if let Some(etag) = &validators.etag {
        request = request.header("If-None-Match", etag);
    }
    if let Some(last_modified) = &validators.last_modified {
        request = request.header("If-Modified-Since", last_modified);
    }
    let response = request
        .call()
        .map_err(|error| Failure::new(AttemptError::Transport(error)))?;

    let status = response.status();
    if status == StatusCode::NOT_MODIFIED && validators.is_some() {
        tracing::info!(
            feed = %feed.name,
            url,
            status = status.as_u16(),
            took_ms = started.elapsed().as_millis() as u64,
            "feed not modified"
        );
        return Ok(Fetch::Unchanged);
    }
    if status != StatusCode::OK {
        let retry_after = retry::retry_after(response.headers(), jiff::Timestamp::now());
        return Err(Failure::new(AttemptError::Status {
            status: status.as_u16(),
            retry_after,
        }));
    }

    let headers = response.headers().clone();
    let temp = download_body(feed, url, &headers, response.into_body())?;
    tracing::info!(
        feed = %feed.name,
        url,
        status = status.as_u16(),
        bytes = temp.bytes(),
        took_ms = started.elapsed().as_millis() as u64,
        "feed downloaded"
    );
    Ok(Fetch::Downloaded(temp))
}

fn download_body(
    feed: &FeedConfig,
    url: &str,
    headers: &HeaderMap,
    body: ureq::Body,
) -> Result<TempCopy, Failure> {
    let limit = feed.max_size.unwrap_or(DEFAULT_MAX_SIZE);
    let expected = identity_content_length(headers);
    if expected.is_some_and(|length| length > limit) {
        return Err(Failure::new(AttemptError::TooLarge { limit }));
    }

    let validators = Validators::from_headers(url, headers);
    let mut temp = TempCopy::create(&feed.path, validators).map_err(Failure::new)?;
    let received = copy_limited(body.into_reader(), &mut temp, limit)?;
    if let Some(expected) = expected
        && received != expected
    {
        return Err(Failure::new(AttemptError::Truncated { expected, received }));
    }
    temp.finish(received).map_err(Failure::new)?;
    Ok(temp)
}

/// Returns the `Content-Length` when it counts the bytes the reader returns.
/// A compressed body is decoded by `ureq`, so its length does not give the
/// decoded size.
fn identity_content_length(headers: &HeaderMap) -> Option<u64> {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok());
    if encoding.is_some_and(|encoding| !encoding.eq_ignore_ascii_case("identity")) {
        return None;
    }
    let length = headers.get("content-length")?.to_str().ok()?;
    length.trim().parse().ok()
}

/// Copies the body into `temp`, failing as soon as it passes `limit`.
fn copy_limited(mut body: impl Read, temp: &mut TempCopy, limit: u64) -> Result<u64, Failure> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut received: u64 = 0;
    loop {
        let count = match body.read(&mut buffer) {
            Ok(0) => return Ok(received),
            Ok(count) => count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Failure::new(AttemptError::Transport(error.into()))),
        };
        received += count as u64;
        if received > limit {
            return Err(Failure::new(AttemptError::TooLarge { limit }));
        }
        temp.write_all(&buffer[..count]).map_err(|source| {
            Failure::new(AttemptError::Write {
                path: temp.path().to_owned(),
                source,
            })
        })?;
    }
}
