//! Evaluation datasets: documents, queries, graded relevance judgements and, for NanoBEIR,
//! the published first-stage candidate lists; plus the BEIR on-disk reader.
//!
//! BEIR layout: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`),
//! `qrels/<split>.tsv` (`query-id<TAB>corpus-id<TAB>score`, header optional; TREC's four-column
//! `qid iter docid rel` is accepted too).
//!
//! Data problems are handled as follows (and counted in [`DataIssues`]):
//! - a malformed line, a missing `_id`, a non-integer grade: error naming file, line, column;
//! - a duplicate document or query id: error naming both lines;
//! - a qrels line repeated for the same (query, document): the last grade wins (as in a
//!   pytrec_eval dict), counted;
//! - qrels naming a query that is not in `queries.jsonl`: counted, that query is not
//!   evaluated; qrels naming a document that is not in the corpus: counted and kept (the
//!   document can never be retrieved, so it lowers recall and NDCG exactly as it would for
//!   trec_eval);
//! - a query with empty text: counted; it retrieves nothing and scores 0 if it has qrels.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use tantivy_rerank_search::json_kind;

/// One document of the corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Document id.
    pub id: String,
    /// Title (empty when the dataset has none).
    pub title: String,
    /// Text.
    pub text: String,
}

impl Document {
    /// Title and text joined by a newline (just the text when the title is empty): what a
    /// reranker sees, the same join as the search pipeline's `Candidate::text`.
    pub fn full_text(&self) -> String {
        if self.title.trim().is_empty() {
            self.text.clone()
        } else {
            format!("{}\n{}", self.title, self.text)
        }
    }
}

/// One query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Query id.
    pub id: String,
    /// Query text.
    pub text: String,
}

/// Graded judgements: query id -> document id -> grade (> 0 is relevant).
pub type Qrels = BTreeMap<String, BTreeMap<String, i64>>;

/// Counts of data problems found while loading (see the module docs for their handling).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIssues {
    /// Qrels lines whose query id is not among the queries.
    pub qrels_unknown_query_lines: usize,
    /// Distinct unknown query ids in the qrels (a few examples in `examples`).
    pub qrels_unknown_queries: usize,
    /// Qrels lines whose document id is not in the corpus.
    pub qrels_unknown_doc_lines: usize,
    /// Qrels lines repeating a (query, document) pair; the last grade wins.
    pub qrels_duplicate_lines: usize,
    /// Queries with empty text.
    pub empty_queries: usize,
    /// Candidate-list rows (NanoBEIR `bm25`) whose query id is unknown: skipped.
    pub candidates_unknown_queries: usize,
    /// Candidate ids (NanoBEIR `bm25`) not in the corpus: dropped from the lists.
    pub candidates_unknown_docs: usize,
    /// Up to 10 example messages.
    pub examples: Vec<String>,
}

impl std::fmt::Display for DataIssues {
    /// One line: the non-zero counts, then the first example.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = [
            (
                self.qrels_unknown_query_lines,
                "qrels lines with an unknown query",
            ),
            (
                self.qrels_unknown_doc_lines,
                "qrels lines with a document not in the corpus",
            ),
            (
                self.qrels_duplicate_lines,
                "repeated qrels lines (the last grade wins)",
            ),
            (self.empty_queries, "empty queries"),
            (
                self.candidates_unknown_queries,
                "candidate rows with an unknown query (skipped)",
            ),
            (
                self.candidates_unknown_docs,
                "candidates not in the corpus (dropped)",
            ),
        ];
        let parts: Vec<String> = counts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if parts.is_empty() {
            return f.write_str("no data issues");
        }
        f.write_str(&parts.join(", "))?;
        match self.examples.first() {
            Some(example) => write!(f, "; e.g. {example}"),
            None => Ok(()),
        }
    }
}

impl DataIssues {
    pub(crate) fn note(&mut self, message: impl FnOnce() -> String) {
        if self.examples.len() < 10 {
            self.examples.push(message());
        }
    }

    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.qrels_unknown_query_lines == 0
            && self.qrels_unknown_doc_lines == 0
            && self.qrels_duplicate_lines == 0
            && self.empty_queries == 0
            && self.candidates_unknown_queries == 0
            && self.candidates_unknown_docs == 0
    }
}

/// A loaded evaluation dataset.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Display name (`scifact`, `NanoMSMARCO`, ...).
    pub name: String,
    /// Where it came from (directory or Hub id).
    pub source: String,
    /// The corpus, in file order.
    pub corpus: Vec<Document>,
    /// The queries, in file order.
    pub queries: Vec<Query>,
    /// Judgements (unknown queries already removed).
    pub qrels: Qrels,
    /// Ranked first-stage candidates per query id, in file order, when the dataset ships them
    /// (NanoBEIR's `bm25` subset).
    pub candidates: Option<Vec<(String, Vec<String>)>>,
    /// What was found wrong while loading.
    pub issues: DataIssues,
}

impl Dataset {
    /// Document id -> index into `corpus`.
    pub fn doc_index(&self) -> HashMap<&str, usize> {
        self.corpus
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i))
            .collect()
    }

    /// Query id -> index into `queries`.
    pub fn query_index(&self) -> HashMap<&str, usize> {
        self.queries
            .iter()
            .enumerate()
            .map(|(i, q)| (q.id.as_str(), i))
            .collect()
    }

    /// Check qrels against queries and corpus: drop (and count) qrels of unknown queries,
    /// count qrels of unknown documents, count empty queries.
    pub(crate) fn check(&mut self) {
        let mut issues = std::mem::take(&mut self.issues);
        let qrels = std::mem::take(&mut self.qrels);
        let queries: HashMap<&str, usize> = self.query_index();
        let docs: HashMap<&str, usize> = self.doc_index();
        issues.empty_queries = self
            .queries
            .iter()
            .filter(|q| q.text.trim().is_empty())
            .count();
        let mut kept = Qrels::new();
        for (qid, judged) in qrels {
            if !queries.contains_key(qid.as_str()) {
                issues.qrels_unknown_queries += 1;
                issues.qrels_unknown_query_lines += judged.len();
                issues.note(|| format!("qrels query `{qid}` is not among the queries"));
                continue;
            }
            for did in judged.keys() {
                if !docs.contains_key(did.as_str()) {
                    issues.qrels_unknown_doc_lines += 1;
                    issues.note(|| {
                        format!("qrels document `{did}` (query `{qid}`) is not in the corpus")
                    });
                }
            }
            kept.insert(qid, judged);
        }
        self.qrels = kept;
        if !issues.is_clean() {
            tracing::warn!(dataset = %self.name, "data issues: {issues}");
        }
        self.issues = issues;
    }
}

/// Read a BEIR dataset directory with the qrels of `split`.
pub fn load_beir(dir: impl AsRef<Path>, split: &str) -> Result<Dataset> {
    let dir = dir.as_ref();
    let corpus_path = dir.join("corpus.jsonl");
    let queries_path = dir.join("queries.jsonl");
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    for (p, what) in [
        (&corpus_path, "BEIR corpus.jsonl not found"),
        (&queries_path, "BEIR queries.jsonl not found"),
        (
            &qrels_path,
            "qrels of this split not found (qrels/<split>.tsv)",
        ),
    ] {
        if !p.is_file() {
            return Err(EvalError::MissingFile {
                path: p.clone(),
                what: what.into(),
            });
        }
    }
    let mut issues = DataIssues::default();
    let corpus = read_corpus(&corpus_path)?;
    let queries = read_jsonl(&queries_path, "query", |id, v| {
        Ok(Query {
            id,
            text: text_field(v, "text")?,
        })
    })?;
    let qrels = read_qrels(&qrels_path, &mut issues)?;
    // `data/scifact/..` names `data`, not `..`.
    let resolved = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let mut ds = Dataset {
        name,
        source: dir.display().to_string(),
        corpus,
        queries,
        qrels,
        candidates: None,
        issues,
    };
    ds.check();
    Ok(ds)
}

/// The documents of a BEIR `corpus.jsonl`, read by the search crate's reader
/// ([`tantivy_rerank_search::read_corpus`]: the rules `tantivy-rerank index` imports with), and
/// refused when an id repeats (a corpus of duplicate ids would count one document twice).
fn read_corpus(path: &Path) -> Result<Vec<Document>> {
    use tantivy_rerank_search::{FieldMapping, SearchError};
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut duplicate = None;
    let read = tantivy_rerank_search::read_corpus(path, &FieldMapping::beir(), &mut |line, a| {
        if let Some(&first_line) = seen.get(&a.id) {
            duplicate = Some(EvalError::DuplicateId {
                path: path.to_path_buf(),
                line,
                first_path: path.to_path_buf(),
                first_line,
                kind: "document",
                id: a.id,
            });
            // Stop reading: the error above is the one to report.
            return Err(SearchError::InvalidOption {
                option: "corpus",
                value: String::new(),
                reason: "duplicate id",
            });
        }
        seen.insert(a.id.clone(), line);
        out.push(Document {
            id: a.id,
            title: a.title,
            text: a.body,
        });
        Ok(())
    });
    if let Some(e) = duplicate {
        return Err(e);
    }
    read.map_err(|e| corpus_error(path, e))?;
    Ok(out)
}

/// A corpus reader's error as this crate's, keeping file, line and column.
fn corpus_error(path: &Path, e: tantivy_rerank_search::SearchError) -> EvalError {
    use tantivy_rerank_search::SearchError;
    let malformed = |line, column, message| EvalError::Malformed {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    match e {
        SearchError::MalformedLine {
            line,
            column,
            message,
            ..
        } => malformed(line, column, message),
        SearchError::InvalidField {
            line,
            ref field,
            expected,
            got,
            ref value,
            ..
        } => malformed(
            line,
            1,
            format!("field `{field}` must be {expected}, got {got} ({value})"),
        ),
        SearchError::MissingField { line, field, .. } => EvalError::MissingField {
            path: path.to_path_buf(),
            line,
            field,
        },
        SearchError::Io { path, source } => EvalError::io(path)(source),
        other => EvalError::Search {
            context: format!("reading {}", path.display()),
            source: Box::new(other),
        },
    }
}

/// A text field: a string, or empty when absent or null. Anything else is an error message
/// (indexing `["a","b"]` or `3` as text would silently skew the evaluation).
fn text_field(v: &serde_json::Map<String, Value>, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Ok(String::new()),
        Some(other) => Err(format!(
            "field `{key}` must be a string or null, got {}",
            json_kind(other)
        )),
    }
}

/// Read JSONL records with a required `_id` (string or integer); error on duplicates.
fn read_jsonl<T>(
    path: &Path,
    kind: &'static str,
    make: impl Fn(String, &serde_json::Map<String, Value>) -> Result<T, String>,
) -> Result<Vec<T>> {
    let file = File::open(path).map_err(EvalError::io(path))?;
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| EvalError::Malformed {
            path: path.to_path_buf(),
            line: line_no,
            column: 1,
            message: format!("unreadable line: {e}"),
        })?;
        let line = without_bom(&line, line_no);
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| EvalError::Malformed {
            path: path.to_path_buf(),
            line: line_no,
            column: e.column().max(1),
            message: format!("invalid JSON: {e}"),
        })?;
        let Value::Object(map) = value else {
            return Err(EvalError::Malformed {
                path: path.to_path_buf(),
                line: line_no,
                column: 1,
                message: "expected a JSON object".into(),
            });
        };
        let id = match map.get("_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(
                other @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_)),
            ) => {
                return Err(EvalError::Malformed {
                    path: path.to_path_buf(),
                    line: line_no,
                    column: 1,
                    message: format!(
                        "field `_id` must be a string or an integer, got {} ({other})",
                        json_kind(other)
                    ),
                })
            }
            _ => {
                return Err(EvalError::MissingField {
                    path: path.to_path_buf(),
                    line: line_no,
                    field: "_id".into(),
                })
            }
        };
        // The index holds each id as one tantivy term: refuse here, with the line, what it
        // would refuse later without one.
        if let Some(problem) = tantivy_rerank_search::id_problem(&id) {
            return Err(EvalError::Malformed {
                path: path.to_path_buf(),
                line: line_no,
                column: 1,
                message: format!("field `_id` {problem}"),
            });
        }
        if let Some(&first_line) = seen.get(&id) {
            return Err(EvalError::DuplicateId {
                path: path.to_path_buf(),
                line: line_no,
                first_path: path.to_path_buf(),
                first_line,
                kind,
                id,
            });
        }
        seen.insert(id.clone(), line_no);
        let record = make(id, &map).map_err(|message| EvalError::Malformed {
            path: path.to_path_buf(),
            line: line_no,
            column: 1,
            message,
        })?;
        out.push(record);
    }
    Ok(out)
}

/// `line` without the byte-order mark that editors on Windows put at the start of a UTF-8
/// file (only line 1 can have one).
fn without_bom(line: &str, line_no: usize) -> &str {
    match line_no {
        1 => line.strip_prefix('\u{feff}').unwrap_or(line),
        _ => line,
    }
}

/// True when the first line of a qrels file names its columns instead of judging a pair.
fn is_qrels_header(first: &str, grade: &str) -> bool {
    let name = |s: &str| s.to_ascii_lowercase().replace(['-', '_', ' '], "");
    matches!(name(first).as_str(), "queryid" | "qid" | "query" | "topic")
        || matches!(
            name(grade).as_str(),
            "score" | "relevance" | "rel" | "label" | "grade" | "judgement" | "judgment"
        )
}

/// Read a qrels file: BEIR TSV (`query-id<TAB>corpus-id<TAB>score`, header optional) or TREC
/// (`qid iter docid rel`, whitespace separated).
pub fn read_qrels(path: &Path, issues: &mut DataIssues) -> Result<Qrels> {
    let file = File::open(path).map_err(EvalError::io(path))?;
    let mut qrels = Qrels::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let malformed = |column: usize, message: String| EvalError::Malformed {
            path: path.to_path_buf(),
            line: line_no,
            column,
            message,
        };
        let line = line.map_err(|e| malformed(1, format!("unreadable line: {e}")))?;
        let line = without_bom(&line, line_no);
        if line.trim().is_empty() {
            continue;
        }
        let tab: Vec<&str> = line.split('\t').collect();
        let (qid, did, grade, grade_col) = if tab.len() == 3 {
            let col = tab[0].chars().count() + tab[1].chars().count() + 3;
            (tab[0].trim(), tab[1].trim(), tab[2].trim(), col)
        } else {
            let ws: Vec<&str> = line.split_whitespace().collect();
            if ws.len() == 4 {
                let col = line
                    .find(ws[3])
                    .map(|b| line[..b].chars().count() + 1)
                    .unwrap_or(1);
                (ws[0], ws[2], ws[3], col)
            } else {
                return Err(malformed(
                    1,
                    format!(
                        "expected 3 tab-separated columns (query-id, corpus-id, score) or 4 TREC columns, got {}",
                        tab.len()
                    ),
                ));
            }
        };
        // Integers, also written as floats (`1.0`), within i64 (no silent clamping).
        let parsed = grade.parse::<i64>().ok().or_else(|| {
            grade
                .parse::<f64>()
                .ok()
                .filter(|g| g.fract() == 0.0 && g.abs() < 9.0e18)
                .map(|g| g as i64)
        });
        let Some(g) = parsed else {
            // Line 1 may be a header that names its columns (BEIR's is `query-id corpus-id
            // score`); anything else that is not an integer grade is an error.
            if line_no == 1 && is_qrels_header(qid, grade) {
                continue;
            }
            return Err(malformed(
                grade_col,
                format!("relevance grade `{grade}` is not an integer (or is out of range)"),
            ));
        };
        if qid.is_empty() || did.is_empty() {
            return Err(malformed(1, "empty query or document id".into()));
        }
        if qrels
            .entry(qid.to_string())
            .or_default()
            .insert(did.to_string(), g)
            .is_some()
        {
            issues.qrels_duplicate_lines += 1;
            issues.note(|| {
                format!(
                    "{}:{line_no}: repeated judgement of ({qid}, {did}); last grade wins",
                    path.display()
                )
            });
        }
    }
    Ok(qrels)
}
