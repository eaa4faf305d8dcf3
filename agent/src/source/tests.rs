//! Downloads from a server on 127.0.0.1 that the test starts, end to end
//! through `pipeline::load_with` where a whole load makes sense.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use jiff::Timestamp;
use tempfile::TempDir;

use super::test_server::{Reply, Request, TestServer};
use super::*;
use crate::config::Config;
use crate::pipeline::{self, LoadError, Loaded};

const GOOD: &str = "# test feed\n192.0.2.1\n192.0.2.2\n";
const NEWER: &str = "192.0.2.1\n198.51.100.7\n";
const GARBAGE: &str = "<html>\n<body>oops</body>\n</html>\n";
const GATEWAY_TIMEOUT_PAGE: &str = "<html><body><h1>504 Gateway Time-out</h1></body></html>";

/// A config directory with one `url` feed named "remote".
struct Fixture {
    dir: TempDir,
    config: PathBuf,
}

impl Fixture {
    /// Writes a config whose feed downloads `url`, with `extra` lines added
    /// to the feed's table.
    fn new(url: &str, extra: &str) -> Fixture {
        let dir = TempDir::new().unwrap();
        let config = dir.path().join("intelwall.toml");
        let fixture = Fixture { dir, config };
        fixture.write_config(url, extra);
        fixture
    }

    fn write_config(&self, url: &str, extra: &str) {
        let text = format!(
            "[agent]\nstate_dir = \"state\"\n\n[[feed]]\nname = \"remote\"\nurl = \"{url}\"\n{extra}\n"
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn kept_path(&self) -> PathBuf {
        self.dir.path().join("state/feeds/remote")
    }

    fn kept(&self) -> Option<String> {
        std::fs::read_to_string(self.kept_path()).ok()
    }

    fn load(&self) -> Result<Loaded, LoadError> {
        pipeline::load_with(
            &self.config,
            now(),
            &fast_options(),
            &crate::compile::Registry::default(),
        )
    }

    /// Names of the files in the feeds directory, to catch a temporary file
    /// left behind.
    fn feed_files(&self) -> Vec<String> {
        let entries = std::fs::read_dir(self.dir.path().join("state/feeds")).unwrap();
        let mut names: Vec<String> = entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Short waits so that retries do not slow the tests, and no proxy from the
/// environment, so that every request goes straight to 127.0.0.1.
fn fast_options() -> FetchOptions {
    FetchOptions {
        attempts: 3,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(50),
        proxy_from_env: false,
    }
}

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn has_indicator(loaded: &Loaded, indicator: &str) -> bool {
    let net: IpNet = indicator.parse().unwrap();
    loaded.intel.sightings(&net).is_some()
}

fn source_status(loaded: &Loaded) -> &SourceStatus {
    assert_eq!(loaded.sources.len(), 1);
    &loaded.sources[0].status
}

fn kept_copy_error(loaded: &Loaded) -> &str {
    match source_status(loaded) {
        SourceStatus::KeptCopy { error, .. } => error,
        other => panic!("expected the kept copy to load, got {other:?}"),
    }
}

/// Returns `body` with its ETag, or 304 when the request carries that ETag.
fn conditional(body: &'static str, etag: &'static str) -> impl FnMut(&Request) -> Reply {
    move |request| {
        if request.header("if-none-match") == Some(etag) {
            Reply::status(304, "")
        } else {
            Reply::ok(body, etag)
        }
    }
}

/// Starts a server holding GOOD and loads it once, so that a kept copy
/// exists.
fn fixture_with_kept_copy(extra: &str) -> (TestServer, Fixture) {
    let server = TestServer::start(conditional(GOOD, "\"v1\""));
    let fixture = Fixture::new(&server.url("/feed.txt"), extra);
    let loaded = fixture.load().unwrap();
    assert!(matches!(
        source_status(&loaded),
        SourceStatus::Downloaded { .. }
    ));
    assert_eq!(fixture.kept().as_deref(), Some(GOOD));
    (server, fixture)
}

/// Checks that the kept copy is still GOOD and is what loaded.
fn assert_kept_copy_loaded(fixture: &Fixture, loaded: &Loaded) {
    assert_eq!(fixture.kept().as_deref(), Some(GOOD));
    assert!(has_indicator(loaded, "192.0.2.1/32"));
    assert!(has_indicator(loaded, "192.0.2.2/32"));
    assert_eq!(loaded.feeds[0].path, fixture.kept_path());
    assert_eq!(fixture.feed_files(), ["remote", "remote.meta"]);
}

#[test]
fn download_keeps_copy_and_validators() {
    let server = TestServer::start(conditional(GOOD, "\"v1\""));
    let fixture = Fixture::new(&server.url("/feed.txt"), "");

    let loaded = fixture.load().unwrap();

    let bytes = GOOD.len() as u64;
    assert!(matches!(source_status(&loaded), SourceStatus::Downloaded { bytes: b } if *b == bytes));
    assert_eq!(loaded.feeds[0].indicators, 2);
    assert!(has_indicator(&loaded, "192.0.2.1/32"));
    assert_eq!(loaded.feeds[0].path, fixture.kept_path());
    assert_eq!(fixture.kept().as_deref(), Some(GOOD));
    let meta = std::fs::read_to_string(kept::meta_path(&fixture.kept_path())).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["etag"], "\"v1\"");
    assert_eq!(meta["last_modified"], "Thu, 01 Jan 2026 00:00:00 GMT");
    assert_eq!(fixture.feed_files(), ["remote", "remote.meta"]);
}

#[test]
fn not_modified_loads_kept_copy() {
    let (server, fixture) = fixture_with_kept_copy("");

    let loaded = fixture.load().unwrap();

    assert!(matches!(source_status(&loaded), SourceStatus::Unchanged));
    assert_kept_copy_loaded(&fixture, &loaded);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].header("if-none-match"), None);
    assert_eq!(requests[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        requests[1].header("if-modified-since"),
        Some("Thu, 01 Jan 2026 00:00:00 GMT")
    );
}

#[test]
fn changed_feed_replaces_kept_copy() {
    let (server, fixture) = fixture_with_kept_copy("");
    server.set_handler(conditional(NEWER, "\"v2\""));

    let loaded = fixture.load().unwrap();

    assert!(matches!(
        source_status(&loaded),
        SourceStatus::Downloaded { .. }
    ));
    assert_eq!(fixture.kept().as_deref(), Some(NEWER));
    assert!(has_indicator(&loaded, "198.51.100.7/32"));
    assert!(!has_indicator(&loaded, "192.0.2.2/32"));
}

#[test]
fn gateway_timeout_keeps_copy() {
    let (server, fixture) = fixture_with_kept_copy("");
    server.set_handler(|_| Reply::status(504, GATEWAY_TIMEOUT_PAGE));

    let loaded = fixture.load().unwrap();

    let error = kept_copy_error(&loaded);
    assert!(error.contains("HTTP status 504"), "{error}");
    assert!(error.contains("after 3 attempts"), "{error}");
    assert_kept_copy_loaded(&fixture, &loaded);
    assert_eq!(server.requests().len(), 1 + 3);
}

#[test]
fn truncated_body_keeps_copy() {
    let (server, fixture) = fixture_with_kept_copy("");
    server.set_handler(|_| Reply::Truncated {
        declared: 1000,
        body: NEWER.as_bytes().to_vec(),
    });

    let loaded = fixture.load().unwrap();

    kept_copy_error(&loaded);
    assert_kept_copy_loaded(&fixture, &loaded);
    assert!(!has_indicator(&loaded, "198.51.100.7/32"));
}

#[test]
fn garbage_body_keeps_copy() {
    let (server, fixture) = fixture_with_kept_copy("");
    server.set_handler(|_| Reply::ok(GARBAGE, "\"garbage\""));

    let loaded = fixture.load().unwrap();

    let error = kept_copy_error(&loaded);
    assert!(error.contains("not a valid feed"), "{error}");
    assert!(error.contains("were rejected"), "{error}");
    assert_kept_copy_loaded(&fixture, &loaded);
    let meta = std::fs::read_to_string(kept::meta_path(&fixture.kept_path())).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["etag"], "\"v1\"");
}

/// A strict feed fails on its second line after the first has loaded, so
/// the failed download leaves sightings behind that the reload must drop.
#[test]
fn partial_download_leaves_no_sightings() {
    let (server, fixture) = fixture_with_kept_copy("strict = true");
    server.set_handler(|_| Reply::ok("198.51.100.7\nnot-an-address\n", "\"v2\""));

    let loaded = fixture.load().unwrap();

    let error = kept_copy_error(&loaded);
    assert!(error.contains("strict"), "{error}");
    assert!(!has_indicator(&loaded, "198.51.100.7/32"));
    assert_eq!(loaded.intel.indicator_count(), 2);
    assert_kept_copy_loaded(&fixture, &loaded);
}

#[test]
fn slow_response_times_out() {
    let (server, fixture) = fixture_with_kept_copy("timeout = \"200ms\"");
    server.set_handler(|_| Reply::Stall);

    let loaded = fixture.load().unwrap();

    let error = kept_copy_error(&loaded);
    assert!(error.contains("timeout"), "{error}");
    assert_kept_copy_loaded(&fixture, &loaded);
}

#[test]
fn service_unavailable_then_ok_retries() {
    let server = TestServer::start(|_| Reply::ok(GOOD, "\"v1\""));
    let mut failed = false;
    server.set_handler(move |_| {
        if failed {
            return Reply::ok(GOOD, "\"v1\"");
        }
        failed = true;
        Reply::status(503, "busy").with_header("Retry-After", "0")
    });
    let fixture = Fixture::new(&server.url("/feed.txt"), "");

    let loaded = fixture.load().unwrap();

    assert!(matches!(
        source_status(&loaded),
        SourceStatus::Downloaded { .. }
    ));
    assert_eq!(server.requests().len(), 2);
    assert_eq!(fixture.kept().as_deref(), Some(GOOD));
}

#[test]
fn long_retry_after_stops_retries() {
    let server =
        TestServer::start(|_| Reply::status(429, "slow down").with_header("Retry-After", "3600"));
    let fixture = Fixture::new(&server.url("/feed.txt"), "");
    let feed = Config::load(&fixture.config).unwrap().feeds.remove(0);

    let error = fetch(&feed, &fast_options()).unwrap_err();

    assert!(matches!(
        error,
        SourceError::Status {
            status: 429,
            attempts: 1,
            ..
        }
    ));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn declared_size_over_max_size_rejected() {
    let (server, fixture) = fixture_with_kept_copy("max_size = 64");
    server.set_handler(|_| Reply::ok(&NEWER.repeat(10), "\"v2\""));

    let loaded = fixture.load().unwrap();

    let error = kept_copy_error(&loaded);
    assert!(error.contains("exceeds `max_size` of 64 bytes"), "{error}");
    assert_kept_copy_loaded(&fixture, &loaded);
    // The size is final, so no retry.
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn streamed_size_over_max_size_rejected() {
    let server = TestServer::start(|_| Reply::UntilClose {
        body: NEWER.repeat(100).into_bytes(),
    });
    let fixture = Fixture::new(&server.url("/feed.txt"), "max_size = \"1 KiB\"");
    let feed = Config::load(&fixture.config).unwrap().feeds.remove(0);

    let error = fetch(&feed, &fast_options()).unwrap_err();

    assert!(
        matches!(error, SourceError::TooLarge { limit: 1024, .. }),
        "{error}"
    );
    assert_eq!(fixture.feed_files(), Vec::<String>::new());
}

#[test]
fn restart_without_server_loads_kept_copy() {
    let (server, fixture) = fixture_with_kept_copy("connect_timeout = \"1s\"");
    drop(server);

    let loaded = fixture.load().unwrap();

    let error = kept_copy_error(&loaded);
    assert!(error.contains("127.0.0.1"), "{error}");
    let SourceStatus::KeptCopy { age, .. } = source_status(&loaded) else {
        unreachable!()
    };
    assert!(age.is_some());
    assert_kept_copy_loaded(&fixture, &loaded);
}

#[test]
fn failed_download_without_kept_copy_fails() {
    let server = TestServer::start(|_| Reply::status(504, GATEWAY_TIMEOUT_PAGE));
    let url = server.url("/feed.txt");
    let fixture = Fixture::new(&url, "");

    let Err(error) = fixture.load() else {
        panic!("expected the load to fail");
    };

    assert!(matches!(error, LoadError::Download { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("HTTP status 504"), "{message}");
    assert!(message.contains("no earlier download is kept"), "{message}");
    assert_eq!(fixture.kept(), None);
}

#[test]
fn invalid_download_without_kept_copy_fails() {
    let server = TestServer::start(|_| Reply::ok(GARBAGE, "\"garbage\""));
    let url = server.url("/feed.txt");
    let fixture = Fixture::new(&url, "");

    let Err(error) = fixture.load() else {
        panic!("expected the load to fail");
    };

    assert!(
        matches!(error, LoadError::InvalidDownload { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&url), "{error}");
    assert_eq!(fixture.feed_files(), Vec::<String>::new());
}

#[test]
fn changed_url_sends_no_validators() {
    let (server, fixture) = fixture_with_kept_copy("");
    fixture.write_config(&server.url("/other.txt"), "");

    let loaded = fixture.load().unwrap();

    assert!(matches!(
        source_status(&loaded),
        SourceStatus::Downloaded { .. }
    ));
    let requests = server.requests();
    assert_eq!(requests[1].path, "/other.txt");
    assert_eq!(requests[1].header("if-none-match"), None);
    assert_eq!(requests[1].header("if-modified-since"), None);
}

fn self_signed_tls() -> (rustls::ServerConfig, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    (config, certified.cert.pem())
}

#[test]
fn https_with_ca_file() {
    let (tls, ca_pem) = self_signed_tls();
    let server = TestServer::start_tls(tls, conditional(GOOD, "\"v1\""));
    let ca_dir = TempDir::new().unwrap();
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let extra = format!("ca_file = \"{}\"", ca_file.display());
    let fixture = Fixture::new(&server.url("/feed.txt"), &extra);

    let loaded = fixture.load().unwrap();

    assert!(matches!(
        source_status(&loaded),
        SourceStatus::Downloaded { .. }
    ));
    assert!(has_indicator(&loaded, "192.0.2.1/32"));
    assert_eq!(fixture.kept().as_deref(), Some(GOOD));
}

#[test]
fn https_without_ca_file_rejects_certificate() {
    let (tls, _) = self_signed_tls();
    let server = TestServer::start_tls(tls, conditional(GOOD, "\"v1\""));
    let fixture = Fixture::new(&server.url("/feed.txt"), "");
    let feed = Config::load(&fixture.config).unwrap().feeds.remove(0);

    let error = fetch(&feed, &fast_options()).unwrap_err();

    // A certificate error comes back the same every time, so no retry.
    assert!(
        matches!(error, SourceError::Transport { attempts: 1, .. }),
        "{error}"
    );
}

#[test]
fn temp_copy_dropped_without_commit_is_deleted() {
    let server = TestServer::start(conditional(GOOD, "\"v1\""));
    let fixture = Fixture::new(&server.url("/feed.txt"), "");
    let feed = Config::load(&fixture.config).unwrap().feeds.remove(0);

    let Fetch::Downloaded(temp) = fetch(&feed, &fast_options()).unwrap() else {
        panic!("expected a download");
    };
    assert_eq!(std::fs::read_to_string(temp.path()).unwrap(), GOOD);
    assert_eq!(temp.etag(), Some("\"v1\""));
    drop(temp);

    assert_eq!(fixture.feed_files(), Vec::<String>::new());
}

#[test]
fn refresh_delay_shortens_after_failures() {
    let feed = FeedConfig {
        refresh: Some(Duration::from_secs(3600)),
        ..FeedConfig::default()
    };
    assert_eq!(refresh_delay(&feed, 0), Some(Duration::from_secs(3600)));
    assert_eq!(refresh_delay(&feed, 1), Some(Duration::from_secs(60)));
    assert_eq!(refresh_delay(&feed, 3), Some(Duration::from_secs(240)));
    assert_eq!(refresh_delay(&feed, 40), Some(Duration::from_secs(3600)));
    assert_eq!(refresh_delay(&FeedConfig::default(), 0), None);
}

fn config_error(feed_lines: &str) -> String {
    let text = format!("[[feed]]\nname = \"remote\"\n{feed_lines}\n");
    let error = Config::parse(Path::new("/etc/intelwall.toml"), text).unwrap_err();
    error.to_string()
}

#[test]
fn config_rejects_invalid_source_settings() {
    let cases = [
        (
            "url = \"ftp://192.0.2.1/feed\"",
            "scheme must be http or https",
        ),
        ("url = \"https:///feed\"", "invalid `url`"),
        (
            "url = \"https://192.0.2.1/\"\nrefresh = \"30s\"",
            "at least 1m",
        ),
        (
            "path = \"feed.txt\"\nrefresh = \"1h\"",
            "`refresh` needs a `url`",
        ),
        (
            "path = \"feed.txt\"\nmax_size = 10",
            "`max_size` needs a `url`",
        ),
        (
            "url = \"https://192.0.2.1/\"\nmax_size = 0",
            "greater than zero",
        ),
        (
            "url = \"https://192.0.2.1/\"\nmax_size = \"2 MB\"",
            "invalid size",
        ),
        (
            "url = \"https://192.0.2.1/\"\ntimeout = \"0s\"",
            "`timeout` must be",
        ),
        (
            "url = \"https://192.0.2.1/\"\nca_file = \"ca.pem\"",
            "absolute path",
        ),
    ];
    for (lines, expected) in cases {
        let message = config_error(lines);
        assert!(message.contains(expected), "{lines}: {message}");
    }
}

#[test]
fn config_accepts_source_settings() {
    let text = "[[feed]]\nname = \"remote\"\nurl = \"https://192.0.2.1/feed\"\nrefresh = \"1h\"\n\
                connect_timeout = \"5s\"\ntimeout = \"2m\"\nmax_size = \"64 MiB\"\n\
                ca_file = \"/etc/intelwall/ca.pem\"\n";
    let config = Config::parse(Path::new("/etc/intelwall.toml"), text.to_owned()).unwrap();
    let feed = &config.feeds[0];
    assert_eq!(feed.refresh, Some(Duration::from_secs(3600)));
    assert_eq!(feed.connect_timeout, Some(Duration::from_secs(5)));
    assert_eq!(feed.timeout, Some(Duration::from_secs(120)));
    assert_eq!(feed.max_size, Some(64 << 20));
    assert_eq!(feed.path, Path::new("/var/lib/intelwall/feeds/remote"));
}
