//! NanoBEIR as published by sentence-transformers (`sentence-transformers/NanoBEIR-en`): four
//! subsets `corpus` (`_id`, `text`), `queries` (`_id`, `text`), `qrels` (`query-id`,
//! `corpus-id`) and `bm25` (`query-id`, `corpus-ids`: the ranked BM25 candidates), each with one
//! split per dataset (`NanoMSMARCO`, `NanoNFCorpus`, ...), stored as parquet files
//! `<subset>/<split>-*.parquet` in the dataset repo.
//!
//! [`NanoBeirSource::Hub`] downloads them with hf-hub into the Python Hub cache (a dataset
//! already there is used without network, and `HF_HUB_OFFLINE=1` never touches the network);
//! [`NanoBeirSource::Dir`] reads the same relative layout from a local directory.
//!
//! Ids are read as strings (integer id columns are converted); `corpus-id` may also be a list
//! of strings (the evaluator of sentence-transformers accepts both); an optional integer
//! `score` column of `qrels` gives graded judgements, else every listed pair has grade 1.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, LargeListArray, LargeStringArray, ListArray,
    RecordBatch, StringArray, StringViewArray,
};
use arrow_schema::DataType;
use hf_hub::RepoType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tantivy_rerank_encoders::hub::{
    fetch_repo, hub_cache_dir, hub_offline, list_repo_files, Wanted,
};

use crate::dataset::{DataIssues, Dataset, Document, Qrels, Query};
use crate::error::{EvalError, Result};

/// The Hub dataset of the English NanoBEIR collection.
pub const DEFAULT_DATASET_ID: &str = "sentence-transformers/NanoBEIR-en";

/// Short name and split-name suffix of the 13 NanoBEIR datasets (split = `Nano` + suffix).
pub const NANOBEIR_DATASETS: [(&str, &str); 13] = [
    ("climatefever", "ClimateFEVER"),
    ("dbpedia", "DBPedia"),
    ("fever", "FEVER"),
    ("fiqa2018", "FiQA2018"),
    ("hotpotqa", "HotpotQA"),
    ("msmarco", "MSMARCO"),
    ("nfcorpus", "NFCorpus"),
    ("nq", "NQ"),
    ("quoraretrieval", "QuoraRetrieval"),
    ("scidocs", "SCIDOCS"),
    ("arguana", "ArguAna"),
    ("scifact", "SciFact"),
    ("touche2020", "Touche2020"),
];

/// The datasets `CrossEncoderNanoBEIREvaluator` uses when none are named: all but `arguana`
/// and `touche2020`.
pub fn default_datasets() -> Vec<&'static str> {
    NANOBEIR_DATASETS
        .iter()
        .map(|(short, _)| *short)
        .filter(|s| !matches!(*s, "arguana" | "touche2020"))
        .collect()
}

/// The split name of a dataset: `msmarco` (or `NanoMSMARCO`, any case) -> `NanoMSMARCO`.
pub fn split_name(name: &str) -> Result<String> {
    let lower = name.to_ascii_lowercase();
    let short = lower.strip_prefix("nano").unwrap_or(&lower);
    NANOBEIR_DATASETS
        .iter()
        .find(|(s, _)| *s == short)
        .map(|(_, suffix)| format!("Nano{suffix}"))
        .ok_or_else(|| EvalError::DatasetSpec {
            spec: name.to_string(),
            reason: format!(
                "not a NanoBEIR dataset; valid names: {}",
                NANOBEIR_DATASETS
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Where NanoBEIR parquet files come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NanoBeirSource {
    /// A Hub dataset repo (default [`DEFAULT_DATASET_ID`] at `main`).
    Hub {
        /// Dataset repo id.
        dataset_id: String,
        /// Branch, tag or commit.
        revision: String,
    },
    /// A local directory with `<subset>/<split>*.parquet`.
    Dir(PathBuf),
}

impl Default for NanoBeirSource {
    fn default() -> Self {
        NanoBeirSource::Hub {
            dataset_id: DEFAULT_DATASET_ID.into(),
            revision: "main".into(),
        }
    }
}

const SUBSETS: [&str; 4] = ["corpus", "queries", "qrels", "bm25"];

/// Load the NanoBEIR datasets `names` (short names such as `msmarco`) from `source`.
pub fn load_nanobeir(source: &NanoBeirSource, names: &[&str]) -> Result<Vec<Dataset>> {
    let splits = names
        .iter()
        .map(|n| split_name(n))
        .collect::<Result<Vec<_>>>()?;
    let (dir, origin) = match source {
        NanoBeirSource::Dir(dir) => (dir.clone(), dir.display().to_string()),
        NanoBeirSource::Hub {
            dataset_id,
            revision,
        } => (
            hub_snapshot(dataset_id, revision, &splits)?,
            format!("{dataset_id}@{revision}"),
        ),
    };
    splits
        .iter()
        .map(|split| load_split(&dir, split, &origin))
        .collect()
}

/// Read one split (`NanoMSMARCO`, ...) from a directory in the Hub layout.
pub fn load_split(dir: &Path, split: &str, origin: &str) -> Result<Dataset> {
    let corpus_files = split_files(dir, "corpus", split)?;
    let mut corpus = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for path in &corpus_files {
        let t = ParquetTable::read(path)?;
        let ids = t.strings("_id")?;
        let texts = t.strings("text")?;
        let titles = t.optional_strings("title")?;
        for (row, (id, text)) in ids.into_iter().zip(texts).enumerate() {
            if let Some((first_path, first_line)) = seen.insert(id.clone(), (path, row + 1)) {
                return Err(EvalError::DuplicateId {
                    path: path.clone(),
                    line: row + 1,
                    first_path: first_path.clone(),
                    first_line,
                    kind: "document",
                    id,
                });
            }
            let title = titles.as_ref().map(|t| t[row].clone()).unwrap_or_default();
            corpus.push(Document { id, title, text });
        }
    }
    let mut queries = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for path in &split_files(dir, "queries", split)? {
        let t = ParquetTable::read(path)?;
        for (row, (id, text)) in t
            .strings("_id")?
            .into_iter()
            .zip(t.strings("text")?)
            .enumerate()
        {
            if let Some((first_path, first_line)) = seen.insert(id.clone(), (path, row + 1)) {
                return Err(EvalError::DuplicateId {
                    path: path.clone(),
                    line: row + 1,
                    first_path: first_path.clone(),
                    first_line,
                    kind: "query",
                    id,
                });
            }
            queries.push(Query { id, text });
        }
    }
    let mut issues = DataIssues::default();
    let mut qrels = Qrels::new();
    for path in &split_files(dir, "qrels", split)? {
        let t = ParquetTable::read(path)?;
        let qids = t.strings("query-id")?;
        let dids = t.string_lists("corpus-id")?;
        let grades = t.optional_ints("score")?;
        for (row, (qid, docs)) in qids.into_iter().zip(dids).enumerate() {
            let grade = grades.as_ref().map(|g| g[row]).unwrap_or(1);
            for did in docs {
                if qrels
                    .entry(qid.clone())
                    .or_default()
                    .insert(did.clone(), grade)
                    .is_some()
                {
                    issues.qrels_duplicate_lines += 1;
                    issues.note(|| {
                        format!(
                            "{}: row {}: repeated judgement of ({qid}, {did})",
                            path.display(),
                            row + 1
                        )
                    });
                }
            }
        }
    }
    let candidates = match split_files(dir, "bm25", split) {
        Ok(files) => {
            let mut lists = Vec::new();
            for path in &files {
                let t = ParquetTable::read(path)?;
                lists.extend(
                    t.strings("query-id")?
                        .into_iter()
                        .zip(t.string_lists("corpus-ids")?),
                );
            }
            Some(lists)
        }
        Err(EvalError::MissingFile { .. }) => None,
        Err(e) => return Err(e),
    };
    let mut ds = Dataset {
        name: split.to_string(),
        source: format!("{origin} ({split})"),
        corpus,
        queries,
        qrels,
        candidates,
        issues,
    };
    ds.check();
    if let Some(lists) = ds.candidates.take() {
        let mut issues = std::mem::take(&mut ds.issues);
        let docs = ds.doc_index();
        let queries = ds.query_index();
        let mut kept = Vec::with_capacity(lists.len());
        for (qid, ids) in lists {
            if !queries.contains_key(qid.as_str()) {
                issues.candidates_unknown_queries += 1;
                issues.note(|| format!("bm25 query `{qid}` is not among the queries"));
                continue;
            }
            let before = ids.len();
            let ids: Vec<String> = ids
                .into_iter()
                .filter(|d| docs.contains_key(d.as_str()))
                .collect();
            if ids.len() < before {
                issues.candidates_unknown_docs += before - ids.len();
                issues.note(|| {
                    format!(
                        "bm25 list of `{qid}` names {} documents not in the corpus",
                        before - ids.len()
                    )
                });
            }
            kept.push((qid, ids));
        }
        ds.issues = issues;
        ds.candidates = Some(kept);
    }
    Ok(ds)
}

/// The parquet files of `subset`/`split` under `dir`: names `<split>-*.parquet` or
/// `<split>.parquet`, sorted.
fn split_files(dir: &Path, subset: &str, split: &str) -> Result<Vec<PathBuf>> {
    let sub = dir.join(subset);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&sub) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| is_split_file(n, split))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    if files.is_empty() {
        return Err(EvalError::MissingFile {
            path: sub.join(format!("{split}-*.parquet")),
            what: format!("no parquet file of subset `{subset}`, split `{split}`"),
        });
    }
    files.sort();
    Ok(files)
}

fn is_split_file(name: &str, split: &str) -> bool {
    name.ends_with(".parquet")
        && name
            .strip_prefix(split)
            .is_some_and(|rest| rest.starts_with('-') || rest == ".parquet")
}

/// The local snapshot directory of a Hub dataset with the parquet files of `splits`, from the
/// cache when complete there, else downloaded.
fn hub_snapshot(dataset_id: &str, revision: &str, splits: &[String]) -> Result<PathBuf> {
    let repo_dir = hub_cache_dir().join(format!("datasets--{}", dataset_id.replace('/', "--")));
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snapshot = repo_dir.join("snapshots").join(commit);
    let complete = |dir: &Path| {
        splits.iter().all(|split| {
            ["corpus", "queries", "qrels"]
                .iter()
                .all(|subset| split_files(dir, subset, split).is_ok())
        })
    };
    if snapshot.is_dir() && complete(&snapshot) {
        tracing::info!(dir = %snapshot.display(), "NanoBEIR found in the Hub cache");
        return Ok(snapshot);
    }
    let hub = |source| EvalError::Hub {
        repo: format!("{dataset_id}@{revision}"),
        source: Box::new(source),
    };
    if hub_offline() {
        return Err(EvalError::MissingFile {
            path: snapshot,
            what: format!(
                "HF_HUB_OFFLINE is set and {dataset_id}@{revision} is not complete in the Hub cache {}",
                hub_cache_dir().display()
            ),
        });
    }
    let listed = list_repo_files(dataset_id, RepoType::Dataset, revision).map_err(hub)?;
    let mut wanted: Vec<&str> = Vec::new();
    for split in splits {
        for subset in SUBSETS {
            let files: Vec<&str> = listed
                .iter()
                .map(String::as_str)
                .filter(|f| {
                    f.strip_prefix(subset)
                        .and_then(|r| r.strip_prefix('/'))
                        .is_some_and(|name| is_split_file(name, split))
                })
                .collect();
            if files.is_empty() && subset != "bm25" {
                return Err(EvalError::MissingFile {
                    path: PathBuf::from(format!("{dataset_id}/{subset}/{split}-*.parquet")),
                    what: "not in the Hub dataset".into(),
                });
            }
            wanted.extend(files);
        }
    }
    let rules: Vec<Wanted<'_>> = wanted.iter().map(|f| Wanted::Required(f)).collect();
    let paths = fetch_repo(dataset_id, RepoType::Dataset, revision, &rules).map_err(hub)?;
    // `<snapshot>/<subset>/<file>`.
    paths
        .first()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| EvalError::MissingFile {
            path: PathBuf::from(dataset_id),
            what: "the Hub returned no files".into(),
        })
}

/// A parquet file read into arrow record batches.
struct ParquetTable {
    path: PathBuf,
    batches: Vec<RecordBatch>,
    columns: Vec<String>,
}

impl ParquetTable {
    fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(EvalError::io(path))?;
        let parquet = |source| EvalError::Parquet {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
        let columns = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let reader = builder.build().map_err(parquet)?;
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|source| EvalError::Arrow {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        Ok(ParquetTable {
            path: path.to_path_buf(),
            batches,
            columns,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c == name)
    }

    fn column(&self, name: &str) -> Result<Vec<ArrayRef>> {
        if !self.has(name) {
            return Err(EvalError::MissingColumn {
                path: self.path.clone(),
                column: name.to_string(),
                available: self.columns.join(", "),
            });
        }
        Ok(self
            .batches
            .iter()
            .filter_map(|b| b.column_by_name(name).cloned())
            .collect())
    }

    fn type_error(&self, name: &str, expected: &'static str, found: &DataType) -> EvalError {
        EvalError::ColumnType {
            path: self.path.clone(),
            column: name.to_string(),
            expected,
            found: found.to_string(),
        }
    }

    fn null(&self, name: &str, row: usize) -> EvalError {
        EvalError::NullValue {
            path: self.path.clone(),
            column: name.to_string(),
            row,
        }
    }

    /// A string column (integers are converted); nulls are errors.
    fn strings(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for array in self.column(name)? {
            let base = out.len();
            let values = scalar_strings(array.as_ref())
                .ok_or_else(|| self.type_error(name, "string", array.data_type()))?;
            for (i, v) in values.into_iter().enumerate() {
                out.push(v.ok_or_else(|| self.null(name, base + i + 1))?);
            }
        }
        Ok(out)
    }

    fn optional_strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        if !self.has(name) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for array in self.column(name)? {
            let values = scalar_strings(array.as_ref())
                .ok_or_else(|| self.type_error(name, "string", array.data_type()))?;
            out.extend(values.into_iter().map(Option::unwrap_or_default));
        }
        Ok(Some(out))
    }

    fn optional_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        if !self.has(name) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for array in self.column(name)? {
            let base = out.len();
            let values: Vec<Option<i64>> =
                if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
                    a.iter().collect()
                } else if let Some(a) = array.as_any().downcast_ref::<Int32Array>() {
                    a.iter().map(|v| v.map(i64::from)).collect()
                } else {
                    return Err(self.type_error(name, "int32 or int64", array.data_type()));
                };
            for (i, v) in values.into_iter().enumerate() {
                out.push(v.ok_or_else(|| self.null(name, base + i + 1))?);
            }
        }
        Ok(Some(out))
    }

    /// A list<string> column, or a string column read as one-element lists.
    fn string_lists(&self, name: &str) -> Result<Vec<Vec<String>>> {
        let mut out = Vec::new();
        for array in self.column(name)? {
            let base = out.len();
            if let Some(values) = scalar_strings(array.as_ref()) {
                for (i, v) in values.into_iter().enumerate() {
                    out.push(vec![v.ok_or_else(|| self.null(name, base + i + 1))?]);
                }
                continue;
            }
            let rows: Vec<Option<ArrayRef>> =
                if let Some(l) = array.as_any().downcast_ref::<ListArray>() {
                    l.iter().collect()
                } else if let Some(l) = array.as_any().downcast_ref::<LargeListArray>() {
                    l.iter().collect()
                } else {
                    return Err(self.type_error(name, "list<string>", array.data_type()));
                };
            for (i, row) in rows.into_iter().enumerate() {
                let row = row.ok_or_else(|| self.null(name, base + i + 1))?;
                let items = scalar_strings(row.as_ref())
                    .ok_or_else(|| self.type_error(name, "list<string>", array.data_type()))?;
                out.push(
                    items
                        .into_iter()
                        .map(|v| v.ok_or_else(|| self.null(name, base + i + 1)))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
        }
        Ok(out)
    }
}

/// The values of a string (or integer) array; `None` for other types.
fn scalar_strings(array: &dyn Array) -> Option<Vec<Option<String>>> {
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        Some(a.iter().map(|v| v.map(str::to_string)).collect())
    } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        Some(a.iter().map(|v| v.map(str::to_string)).collect())
    } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
        Some(a.iter().map(|v| v.map(str::to_string)).collect())
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        Some(a.iter().map(|v| v.map(|v| v.to_string())).collect())
    } else {
        any.downcast_ref::<Int32Array>()
            .map(|a| a.iter().map(|v| v.map(|v| v.to_string())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        assert_eq!(split_name("msmarco").unwrap(), "NanoMSMARCO");
        assert_eq!(split_name("NanoNFCorpus").unwrap(), "NanoNFCorpus");
        assert!(split_name("nope")
            .unwrap_err()
            .to_string()
            .contains("valid names"));
        assert_eq!(default_datasets().len(), 11);
        assert!(is_split_file("NanoNQ-00000-of-00001.parquet", "NanoNQ"));
        assert!(!is_split_file("NanoNQX-00000.parquet", "NanoNQ"));
        assert!(is_split_file("NanoNQ.parquet", "NanoNQ"));
    }
}
