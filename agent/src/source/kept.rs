//! The kept copy of a downloaded feed, its temporary successor and the
//! sidecar file with the HTTP validators.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;
use ureq::http::HeaderMap;

use super::SourceError;
use super::http::AttemptError;
use crate::config::FeedConfig;

/// The validators of a download, stored in `<path>.meta` as JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Validators {
    /// The URL they belong to: a feed whose `url` changed must not send the
    /// old server's `ETag` to the new one.
    #[serde(default)]
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    /// Reads the validators of the kept copy of `feed`. Returns empty
    /// validators when the copy is missing, so that a 304 cannot stand in for
    /// a file that is not there, and when they were stored for another URL.
    pub fn for_kept_copy(feed: &FeedConfig, url: &str) -> Validators {
        if !feed.path.is_file() {
            return Validators::default();
        }
        let meta_path = meta_path(&feed.path);
        let Ok(text) = std::fs::read_to_string(&meta_path) else {
            return Validators::default();
        };
        match serde_json::from_str::<Validators>(&text) {
            Ok(validators) if validators.url == url => validators,
            Ok(_) => Validators::default(),
            Err(error) => {
                tracing::warn!(
                    feed = %feed.name,
                    path = %meta_path.display(),
                    %error,
                    "ignoring unreadable validators file; the next download is unconditional"
                );
                Validators::default()
            }
        }
    }

    pub fn from_headers(url: &str, headers: &HeaderMap) -> Validators {
        let text = |name: &str| {
            let value = headers.get(name)?.to_str().ok()?;
            Some(value.to_owned())
        };
        Validators {
            url: url.to_owned(),
            etag: text("etag"),
            last_modified: text("last-modified"),
        }
    }

    pub fn is_some(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// Returns the path of a kept copy's sidecar file: the copy's path with
/// `.meta` appended.
pub(super) fn meta_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".meta");
    PathBuf::from(name)
}

/// A complete download in a temporary file next to the kept copy.
///
/// Dropping it deletes the file; [`TempCopy::commit`] makes it the kept copy.
#[derive(Debug)]
pub struct TempCopy {
    file: NamedTempFile,
    kept: PathBuf,
    validators: Validators,
    bytes: u64,
}

impl TempCopy {
    /// Creates an empty temporary file in the kept copy's directory, so that
    /// the commit is a rename within one file system.
    pub(super) fn create(kept: &Path, validators: Validators) -> Result<TempCopy, AttemptError> {
        let directory = kept.parent().unwrap_or(Path::new("."));
        let write_error = |source| AttemptError::Write {
            path: directory.to_owned(),
            source,
        };
        std::fs::create_dir_all(directory).map_err(write_error)?;
        let name = kept.file_name().unwrap_or_default().to_string_lossy();
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".download")
            .tempfile_in(directory)
            .map_err(write_error)?;
        Ok(TempCopy {
            file,
            kept: kept.to_owned(),
            validators,
            bytes: 0,
        })
    }

    /// Flushes the body to disk, so that a crash after the rename cannot
    /// leave an empty kept copy.
    pub(super) fn finish(&mut self, bytes: u64) -> Result<(), AttemptError> {
        self.bytes = bytes;
        self.file
            .as_file()
            .sync_all()
            .map_err(|source| AttemptError::Write {
                path: self.file.path().to_owned(),
                source,
            })
    }

    /// Returns the path of the temporary file, to parse before the commit.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Size of the body in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn etag(&self) -> Option<&str> {
        self.validators.etag.as_deref()
    }

    pub fn last_modified(&self) -> Option<&str> {
        self.validators.last_modified.as_deref()
    }

    /// Renames the download over the kept copy and stores its validators.
    ///
    /// The sidecar is removed first and written last: a crash in between
    /// leaves a copy without validators, which costs one unconditional
    /// download, never a 304 that vouches for the wrong file.
    pub fn commit(self) -> Result<(), SourceError> {
        let meta = meta_path(&self.kept);
        remove_if_present(&meta)?;
        self.file
            .persist(&self.kept)
            .map_err(|error| SourceError::Write {
                path: self.kept.clone(),
                source: error.error,
            })?;
        sync_directory(&self.kept);
        if self.validators.is_some() {
            write_meta(&meta, &self.validators)?;
        }
        Ok(())
    }
}

impl Write for TempCopy {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.file.write(buffer)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn remove_if_present(path: &Path) -> Result<(), SourceError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SourceError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_meta(path: &Path, validators: &Validators) -> Result<(), SourceError> {
    let text = serde_json::to_string_pretty(validators).expect("validators serialise to JSON");
    std::fs::write(path, text).map_err(|source| SourceError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Makes the rename durable. A failure only weakens durability after a
/// power loss, so it is logged rather than returned.
fn sync_directory(kept: &Path) {
    let directory = kept.parent().unwrap_or(Path::new("."));
    if let Err(error) = File::open(directory).and_then(|dir| dir.sync_all()) {
        tracing::warn!(
            path = %directory.display(),
            %error,
            "failed to sync the feed directory; the new copy may not survive a power loss"
        );
    }
}

/// Returns the time since the kept copy at `path` was written, from its
/// modification time, or `None` when the file is missing or the time is
/// unknown.
pub fn kept_copy_age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    modified.elapsed().ok()
}
