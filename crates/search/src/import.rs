//! Readers of article corpora: BEIR `corpus.jsonl`, generic JSONL, directories of text files.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{abridge, Result, SearchError};

/// One document to index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    /// Unique id; importing an id again replaces the earlier document.
    pub id: String,
    /// Title (may be empty).
    pub title: String,
    /// Body text.
    pub body: String,
}

/// Which JSON fields of a JSONL record hold the id, title and body.
///
/// The rules, for `index` and `eval` alike ([`read_corpus`]): the id is a string or an
/// integer; title and body are strings, or null (empty); anything else in them (a number, a
/// list, an object) is an error naming the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMapping {
    /// Id field (required in every record; a string or an integer).
    pub id: String,
    /// Title field (optional in records: missing or null is an empty title, and a warning
    /// is logged when no record of a file has it; `None` = no title).
    pub title: Option<String>,
    /// Body field (required in every record: a record without it, most likely a wrong field
    /// name, is a [`SearchError::MissingField`] naming the line, which `skip_bad_lines`
    /// skips; null is an empty body).
    pub body: String,
}

impl FieldMapping {
    /// BEIR `corpus.jsonl`: `_id`, `title`, `text`.
    pub fn beir() -> Self {
        FieldMapping {
            id: "_id".into(),
            title: Some("title".into()),
            body: "text".into(),
        }
    }
}

impl Default for FieldMapping {
    fn default() -> Self {
        FieldMapping::beir()
    }
}

/// Options of an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportOptions {
    /// Total `IndexWriter` memory budget in bytes (default 256 MB). Each indexing thread
    /// needs at least 15 MB, so small budgets use fewer threads.
    pub memory_budget_bytes: usize,
    /// Indexing threads (default: available cores; at most 8, tantivy's limit).
    pub threads: Option<usize>,
    /// Count and skip malformed JSONL lines instead of failing (default `false`).
    pub skip_bad_lines: bool,
    /// Show a progress bar on stderr (default `true`; never drawn when stderr is not a
    /// terminal).
    pub progress: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            memory_budget_bytes: 256 << 20,
            threads: None,
            skip_bad_lines: false,
            progress: true,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Documents added (including replacements).
    pub docs_indexed: u64,
    /// Of those, documents whose id already existed (in the index or earlier in the import)
    /// and were replaced.
    pub docs_replaced: u64,
    /// Malformed JSONL lines skipped (only with `skip_bad_lines`).
    pub bad_lines_skipped: u64,
    /// `.txt` / `.md` files skipped because their text or their path (below the imported
    /// folder, which becomes the id) is not UTF-8.
    pub non_utf8_files_skipped: u64,
    /// `.txt` / `.md` entries skipped because they cannot be read as regular files: FIFOs,
    /// sockets, devices, dangling symbolic links, and files (or sub-folders, one each) that
    /// the process has no permission to read.
    #[serde(default)]
    pub unreadable_files_skipped: u64,
    /// Wall-clock time of the import, commit included (milliseconds in JSON).
    #[serde(with = "ms")]
    pub elapsed: Duration,
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)? / 1e3).map_err(serde::de::Error::custom)
    }
}

/// A parsed JSONL record.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) article: Article,
    /// Whether the record has the mapping's title field (even as null).
    pub(crate) has_title: bool,
}

/// Parse one JSONL line into an article (`Ok(None)` for a blank line).
pub(crate) fn parse_line(
    raw: &[u8],
    mapping: &FieldMapping,
    path: &Path,
    line: usize,
) -> Result<Option<Record>> {
    let malformed_at = |column: usize, message: String| SearchError::MalformedLine {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let malformed = |message: String| malformed_at(1, message);
    let text = std::str::from_utf8(raw).map_err(|e| {
        let column = String::from_utf8_lossy(&raw[..e.valid_up_to()])
            .chars()
            .count()
            + 1;
        malformed_at(column, format!("not UTF-8: {e}"))
    })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| malformed_at(e.column().max(1), e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(malformed(format!(
            "expected a JSON object, got {}",
            abridge(text.trim(), 60)
        )));
    };
    let invalid = |field: &str, expected: &'static str, v: &Value| SearchError::InvalidField {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        expected,
        got: json_kind(v),
        value: abridge(&v.to_string(), 60),
    };
    let id = match obj.get(&mapping.id) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        None | Some(Value::Null) => {
            return Err(SearchError::MissingField {
                path: path.to_path_buf(),
                line,
                field: mapping.id.clone(),
            })
        }
        Some(v) => return Err(invalid(&mapping.id, "a string or an integer", v)),
    };
    if let Some(problem) = id_problem(&id) {
        return Err(malformed(format!("field `{}` {problem}", mapping.id)));
    }
    // A number (or list, or object) where text belongs is most likely a wrong field: it
    // would be indexed and scored as text without a word said.
    let text_of = |field: &str| -> Result<String> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(invalid(field, "a string or null", v)),
        }
    };
    let (title, has_title) = match &mapping.title {
        Some(f) => (text_of(f)?, obj.contains_key(f)),
        None => (String::new(), false),
    };
    // A body field absent from a record is most likely a wrong field name: indexing an
    // empty document for it would fail silently.
    if !obj.contains_key(&mapping.body) {
        return Err(SearchError::MissingField {
            path: path.to_path_buf(),
            line,
            field: mapping.body.clone(),
        });
    }
    let body = text_of(&mapping.body)?;
    Ok(Some(Record {
        article: Article { id, title, body },
        has_title,
    }))
}

/// The JSON type of `v` (`a number`, `an array`, ...), for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The longest id tantivy indexes as a term; a longer one would be dropped from the id
/// field (with only a log line), so it could never be found or replaced.
pub const MAX_ID_BYTES: usize = tantivy::tokenizer::MAX_TOKEN_LEN;

/// Why `id` cannot be a document id (`"is empty"`, or too long for [`MAX_ID_BYTES`]), or
/// `None` when it can.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("is empty".into())
    } else if id.len() > MAX_ID_BYTES {
        Some(format!(
            "is {} bytes long; ids are at most {MAX_ID_BYTES} bytes",
            id.len()
        ))
    } else {
        None
    }
}

/// Lines parsed per rayon batch.
const CHUNK: usize = 4096;

/// Read a JSONL corpus (BEIR `corpus.jsonl` with [`FieldMapping::beir`]) record by record,
/// calling `each(line, article)` in file order, by the rules of [`FieldMapping`]: the reader
/// behind `ArticleIndex::import_jsonl`, and behind the evaluation's BEIR loader. A bad line
/// is an error naming the file, line and field. Blank lines are skipped; a UTF-8 byte-order
/// mark before the first line is ignored.
pub fn read_corpus(
    path: &Path,
    mapping: &FieldMapping,
    each: &mut dyn FnMut(usize, Article) -> Result<()>,
) -> Result<()> {
    read_jsonl(path, mapping, false, &mut 0, each)
}

/// Read a JSONL file, calling `sink(line, article)` for each article in file order. Lines
/// are parsed in parallel batches. Bad lines fail, or are counted into `bad_lines` with
/// `skip_bad_lines`. A UTF-8 byte-order mark before the first line is ignored.
pub(crate) fn read_jsonl(
    path: &Path,
    mapping: &FieldMapping,
    skip_bad_lines: bool,
    bad_lines: &mut u64,
    sink: &mut dyn FnMut(usize, Article) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(SearchError::io(path))?;
    let mut reader = BufReader::new(file);
    let mut line_no = 0usize;
    let mut eof = false;
    let (mut records, mut has_titles) = (0u64, false);
    while !eof {
        let mut chunk: Vec<(usize, Vec<u8>)> = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            let mut buf = Vec::new();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(SearchError::io(path))?;
            if n == 0 {
                eof = true;
                break;
            }
            line_no += 1;
            if line_no == 1 && buf.starts_with(UTF8_BOM) {
                buf.drain(..UTF8_BOM.len());
            }
            chunk.push((line_no, buf));
        }
        let parsed: Vec<(usize, Result<Option<Record>>)> = chunk
            .par_iter()
            .map(|(line, raw)| (*line, parse_line(raw, mapping, path, *line)))
            .collect();
        for (line, item) in parsed {
            match item {
                Ok(Some(record)) => {
                    records += 1;
                    has_titles |= record.has_title;
                    sink(line, record.article)?
                }
                Ok(None) => {}
                Err(e) if skip_bad_lines => {
                    tracing::warn!("skipping bad line: {e}");
                    *bad_lines += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(title) = mapping
        .title
        .as_deref()
        .filter(|_| records > 0 && !has_titles)
    {
        tracing::warn!(
            path = %path.display(),
            "no record has the title field `{title}`: every title is empty"
        );
    }
    Ok(())
}

/// The UTF-8 encoding of U+FEFF, which some editors write at the start of a text file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether `path` names a `.txt` or `.md` file.
fn is_text_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("txt") || e.eq_ignore_ascii_case("md"))
}

/// The regular `.txt` and `.md` files under `root` (directly or through a symbolic link to
/// a file), recursively, sorted by path. Other `.txt`/`.md` entries are skipped with a
/// warning: those whose path below `root` is not UTF-8 (it becomes the id, and a lossy
/// conversion could give two files one id) count into `non_utf8`; FIFOs (reading one could
/// block forever), sockets, devices, dangling symbolic links and sub-folders the process may
/// not read count into `unreadable`. Any other I/O error is returned, naming the path.
fn text_files(root: &Path, non_utf8: &mut u64, unreadable: &mut u64) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if dir != root && e.kind() == std::io::ErrorKind::PermissionDenied => {
                tracing::warn!(folder = %dir.display(), error = %e, "skipping a folder that cannot be read");
                *unreadable += 1;
                continue;
            }
            other => other.map_err(SearchError::io(&dir))?,
        };
        for entry in entries {
            let entry = entry.map_err(SearchError::io(&dir))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(SearchError::io(&path))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            // What a symbolic link points to; `Err` when it is dangling or unreadable.
            let target = if file_type.is_symlink() {
                std::fs::metadata(&path).map(|m| m.file_type())
            } else {
                Ok(file_type)
            };
            // Symbolic links to folders are not followed (as `find` does not): one could
            // loop back to a parent or index the same files twice under other ids.
            if target.as_ref().is_ok_and(|t| t.is_dir()) {
                tracing::warn!(link = %path.display(), "not following a symbolic link to a folder");
                continue;
            }
            if !is_text_name(&path) {
                continue;
            }
            match target {
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a symbolic link that cannot be followed");
                    *unreadable += 1;
                }
                Ok(t) if !t.is_file() => {
                    tracing::warn!(path = %path.display(), "skipping an entry that is not a regular file");
                    *unreadable += 1;
                }
                Ok(_) if path.strip_prefix(root).unwrap_or(&path).to_str().is_none() => {
                    tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
                    *non_utf8 += 1;
                }
                Ok(_) => out.push(path),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The article of a text file: title = first `# ` heading, else the file stem; id = the
/// path relative to `root` with `/` separators; body = the whole text, less the heading line
/// when the title heading is the first non-blank line (the reranker reads title and body
/// together, and would otherwise see the title twice).
pub(crate) fn article_from_text(root: &Path, path: &Path, text: String) -> Article {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let id = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let heading = |line: &str| {
        line.trim()
            .strip_prefix("# ")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    // The first non-blank line and the text after it.
    let mut rest = text.as_str();
    let first = loop {
        match rest.split_once('\n') {
            Some((line, after)) if line.trim().is_empty() => rest = after,
            Some((line, after)) => break Some((line, after)),
            None if rest.trim().is_empty() => break None,
            None => break Some((rest, "")),
        }
    };
    if let Some((title, after)) = first.and_then(|(line, after)| Some((heading(line)?, after))) {
        return Article {
            id,
            title,
            body: after.to_string(),
        };
    }
    let title = text.lines().find_map(heading).unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Article {
        id,
        title,
        body: text,
    }
}

/// Read every regular `.txt`/`.md` file under `root`. Files whose text or name is not
/// UTF-8 are skipped with a warning and counted into `report.non_utf8_files_skipped`; files
/// the process may not read and entries that are not regular files into
/// `report.unreadable_files_skipped` (see [`text_files`]). Other read errors stop the
/// import, naming the file.
pub(crate) fn read_dir(
    root: &Path,
    report: &mut ImportReport,
    sink: &mut dyn FnMut(Article) -> Result<()>,
) -> Result<()> {
    if !root.is_dir() {
        return Err(SearchError::Io {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let files = text_files(
        root,
        &mut report.non_utf8_files_skipped,
        &mut report.unreadable_files_skipped,
    )?;
    for path in files {
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a file that cannot be read");
                report.unreadable_files_skipped += 1;
                continue;
            }
            other => other.map_err(SearchError::io(&path))?,
        };
        match String::from_utf8(bytes) {
            Ok(text) => sink(article_from_text(root, &path, text))?,
            Err(_) => {
                tracing::warn!(path = %path.display(), "skipping file that is not UTF-8");
                report.non_utf8_files_skipped += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn parse(line: &str) -> Result<Option<Record>> {
        parse_line(
            line.as_bytes(),
            &FieldMapping::beir(),
            Path::new("c.jsonl"),
            7,
        )
    }

    #[test]
    fn parses_beir_records() {
        let a = parse(r#"{"_id": "x1", "title": "T", "text": "B", "extra": 1}"#)
            .unwrap()
            .unwrap()
            .article;
        assert_eq!(
            a,
            Article {
                id: "x1".into(),
                title: "T".into(),
                body: "B".into()
            }
        );
        let a = parse(r#"{"_id": 42, "text": "B"}"#)
            .unwrap()
            .unwrap()
            .article;
        assert_eq!((a.id.as_str(), a.title.as_str()), ("42", ""));
        assert!(parse("   \n").unwrap().is_none());
    }

    #[test]
    fn bad_records_name_line_and_field() {
        let e = parse("{not json").unwrap_err().to_string();
        assert!(e.contains("c.jsonl:7"), "{e}");
        let e = parse(r#"{"title": "T"}"#).unwrap_err().to_string();
        assert!(e.contains(":7") && e.contains("`_id`"), "{e}");
        let e = parse(r#"{"_id": "a", "text": {"x": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`text`") && e.contains("{\"x\":1}"), "{e}");
        assert!(parse("[1]").is_err());
        assert!(parse_line(b"\xff\xfe", &FieldMapping::beir(), Path::new("c"), 1).is_err());
        // A number is no text: the same rule as the evaluation's BEIR reader.
        let e = parse(r#"{"_id": "a", "title": 1984, "text": "B"}"#).unwrap_err();
        assert!(
            matches!(&e, SearchError::InvalidField { field, got: "a number", .. } if field == "title"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("field `title` must be a string or null, got a number"),
            "{e}"
        );
        let e = parse(r#"{"_id": 1.5, "text": "B"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a string or an integer"), "{e}");
        let e = parse(r#"{"_id": "", "text": "B"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `_id` is empty"), "{e}");
        // The column of a JSON syntax error is named.
        let e = parse(r#"{"_id": "a", "text": }"#).unwrap_err();
        assert!(
            matches!(
                e,
                SearchError::MalformedLine {
                    line: 7,
                    column: 22,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn body_field_is_required_title_field_is_not() {
        let e = parse(r#"{"_id": "a", "title": "T", "body": "B"}"#).unwrap_err();
        assert!(
            matches!(&e, SearchError::MissingField { line: 7, field, .. } if field == "text"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("c.jsonl:7: missing field `text`"),
            "{e}"
        );
        // A null body is an explicitly empty one.
        let r = parse(r#"{"_id": "a", "title": "T", "text": null}"#)
            .unwrap()
            .unwrap();
        assert_eq!((r.article.body.as_str(), r.has_title), ("", true));
        let r = parse(r#"{"_id": "a", "text": "B"}"#).unwrap().unwrap();
        assert_eq!((r.article.title.as_str(), r.has_title), ("", false));
    }

    #[test]
    fn text_file_titles_and_ids() {
        let root = Path::new("/r");
        let a = article_from_text(
            root,
            Path::new("/r/sub/a.md"),
            "intro\n# Heading One\nbody".into(),
        );
        assert_eq!(
            (a.id.as_str(), a.title.as_str()),
            ("sub/a.md", "Heading One")
        );
        // A heading further down is the title, and the body keeps the whole text.
        assert_eq!(a.body, "intro\n# Heading One\nbody");
        let b = article_from_text(root, Path::new("/r/notes.txt"), "## not h1\nplain".into());
        assert_eq!((b.id.as_str(), b.title.as_str()), ("notes.txt", "notes"));
        assert_eq!(b.body, "## not h1\nplain");
        // A leading heading is the title and leaves the body.
        let c = article_from_text(root, Path::new("/r/c.md"), "\n  # Lava \r\nflows\n".into());
        assert_eq!((c.title.as_str(), c.body.as_str()), ("Lava", "flows\n"));
        let d = article_from_text(root, Path::new("/r/d.md"), "# Only".into());
        assert_eq!((d.title.as_str(), d.body.as_str()), ("Only", ""));
        let e = article_from_text(root, Path::new("/r/e.md"), "#  \n".into());
        assert_eq!((e.title.as_str(), e.body.as_str()), ("e", "#  \n"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any bytes: a record, a blank line or an error naming the line, never a panic.
        #[test]
        fn any_line_parses_or_names_its_line(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            match parse_line(&raw, &FieldMapping::beir(), Path::new("c.jsonl"), 5) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(e.to_string().contains("c.jsonl:5"), "{}", e),
            }
        }

        /// Any JSON value in the fields: strings and null are text, everything else an error.
        #[test]
        fn field_types_follow_the_rules(
            id in proptest::prop_oneof![
                "[a-z0-9]{1,12}".prop_map(serde_json::Value::from),
                (0u64..1_000_000).prop_map(serde_json::Value::from),
                proptest::num::f64::NORMAL.prop_map(serde_json::Value::from),
                proptest::bool::ANY.prop_map(serde_json::Value::from),
            ],
            title in json_leaf(),
            text in json_leaf(),
        ) {
            let line = serde_json::json!({"_id": id, "title": title, "text": text}).to_string();
            let got = parse_line(line.as_bytes(), &FieldMapping::beir(), Path::new("c"), 1);
            let text_ok = |v: &serde_json::Value| v.is_string() || v.is_null();
            let id_ok = id.is_string() || id.is_u64() || id.is_i64();
            match got {
                Ok(Some(r)) => {
                    proptest::prop_assert!(id_ok && text_ok(&title) && text_ok(&text));
                    proptest::prop_assert_eq!(r.article.body.as_str(), text.as_str().unwrap_or(""));
                    proptest::prop_assert_eq!(r.article.title.as_str(), title.as_str().unwrap_or(""));
                }
                Ok(None) => proptest::prop_assert!(false, "a record is no blank line"),
                Err(_) => proptest::prop_assert!(!(id_ok && text_ok(&title) && text_ok(&text))),
            }
        }
    }

    fn json_leaf() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            ".{0,30}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            proptest::num::i64::ANY.prop_map(serde_json::Value::from),
            proptest::bool::ANY.prop_map(serde_json::Value::from),
            Just(serde_json::json!(["a", "b"])),
            Just(serde_json::json!({"x": 1})),
        ]
    }
}
