//! Trace readers: turn a job log into the tasks a simulation replays.
//!
//! Two formats are read, plain or gzip-compressed (detected from the magic bytes, not
//! the file name):
//!
//! - **Standard Workload Format** (the Parallel Workloads Archive's format): lines
//!   starting with `;` are the header, every other non-empty line is one job of 18
//!   whitespace-separated numeric fields, `-1` meaning missing. A job becomes one task
//!   of one slot: its submit time is field 2, its run time field 4. The header's
//!   `UnixStartTime` (seconds) anchors the times on the calendar.
//! - **CSV** with two columns `submit_s,run_s` (seconds, decimals allowed) and an
//!   optional header line.
//!
//! Jobs whose run time is missing or not positive cannot be replayed; they are skipped
//! and counted. A malformed line is an error naming its line number, the field and what
//! was expected, unless [`ReadOptions::skip_bad_lines`] is set, in which case it is
//! counted and skipped. Input that is not sorted by submit time is sorted (stably, so
//! jobs submitted at the same instant keep their order in the file).
//!
//! The reader streams: SWF through one reused line buffer, fields parsed in place from
//! bytes; CSV through the `csv` crate's byte records (quoted fields allowed, blank lines
//! and `#` comment lines ignored). The 22 MB SDSC Blue Horizon log (243k lines) reads in
//! well under a second in a release build.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use capstan_core::Timestamp;
use flate2::read::MultiGzDecoder;

/// One task to replay: it enters the queue at `submit_ms` and, once it has a slot,
/// runs for `run_ms`. Times are milliseconds since the trace's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Task {
    /// When the task is submitted, in milliseconds after [`Trace::origin`].
    pub submit_ms: i64,
    /// How long it runs once started, in milliseconds (always > 0).
    pub run_ms: i64,
}

/// The tasks of a trace, sorted by submit time, with what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The instant that task times count from (SWF `UnixStartTime`, else the epoch).
    pub origin: Timestamp,
    /// Tasks sorted by `submit_ms` (ties in file order).
    pub tasks: Vec<Task>,
    /// Jobs skipped because their run time was missing or not positive.
    pub skipped: u64,
    /// Malformed lines skipped under [`ReadOptions::skip_bad_lines`].
    pub bad_lines: u64,
}

impl Trace {
    /// A trace of the given tasks (sorted here) anchored at `origin`.
    pub fn from_tasks(origin: Timestamp, mut tasks: Vec<Task>) -> Self {
        tasks.sort_by_key(|t| t.submit_ms);
        Self {
            origin,
            tasks,
            skipped: 0,
            bad_lines: 0,
        }
    }

    /// Sum of all run times, in seconds.
    pub fn work_seconds(&self) -> f64 {
        self.tasks.iter().map(|t| t.run_ms as f64).sum::<f64>() / 1000.0
    }

    /// Milliseconds from the first submit to the last completion if every task
    /// started at its submit time; 0 for an empty trace.
    pub fn span_ms(&self) -> i64 {
        match (
            self.tasks.first(),
            self.tasks.iter().map(|t| t.submit_ms + t.run_ms).max(),
        ) {
            (Some(first), Some(end)) => end - first.submit_ms,
            _ => 0,
        }
    }
}

/// The file formats [`read_trace`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// Standard Workload Format.
    Swf,
    /// `submit_s,run_s` CSV.
    Csv,
}

impl TraceFormat {
    /// Guesses the format from a file name (`.swf`, `.csv`, optionally followed by
    /// `.gz`).
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".swf") {
            Some(Self::Swf)
        } else if name.ends_with(".csv") {
            Some(Self::Csv)
        } else {
            None
        }
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Swf => "swf",
            Self::Csv => "csv",
        })
    }
}

impl std::str::FromStr for TraceFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "swf" => Ok(Self::Swf),
            "csv" => Ok(Self::Csv),
            other => Err(format!(
                "unknown trace format {other:?}, expected swf or csv"
            )),
        }
    }
}

/// How to read a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// The format; `None` guesses it from the file name.
    pub format: Option<TraceFormat>,
    /// Count and skip malformed lines instead of failing on the first one.
    pub skip_bad_lines: bool,
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read (or its gzip stream is corrupt).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS or the decompressor said.
        #[source]
        source: io::Error,
    },
    /// No format was given and the file name does not tell.
    #[error(
        "{path}: cannot tell the trace format from the name, expected a .swf or .csv file or an explicit format (swf|csv)"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A line does not have the number of fields the format requires.
    #[error("line {line}: expected {expected} fields, found {found}")]
    FieldCount {
        /// 1-based line number.
        line: u64,
        /// Fields the format requires.
        expected: usize,
        /// Fields on the line.
        found: usize,
    },
    /// A field holds something other than what the format requires.
    #[error("line {line}: field {field} ({name}): expected {expected}, found {found:?}")]
    BadField {
        /// 1-based line number.
        line: u64,
        /// 1-based field number.
        field: usize,
        /// The field's name in the format.
        name: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// The text found (truncated to 40 bytes).
        found: String,
    },
}

/// SWF field names, 1-based field `i` is `SWF_FIELDS[i - 1]`.
const SWF_FIELDS: [&str; 18] = [
    "job_number",
    "submit_time",
    "wait_time",
    "run_time",
    "allocated_processors",
    "average_cpu_time",
    "used_memory",
    "requested_processors",
    "requested_time",
    "requested_memory",
    "status",
    "user_id",
    "group_id",
    "executable",
    "queue",
    "partition",
    "preceding_job",
    "think_time",
];

/// The real trace the tests, benches and examples replay: `CAPSTAN_TRACE` if set,
/// else the SDSC Blue Horizon log in `../shared/traces/` beside the repository. It may
/// not exist (a fresh clone elsewhere); callers say so and skip, or fail under CI.
pub fn sdsc_trace_path() -> PathBuf {
    std::env::var_os("CAPSTAN_TRACE").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/traces/SDSC-BLUE-2000-4.2-cln.swf.gz")
        },
        PathBuf::from,
    )
}

/// Reads the trace at `path`.
pub fn read_trace(path: &Path, options: ReadOptions) -> Result<Trace, TraceError> {
    let format = match options.format {
        Some(f) => f,
        None => TraceFormat::from_path(path).ok_or_else(|| TraceError::UnknownFormat {
            path: path.to_owned(),
        })?,
    };
    let io_err = |source| TraceError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    read_from(file, format, options.skip_bad_lines).map_err(|e| match e {
        ReadError::Io(source) => io_err(source),
        ReadError::Trace(t) => t,
    })
}

/// Reads a trace from any byte stream (plain or gzip).
pub fn read_trace_from(
    reader: impl Read,
    format: TraceFormat,
    skip_bad_lines: bool,
) -> Result<Trace, TraceError> {
    read_from(reader, format, skip_bad_lines).map_err(|e| match e {
        ReadError::Io(source) => TraceError::Io {
            path: PathBuf::from("<stream>"),
            source,
        },
        ReadError::Trace(t) => t,
    })
}

enum ReadError {
    Io(io::Error),
    Trace(TraceError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

const BUF_SIZE: usize = 256 * 1024;

fn read_from(reader: impl Read, format: TraceFormat, skip_bad: bool) -> Result<Trace, ReadError> {
    let mut buffered = BufReader::with_capacity(BUF_SIZE, reader);
    let gz = {
        let head = buffered.fill_buf()?;
        head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
    };
    if gz {
        parse_lines(
            BufReader::with_capacity(BUF_SIZE, MultiGzDecoder::new(buffered)),
            format,
            skip_bad,
        )
    } else {
        parse_lines(buffered, format, skip_bad)
    }
}

/// What one data line yielded.
enum LineOutcome {
    Task(Task),
    /// A job without a usable run time.
    Skipped,
}

/// The trace being built: tasks in file order, and whether that order is sorted.
struct Builder {
    trace: Trace,
    sorted: bool,
    skip_bad: bool,
}

impl Builder {
    fn new(skip_bad: bool) -> Self {
        Self {
            trace: Trace {
                origin: Timestamp::EPOCH,
                tasks: Vec::new(),
                skipped: 0,
                bad_lines: 0,
            },
            sorted: true,
            skip_bad,
        }
    }

    /// Records what a data line gave: a task, a skipped job, or (unless skipping bad
    /// lines) the error that ends the read.
    fn push(&mut self, outcome: Result<LineOutcome, TraceError>) -> Result<(), ReadError> {
        match outcome {
            Ok(LineOutcome::Task(task)) => {
                if let Some(last) = self.trace.tasks.last() {
                    self.sorted &= last.submit_ms <= task.submit_ms;
                }
                self.trace.tasks.push(task);
            }
            Ok(LineOutcome::Skipped) => self.trace.skipped += 1,
            Err(_) if self.skip_bad => self.trace.bad_lines += 1,
            Err(e) => return Err(ReadError::Trace(e)),
        }
        Ok(())
    }

    fn finish(mut self) -> Trace {
        if !self.sorted {
            self.trace.tasks.sort_by_key(|t| t.submit_ms);
        }
        self.trace
    }
}

fn parse_lines(
    reader: impl BufRead,
    format: TraceFormat,
    skip_bad: bool,
) -> Result<Trace, ReadError> {
    match format {
        TraceFormat::Swf => parse_swf(reader, skip_bad),
        TraceFormat::Csv => parse_csv(reader, skip_bad),
    }
}

fn parse_swf(mut reader: impl BufRead, skip_bad: bool) -> Result<Trace, ReadError> {
    let mut out = Builder::new(skip_bad);
    let mut line = Vec::with_capacity(256);
    let mut line_no: u64 = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        if text[0] == b';' {
            if let Some(origin) = swf_header_origin(text) {
                out.trace.origin = origin;
            }
            continue;
        }
        out.push(parse_swf_line(text, line_no))?;
    }
    Ok(out.finish())
}

/// Reads `submit_s,run_s` records with the `csv` crate: fields are trimmed, quoted
/// fields are allowed, blank lines and lines starting with `#` are ignored, and the
/// first record is a header if its first field does not start like a number.
fn parse_csv(reader: impl Read, skip_bad: bool) -> Result<Trace, ReadError> {
    let mut out = Builder::new(skip_bad);
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        // Records of the wrong length are reported (or skipped) by us, by line.
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .buffer_capacity(BUF_SIZE)
        .from_reader(LineCounter::new(reader));
    let mut record = csv::ByteRecord::new();
    let mut seen_data = false;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(ReadError::Io(csv_io_error(e))),
        }
        // The record's last byte (its terminator, or its own last byte at the end of
        // the input) is on the record's line.
        let last_byte = csv.position().byte().saturating_sub(1);
        let line = csv.get_mut().line_of(last_byte);
        let first = record.get(0).unwrap_or_default();
        // A line of blanks, or a comment indented past the `#` the reader knows.
        if (record.len() == 1 && first.is_empty()) || first.first() == Some(&b'#') {
            continue;
        }
        if !seen_data {
            seen_data = true;
            if is_csv_header(first) {
                continue;
            }
        }
        out.push(parse_csv_record(&record, line))?;
    }
    Ok(out.finish())
}

/// Numbers lines for the CSV reader: the `csv` crate's own record positions start where
/// the previous record ended, before any blank or comment lines, so error messages would
/// name the wrong line. This remembers the offsets of the newlines read ahead but not
/// yet passed, so the line of any later byte is exact.
struct LineCounter<R> {
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// Offsets of newlines read but not yet passed by [`LineCounter::line_of`].
    ahead: VecDeque<u64>,
    /// Newlines passed.
    passed: u64,
}

impl<R: Read> LineCounter<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            ahead: VecDeque::new(),
            passed: 0,
        }
    }

    /// The 1-based line of the byte at `offset`; offsets must not decrease from call
    /// to call.
    fn line_of(&mut self, offset: u64) -> u64 {
        while self.ahead.front().is_some_and(|&nl| nl < offset) {
            self.ahead.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let start = self.offset;
        self.ahead.extend(
            buf[..n]
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .map(|(i, _)| start + i as u64),
        );
        self.offset += n as u64;
        Ok(n)
    }
}

/// The reader's error as an I/O error: with flexible records and byte fields the only
/// errors the `csv` crate reports are those of the underlying stream (a failed read,
/// a corrupt gzip stream).
fn csv_io_error(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    }
}

/// `; UnixStartTime: 956700003` gives the origin; other header lines give nothing.
fn swf_header_origin(text: &[u8]) -> Option<Timestamp> {
    let body = std::str::from_utf8(&text[1..]).ok()?.trim();
    let (key, value) = body.split_once(':')?;
    if key.trim() != "UnixStartTime" {
        return None;
    }
    value
        .trim()
        .parse::<i64>()
        .ok()
        .map(Timestamp::from_unix_secs)
}

fn parse_swf_line(text: &[u8], line: u64) -> Result<LineOutcome, TraceError> {
    let mut submit = 0i64;
    let mut run = None;
    let mut count = 0usize;
    for field in text
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
    {
        count += 1;
        if count > SWF_FIELDS.len() {
            continue;
        }
        let value = parse_ms(field).ok_or_else(|| TraceError::BadField {
            line,
            field: count,
            name: SWF_FIELDS[count - 1],
            expected: "a number (-1 if missing)",
            found: shown(field),
        })?;
        match count {
            2 => {
                if value < 0 {
                    return Err(TraceError::BadField {
                        line,
                        field: 2,
                        name: SWF_FIELDS[1],
                        expected: "a submit time in seconds >= 0",
                        found: shown(field),
                    });
                }
                submit = value;
            }
            4 => run = Some(value),
            _ => {}
        }
    }
    if count != SWF_FIELDS.len() {
        return Err(TraceError::FieldCount {
            line,
            expected: SWF_FIELDS.len(),
            found: count,
        });
    }
    Ok(match run {
        Some(run_ms) if run_ms > 0 => LineOutcome::Task(Task {
            submit_ms: submit,
            run_ms,
        }),
        _ => LineOutcome::Skipped,
    })
}

fn is_csv_header(first_field: &[u8]) -> bool {
    !matches!(first_field.first(), Some(b'0'..=b'9' | b'-' | b'+' | b'.'))
}

fn parse_csv_record(record: &csv::ByteRecord, line: u64) -> Result<LineOutcome, TraceError> {
    let (Some(submit), Some(run), None) = (record.get(0), record.get(1), record.get(2)) else {
        return Err(TraceError::FieldCount {
            line,
            expected: 2,
            found: record.len(),
        });
    };
    let submit_ms = parse_ms(submit)
        .filter(|&v| v >= 0)
        .ok_or_else(|| TraceError::BadField {
            line,
            field: 1,
            name: "submit_s",
            expected: "a submit time in seconds >= 0",
            found: shown(submit),
        })?;
    if run.is_empty() {
        return Ok(LineOutcome::Skipped);
    }
    let run_ms = parse_ms(run).ok_or_else(|| TraceError::BadField {
        line,
        field: 2,
        name: "run_s",
        expected: "a run time in seconds (-1 or empty if missing)",
        found: shown(run),
    })?;
    Ok(if run_ms > 0 {
        LineOutcome::Task(Task { submit_ms, run_ms })
    } else {
        LineOutcome::Skipped
    })
}

fn shown(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(&field[..field.len().min(40)]);
    s.into_owned()
}

/// Parses seconds (an integer, or a decimal such as `12.5` or `1e3`) into whole
/// milliseconds, rounding half away from zero. Integers take a fast path without
/// floating point.
fn parse_ms(field: &[u8]) -> Option<i64> {
    let (neg, digits) = match field.first()? {
        b'-' => (true, &field[1..]),
        b'+' => (false, &field[1..]),
        _ => (false, field),
    };
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let v = digits
            .iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
        return Some(if neg { -v } else { v } * 1000);
    }
    let s = std::str::from_utf8(field).ok()?;
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() || v.abs() > 1e15 {
        return None;
    }
    Some((v * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn swf(text: &str) -> Result<Trace, TraceError> {
        read_trace_from(text.as_bytes(), TraceFormat::Swf, false)
    }

    const HEADER: &str = "; Version: 2.2\n; UnixStartTime: 956700003\n;\n";

    #[test]
    fn swf_reads_submit_and_run_time_and_the_origin() {
        let t = swf(&format!(
            "{HEADER}    9   430593     13  50866  256  25381    -1  256  64800    -1  1  95  -1  -1  4 -1 -1 -1\n\
             10   430730     31  10770  256   5343    -1  256  28800    -1  1  95  -1  -1  4 -1 -1 -1\n"
        ))
        .unwrap();
        assert_eq!(t.origin, Timestamp::from_unix_secs(956_700_003));
        assert_eq!(
            t.tasks,
            vec![
                Task {
                    submit_ms: 430_593_000,
                    run_ms: 50_866_000
                },
                Task {
                    submit_ms: 430_730_000,
                    run_ms: 10_770_000
                }
            ]
        );
        assert_eq!((t.skipped, t.bad_lines), (0, 0));
    }

    #[test]
    fn swf_skips_and_counts_jobs_without_a_positive_run_time() {
        let t = swf("1 10 0 -1 1 -1 -1 1 -1 -1 5 1 -1 -1 1 -1 -1 -1\n\
             2 20 0 0 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n\
             3 30 0 7 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n")
        .unwrap();
        assert_eq!(t.skipped, 2);
        assert_eq!(
            t.tasks,
            vec![Task {
                submit_ms: 30_000,
                run_ms: 7_000
            }]
        );
    }

    #[test]
    fn swf_unsorted_input_is_sorted_stably() {
        let t = swf("1 50 0 1 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n\
             2 10 0 2 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n\
             3 50 0 3 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n")
        .unwrap();
        let runs: Vec<i64> = t.tasks.iter().map(|t| t.run_ms / 1000).collect();
        assert_eq!(runs, vec![2, 1, 3]);
    }

    #[test]
    fn swf_malformed_field_names_line_field_and_expectation() {
        let err = swf(&format!(
            "{HEADER}1 10 0 x5 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n"
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 4: field 4 (run_time): expected a number (-1 if missing), found \"x5\""
        );
    }

    #[test]
    fn swf_wrong_field_count_is_an_error_unless_skipping() {
        let text = "1 10 0 5 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n1 2 3\n";
        let err = swf(text).unwrap_err();
        assert_eq!(err.to_string(), "line 2: expected 18 fields, found 3");
        let t = read_trace_from(text.as_bytes(), TraceFormat::Swf, true).unwrap();
        assert_eq!((t.tasks.len(), t.bad_lines), (1, 1));
    }

    #[test]
    fn swf_negative_submit_time_is_malformed() {
        let err = swf("1 -1 0 5 1 -1 -1 1 -1 -1 1 1 -1 -1 1 -1 -1 -1\n").unwrap_err();
        assert!(err.to_string().contains("field 2 (submit_time)"), "{err}");
    }

    #[test]
    fn csv_with_header_decimals_and_missing_run_times() {
        let t = read_trace_from(
            "submit_s,run_s\n0,10\n5.5, 2.25\n7,-1\n8,\n\n".as_bytes(),
            TraceFormat::Csv,
            false,
        )
        .unwrap();
        assert_eq!(
            t.tasks,
            vec![
                Task {
                    submit_ms: 0,
                    run_ms: 10_000
                },
                Task {
                    submit_ms: 5_500,
                    run_ms: 2_250
                }
            ]
        );
        assert_eq!(t.skipped, 2);
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let err = read_trace_from("0,10\n3,abc\n".as_bytes(), TraceFormat::Csv, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: field 2 (run_s): expected a run time in seconds (-1 or empty if missing), found \"abc\""
        );
        let err = read_trace_from("0,10,4\n".as_bytes(), TraceFormat::Csv, false).unwrap_err();
        assert_eq!(err.to_string(), "line 1: expected 2 fields, found 3");
        // A header is only allowed before the first data line.
        let err = read_trace_from("0,10\nsubmit_s,run_s\n".as_bytes(), TraceFormat::Csv, false)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("line 2: field 1 (submit_s)"),
            "{err}"
        );
    }

    #[test]
    fn csv_line_numbers_count_comments_blank_lines_and_the_header() {
        let text = "# exported 2026-01-05\n\nsubmit_s,run_s\r\n  # indented note\n0,10\n3,abc\n";
        let err = read_trace_from(text.as_bytes(), TraceFormat::Csv, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 6: field 2 (run_s): expected a run time in seconds (-1 or empty if missing), found \"abc\""
        );
        let err = read_trace_from("0,10\n\n7\n".as_bytes(), TraceFormat::Csv, false).unwrap_err();
        assert_eq!(err.to_string(), "line 3: expected 2 fields, found 1");
        let err = read_trace_from("0,10\n-4,1\n".as_bytes(), TraceFormat::Csv, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: field 1 (submit_s): expected a submit time in seconds >= 0, found \"-4\""
        );
    }

    #[test]
    fn csv_line_numbers_stay_exact_past_the_read_buffer() {
        // ~1 MB, several reader buffers: blank and comment lines throughout, then a
        // bad line; its number must count every line before it.
        let mut text = String::from("submit_s,run_s\n");
        for i in 0..60_000 {
            text.push_str(&format!("{i},5\n"));
            if i % 7 == 0 {
                text.push_str("\n# note\n");
            }
        }
        let lines_before = text.lines().count() as u64;
        text.push_str("60000,oops\n");
        let err = read_trace_from(text.as_bytes(), TraceFormat::Csv, false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("line {}: field 2 (run_s)", lines_before + 1)),
            "{err}"
        );
    }

    #[test]
    fn csv_quoted_fields_and_crlf_line_ends() {
        let t = read_trace_from(
            "\"submit_s\",\"run_s\"\r\n\"12\",\"3.5\"\r\n4,1\r\n".as_bytes(),
            TraceFormat::Csv,
            false,
        )
        .unwrap();
        assert_eq!(
            t.tasks,
            vec![
                Task {
                    submit_ms: 4_000,
                    run_ms: 1_000
                },
                Task {
                    submit_ms: 12_000,
                    run_ms: 3_500
                }
            ]
        );
    }

    #[test]
    fn csv_skip_bad_lines_counts_every_kind_of_bad_line() {
        let text = "submit_s,run_s\n0,10\nx,1\n2,y\n3,4,5\n6\n8,2\n9,0\n";
        let t = read_trace_from(text.as_bytes(), TraceFormat::Csv, true).unwrap();
        let submits: Vec<i64> = t.tasks.iter().map(|t| t.submit_ms / 1000).collect();
        assert_eq!(submits, vec![0, 8]);
        assert_eq!((t.bad_lines, t.skipped), (4, 1));
        let err = read_trace_from(text.as_bytes(), TraceFormat::Csv, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: field 1 (submit_s): expected a submit time in seconds >= 0, found \"x\""
        );
    }

    #[test]
    fn gzip_is_detected_by_magic_bytes_not_by_name() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"submit_s,run_s\n3,4\n1,2\n").unwrap();
        let bytes = enc.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.csv");
        std::fs::write(&path, bytes).unwrap();
        let t = read_trace(&path, ReadOptions::default()).unwrap();
        assert_eq!(t.tasks[0].submit_ms, 1_000);
        assert_eq!(t.tasks.len(), 2);
    }

    #[test]
    fn format_comes_from_the_name_or_is_an_error() {
        assert_eq!(
            TraceFormat::from_path(Path::new("x/SDSC.swf.gz")),
            Some(TraceFormat::Swf)
        );
        assert_eq!(
            TraceFormat::from_path(Path::new("a.CSV")),
            Some(TraceFormat::Csv)
        );
        let err =
            read_trace(Path::new("/nonexistent/trace.txt"), ReadOptions::default()).unwrap_err();
        assert!(matches!(err, TraceError::UnknownFormat { .. }), "{err}");
        let err =
            read_trace(Path::new("/nonexistent/trace.swf"), ReadOptions::default()).unwrap_err();
        assert!(matches!(err, TraceError::Io { .. }), "{err}");
    }
}
