//! The bytes of a feed file, decompressed when the file is gzip or zstd.
//!
//! Compression is detected from the first bytes (the gzip and zstd magic
//! numbers), not from the file name, because downloaded feeds are often
//! saved under a name without the extension, and a `.gz` name over plain
//! text still reads.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use super::FeedError;

const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];

/// Read buffer size; larger than the 8 KiB default to cut read calls on
/// feeds of millions of lines.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Maximum size of a whole-document feed (STIX, MISP, Cloudflare) after
/// decompression. Such a feed is parsed in memory, so this guards against a
/// compressed file that expands without bound; no real feed comes close.
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024 * 1024;

/// Returns whether a file starting with `start` is gzip or zstd.
pub fn is_compressed(start: &[u8]) -> bool {
    start.starts_with(GZIP_MAGIC) || start.starts_with(ZSTD_MAGIC)
}

/// A feed's bytes, decompressed if they start with a gzip or zstd header.
pub enum Input<R: BufRead> {
    Plain(R),
    Gzip(BufReader<MultiGzDecoder<R>>),
    Zstd(BufReader<zstd::Decoder<'static, R>>),
}

impl Input<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, FeedError> {
        let open_error = |source| FeedError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        Input::new(reader).map_err(open_error)
    }
}

impl<R: BufRead> Input<R> {
    /// Looks at the first bytes of `reader` to pick a decoder. A file
    /// shorter than a magic number reads as plain text.
    pub fn new(mut reader: R) -> io::Result<Self> {
        let start = reader.fill_buf()?;
        if start.starts_with(GZIP_MAGIC) {
            let decoder = MultiGzDecoder::new(reader);
            return Ok(Input::Gzip(BufReader::with_capacity(
                READ_BUFFER_BYTES,
                decoder,
            )));
        }
        if start.starts_with(ZSTD_MAGIC) {
            let decoder = zstd::Decoder::with_buffer(reader)?;
            return Ok(Input::Zstd(BufReader::with_capacity(
                READ_BUFFER_BYTES,
                decoder,
            )));
        }
        Ok(Input::Plain(reader))
    }
}

impl<R: BufRead> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Plain(reader) => reader.read(buf),
            Input::Gzip(reader) => reader.read(buf),
            Input::Zstd(reader) => reader.read(buf),
        }
    }
}

impl<R: BufRead> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Input::Plain(reader) => reader.fill_buf(),
            Input::Gzip(reader) => reader.fill_buf(),
            Input::Zstd(reader) => reader.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match self {
            Input::Plain(reader) => reader.consume(amount),
            Input::Gzip(reader) => reader.consume(amount),
            Input::Zstd(reader) => reader.consume(amount),
        }
    }
}

/// Reads a whole document into memory, without a UTF-8 byte-order mark.
pub fn read_document<R: BufRead>(input: Input<R>, path: &Path) -> Result<Vec<u8>, FeedError> {
    let mut bytes = Vec::new();
    let mut limited = input.take(MAX_DOCUMENT_BYTES + 1);
    limited
        .read_to_end(&mut bytes)
        .map_err(|source| FeedError::Read {
            path: path.to_owned(),
            line: 0,
            source,
        })?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(FeedError::TooLarge {
            path: path.to_owned(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<u8> {
        let mut input = Input::new(bytes).unwrap();
        let mut out = Vec::new();
        input.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn plain_bytes_pass_through() {
        assert_eq!(read_all(b"192.0.2.1\n"), b"192.0.2.1\n");
        assert_eq!(read_all(b"\x1F"), b"\x1F");
        assert_eq!(read_all(b""), b"");
    }

    #[test]
    fn gzip_is_decompressed() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"192.0.2.1\n").unwrap();
        let compressed = encoder.finish().unwrap();
        assert_eq!(read_all(&compressed), b"192.0.2.1\n");
    }

    #[test]
    fn zstd_is_decompressed() {
        let compressed = zstd::encode_all(&b"198.51.100.0/24\n"[..], 3).unwrap();
        assert_eq!(read_all(&compressed), b"198.51.100.0/24\n");
    }

    #[test]
    fn corrupt_gzip_fails_read() {
        let mut input = Input::new(&b"\x1F\x8B\x08\x00garbage"[..]).unwrap();
        let mut out = Vec::new();
        assert!(input.read_to_end(&mut out).is_err());
    }
}
