//! Loading one large line-format file on every core.
//!
//! The file is cut into parts at line ends, one part a worker. Each worker
//! parses its part into a store of its own (strings, profiles, records), so
//! workers share nothing while they parse. The parts then join the feed's
//! load in file order: profiles are copied into the main store, records
//! rewritten to the copied ids, and line numbers of diagnostics moved on by
//! the lines of the parts before.
//!
//! Only plain `list` and `jsonl` files are cut: a compressed stream cannot be
//! entered in the middle, a CSV field may hold a line end inside quotes, and
//! the document formats are parsed whole.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use jiff::Timestamp;
use rayon::prelude::*;

use super::input::READ_BUFFER_BYTES;
use super::lines::LineReader;
use super::load::{FeedLoad, LoadedPart};
use super::{FeedError, FeedReport, jsonl, list};
use crate::config::{FeedConfig, FeedFormat};
use crate::intel::Intel;

/// Files smaller than this load on one core: below it, cutting and joining
/// cost more than they save.
pub const MIN_PARALLEL_BYTES: u64 = 4 * 1024 * 1024;

/// Returns whether a feed of `format` in a file of `size` bytes starting
/// with `start` loads in parts.
pub fn suits(format: FeedFormat, size: u64, start: &[u8]) -> bool {
    matches!(format, FeedFormat::List | FeedFormat::Jsonl)
        && size >= MIN_PARALLEL_BYTES
        && !super::input::is_compressed(start)
        && rayon::current_num_threads() > 1
}

/// One part's result: its store, what it loaded and how many lines it had.
struct Part {
    fragment: Intel,
    loaded: LoadedPart,
    lines: u64,
}

/// Loads the file in at most `parts` parts, on the global thread pool.
pub fn load(
    config: &FeedConfig,
    format: FeedFormat,
    size: u64,
    parts: usize,
    intel: &mut Intel,
    now: Timestamp,
) -> Result<FeedReport, FeedError> {
    let path = config.path.as_path();
    let bounds = part_bounds(path, size, parts)?;
    let parts: Vec<Result<Part, FeedError>> = bounds
        .par_iter()
        .enumerate()
        .map(|(index, &(start, end))| {
            // The first part's records become the feed's, so they get room
            // for the whole file.
            let records_end = if index == 0 { size } else { end };
            load_part(config, format, start, end, records_end, now)
        })
        .collect();

    let mut load = FeedLoad::new(config, intel, now, format);
    load.reserve_for(
        parts
            .iter()
            .filter_map(|part| part.as_ref().ok())
            .map(|part| &part.fragment),
    );
    let mut lines_before = 0;
    for part in parts {
        let part = part.map_err(|error| error.shift_lines(lines_before))?;
        load.absorb(&part.fragment, part.loaded, lines_before);
        lines_before += part.lines;
    }
    load.finish()
}

/// Loads `start..end` of the file into a store of its own, with room for
/// the records of `start..records_end`.
fn load_part(
    config: &FeedConfig,
    format: FeedFormat,
    start: u64,
    end: u64,
    records_end: u64,
    now: Timestamp,
) -> Result<Part, FeedError> {
    let path = config.path.as_path();
    let at_file_start = start == 0;
    let sample = sample_lines(path, start, end)?;
    let part_lines = estimate_lines(end - start, sample);
    let records = estimate_lines(records_end - start, sample);
    let file = open_at(path, start)?;
    let reader = BufReader::with_capacity(READ_BUFFER_BYTES, file.take(end - start));
    let mut lines = if at_file_start {
        LineReader::new(reader, path)
    } else {
        LineReader::for_part(reader, path)
    };

    let mut fragment = Intel::new();
    let mut load = FeedLoad::new(config, &mut fragment, now, format);
    load.reserve_lines(part_lines, records);
    match format {
        FeedFormat::List => list::load(&mut lines, &mut load)?,
        FeedFormat::Jsonl => jsonl::load(&mut lines, &mut load)?,
        _ => unreachable!("only line formats load in parts"),
    }
    let loaded = load.into_part();
    Ok(Part {
        fragment,
        loaded,
        lines: lines.lines_read(),
    })
}

/// Counts the line ends in the first 64 KiB of `start..end` of the file.
/// Returns them with the number of bytes read.
fn sample_lines(path: &Path, start: u64, end: u64) -> Result<(u64, u64), FeedError> {
    const SAMPLE: u64 = 64 * 1024;
    let mut sample = Vec::with_capacity(SAMPLE as usize);
    open_at(path, start)?
        .take(SAMPLE.min(end - start))
        .read_to_end(&mut sample)
        .map_err(|source| FeedError::Read {
            path: path.to_owned(),
            line: 0,
            source,
        })?;
    let line_ends = memchr::memchr_iter(b'\n', &sample).count() as u64;
    Ok((line_ends, sample.len() as u64))
}

/// Estimates the lines in `bytes` bytes at the density of a sample from
/// [`sample_lines`], with a tenth to spare.
fn estimate_lines(bytes: u64, (line_ends, sampled): (u64, u64)) -> usize {
    let estimate = bytes * line_ends.max(1) / sampled.max(1);
    (estimate + estimate / 10) as usize
}

/// Cuts `0..size` into at most `count` ranges that each end after a line
/// end (or at the end of the file).
fn part_bounds(path: &Path, size: u64, count: usize) -> Result<Vec<(u64, u64)>, FeedError> {
    let read_error = |source| FeedError::Read {
        path: path.to_owned(),
        line: 0,
        source,
    };
    let mut file = open_at(path, 0)?;
    let mut cuts = vec![0];
    let mut buffer = vec![0u8; 64 * 1024];
    for index in 1..count as u64 {
        let mut at = (size * index / count as u64).max(*cuts.last().expect("cuts start at 0"));
        file.seek(SeekFrom::Start(at)).map_err(read_error)?;
        // Move to just past the next line end; a part that would start
        // inside an overlong line starts after it instead.
        loop {
            let read = file.read(&mut buffer).map_err(read_error)?;
            if read == 0 {
                at = size;
                break;
            }
            if let Some(newline) = memchr::memchr(b'\n', &buffer[..read]) {
                at += newline as u64 + 1;
                break;
            }
            at += read as u64;
        }
        cuts.push(at);
    }
    cuts.push(size);
    cuts.dedup();
    Ok(cuts.windows(2).map(|pair| (pair[0], pair[1])).collect())
}

/// Opens the feed file at `path` and moves to byte `offset`.
fn open_at(path: &Path, offset: u64) -> Result<File, FeedError> {
    let mut file = File::open(path).map_err(|source| FeedError::Open {
        path: path.to_owned(),
        source,
    })?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|source| FeedError::Read {
            path: path.to_owned(),
            line: 0,
            source,
        })?;
    Ok(file)
}
