//! How read commands print what the server answered: `-o table` (default; ASCII tables
//! in Markdown layout, readable in a terminal and pasteable into a README), `-o json`
//! (the server's body, pretty-printed) or `-o yaml` (the same, as YAML).
//!
//! Tables show a chosen subset of the fields (some commands print a few lines of text
//! around them); json and yaml show everything. List
//! commands that follow continuation tokens print `{"items": [...]}` with the items
//! of every page.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use comfy_table::{Table, presets};
use serde_json::Value;

/// Output formats of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Columns for people.
    #[default]
    Table,
    /// The server's JSON, pretty-printed.
    Json,
    /// The server's JSON as YAML.
    Yaml,
}

/// The `-o/--output` flag.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Prints `body` as JSON or YAML, or as the table `table` builds from it.
pub fn print(
    format: Format,
    body: &Value,
    table: impl FnOnce(&Value) -> Table,
) -> anyhow::Result<()> {
    print_as(format, body, |b| Ok(serde_norway::to_value(b)?), table)
}

/// Like [`print`], with `yaml` turning the body into the YAML document (to choose the
/// order of its keys: JSON objects here are sorted by key).
pub fn print_as(
    format: Format,
    body: &Value,
    yaml: impl FnOnce(&Value) -> anyhow::Result<serde_norway::Value>,
    table: impl FnOnce(&Value) -> Table,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => {
            let mut t = table(body).to_string();
            t.push('\n');
            t
        }
        Format::Json => {
            let mut t = serde_json::to_string_pretty(body)?;
            t.push('\n');
            t
        }
        Format::Yaml => serde_norway::to_string(&yaml(body)?)?,
    };
    #[allow(clippy::print_stdout)] // the listing is the command's output
    {
        print!("{text}");
    }
    Ok(())
}

/// Prints `body` as JSON or YAML, or (`-o table`) as the text `text` makes of it: for
/// commands whose human form is more than one table.
pub fn print_text(
    format: Format,
    body: &Value,
    text: impl FnOnce(&Value) -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => text(body),
        Format::Json => {
            let mut t = serde_json::to_string_pretty(body)?;
            t.push('\n');
            t
        }
        Format::Yaml => serde_norway::to_string(body)?,
    };
    #[allow(clippy::print_stdout)] // the text is the command's output
    {
        print!("{text}");
    }
    Ok(())
}

/// An empty table with this header, in the house style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::ASCII_MARKDOWN);
    t.set_header(header.to_vec());
    t
}

/// A field of `v` for a table cell: strings bare, null/missing as `-`, others as JSON.
pub fn cell(v: &Value, key: &str) -> String {
    show(v.get(key).unwrap_or(&Value::Null))
}

/// A value for a table cell: strings bare, null as `-`, others as JSON.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `items` array of a list answer (empty when missing).
pub fn items(body: &Value) -> &[Value] {
    body.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `{"items": [...]}`.
pub fn item_list(items: Vec<Value>) -> Value {
    serde_json::json!({ "items": items })
}

/// An output file being written: a temporary file beside `path`, renamed over it by
/// [`PendingFile::commit`] once complete, and removed if dropped before (an error or
/// a panic), so `path` never holds half a file. It is created before the replay, so a
/// path that cannot be written fails at once. (`tempfile::NamedTempFile::persist`
/// does the same; `tempfile` is only a test dependency of the binary, and this needs
/// no more than a unique name beside the target and a rename.)
pub(crate) struct PendingFile {
    path: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    flag: &'static str,
}

impl PendingFile {
    /// Creates the temporary file for `path` (named after `flag` in errors).
    pub(crate) fn create(path: &Path, flag: &'static str) -> anyhow::Result<Self> {
        let name = path
            .file_name()
            .with_context(|| format!("{flag}: {} is not a file name", path.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| format!("{flag}: cannot write {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            temp,
            file: Some(file),
            flag,
        })
    }

    /// Writes `contents` and moves the file into place.
    pub(crate) fn commit(mut self, contents: &[u8]) -> anyhow::Result<()> {
        let mut file = self.file.take().expect("not committed yet");
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("{}: cannot write {}", self.flag, self.path.display()))?;
        drop(file);
        std::fs::rename(&self.temp, &self.path)
            .with_context(|| format!("{}: cannot write {}", self.flag, self.path.display()))?;
        self.file = None;
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_ascii_markdown() {
        let mut t = table(&["ID", "MAX"]);
        t.add_row(vec![
            "ci/linux".to_owned(),
            cell(&serde_json::json!({"max": 4}), "max"),
        ]);
        let s = t.to_string();
        assert!(s.contains("| ID       | MAX |"), "{s}");
        assert!(s.contains("| ci/linux | 4   |"), "{s}");
        assert!(s.is_ascii());
    }
}
