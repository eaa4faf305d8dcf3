//! Checks of a feed's download settings, run by `Config::validate`.

use humantime_serde::re::humantime::format_duration;

use super::MIN_REFRESH;
use crate::config::{FeedConfig, InvalidKey};

/// Checks that `url` is http or https with a host, that `refresh` is at
/// least [`MIN_REFRESH`], and that the settings only a download uses come
/// with a `url`. The error names the key at fault, and its message leaves
/// out the feed's name.
pub fn check_settings(feed: &FeedConfig) -> Result<(), InvalidKey> {
    let Some(url) = &feed.url else {
        return check_no_download_settings(feed);
    };
    check_url(url)
        .map_err(|reason| InvalidKey::new("url", format!("invalid `url` \"{url}\": {reason}")))?;
    if feed.refresh.is_some_and(|refresh| refresh < MIN_REFRESH) {
        let min = format_duration(MIN_REFRESH);
        return Err(InvalidKey::new(
            "refresh",
            format!("`refresh` must be at least {min}"),
        ));
    }
    for (name, timeout) in [
        ("connect_timeout", feed.connect_timeout),
        ("timeout", feed.timeout),
    ] {
        if timeout.is_some_and(|timeout| timeout.is_zero()) {
            return Err(InvalidKey::new(
                name,
                format!("`{name}` must be greater than zero"),
            ));
        }
    }
    if feed.max_size == Some(0) {
        return Err(InvalidKey::new(
            "max_size",
            "`max_size` must be greater than zero",
        ));
    }
    // A relative path would depend on the agent's working directory, so it
    // is rejected rather than guessed at.
    if feed.ca_file.as_ref().is_some_and(|path| path.is_relative()) {
        return Err(InvalidKey::new(
            "ca_file",
            "`ca_file` must be an absolute path",
        ));
    }
    Ok(())
}

fn check_no_download_settings(feed: &FeedConfig) -> Result<(), InvalidKey> {
    let download_only = [
        ("refresh", feed.refresh.is_some()),
        ("connect_timeout", feed.connect_timeout.is_some()),
        ("timeout", feed.timeout.is_some()),
        ("max_size", feed.max_size.is_some()),
        ("ca_file", feed.ca_file.is_some()),
    ];
    match download_only.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(InvalidKey::new(name, format!("`{name}` needs a `url`"))),
        None => Ok(()),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|error| format!("{error}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the scheme must be http or https".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the host is missing".to_owned());
    }
    Ok(())
}
