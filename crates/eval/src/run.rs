//! TREC run files (`qid Q0 docid rank score tag`), written for every evaluated system so that
//! external tools (trec_eval, pytrec_eval, ranx) can re-score them.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use crate::error::{EvalError, Result};
use crate::metrics::trec::trec_order;

/// The ranked documents of one system for every query: `(query id, [(doc id, score)])`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// System name (`bm25`, `rerank`, ...), written as the tag column.
    pub system: String,
    /// Per query, the scored documents (any order; written in trec_eval order).
    pub queries: Vec<(String, Vec<(String, f64)>)>,
}

impl Run {
    /// An empty run of `system`.
    pub fn new(system: impl Into<String>) -> Self {
        Run {
            system: system.into(),
            queries: Vec::new(),
        }
    }

    /// Write the run in TREC format, each query's documents in trec_eval order (score
    /// descending, ties by doc id descending) with ranks from 1. Scores are written in the
    /// shortest form that reads back to the same value, so a re-scorer sees the same order.
    pub fn write_trec(&self, path: &Path) -> Result<()> {
        // trec_eval (and `read_trec`) split columns on whitespace: refuse ids that would shift
        // them, before the file is created.
        let unwritable = |id: &str| id.is_empty() || id.contains(char::is_whitespace);
        for (qid, docs) in &self.queries {
            let bad = if unwritable(qid) {
                Some(("query", qid))
            } else {
                docs.iter()
                    .map(|(d, _)| d)
                    .find(|d| unwritable(d))
                    .map(|d| ("document", d))
            };
            if let Some((kind, id)) = bad {
                return Err(EvalError::UnwritableId {
                    path: path.to_path_buf(),
                    kind,
                    id: id.clone(),
                });
            }
        }
        let file = std::fs::File::create(path).map_err(EvalError::io(path))?;
        let mut out = BufWriter::new(file);
        let tag: String = self.system.split_whitespace().collect::<Vec<_>>().join("_");
        for (qid, docs) in &self.queries {
            let mut docs = docs.clone();
            trec_order(&mut docs);
            for (rank, (did, score)) in docs.iter().enumerate() {
                writeln!(out, "{qid} Q0 {did} {} {score} {tag}", rank + 1)
                    .map_err(EvalError::io(path))?;
            }
        }
        out.flush().map_err(EvalError::io(path))
    }

    /// Read a TREC run file (query order: first appearance). A document listed twice for one
    /// query is an error naming both lines, as in trec_eval.
    pub fn read_trec(path: &Path) -> Result<Run> {
        let file = std::fs::File::open(path).map_err(EvalError::io(path))?;
        let mut run = Run::default();
        let mut index = std::collections::HashMap::new();
        let mut first_line = std::collections::HashMap::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(EvalError::io(path))?;
            if line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            let malformed = |message: String| EvalError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                column: 1,
                message,
            };
            if cols.len() != 6 {
                return Err(malformed(format!(
                    "expected 6 columns (qid Q0 docid rank score tag), got {}",
                    cols.len()
                )));
            }
            let score: f64 = cols[4]
                .parse()
                .map_err(|_| malformed(format!("score `{}` is not a number", cols[4])))?;
            if let Some(first) =
                first_line.insert((cols[0].to_string(), cols[2].to_string()), i + 1)
            {
                return Err(malformed(format!(
                    "document `{}` is listed again for query `{}` (first on line {first})",
                    cols[2], cols[0]
                )));
            }
            run.system = cols[5].to_string();
            let slot = *index.entry(cols[0].to_string()).or_insert_with(|| {
                run.queries.push((cols[0].to_string(), Vec::new()));
                run.queries.len() - 1
            });
            run.queries[slot].1.push((cols[2].to_string(), score));
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_shift_the_columns_are_refused_and_good_ones_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.trec");
        let mut run = Run::new("bm25");
        run.queries
            .push(("q1".into(), vec![("d1".into(), 2.0), ("d 2".into(), 1.0)]));
        let err = run.write_trec(&path).unwrap_err().to_string();
        assert!(err.contains("document id `d 2`"), "{err}");
        assert!(!path.exists(), "no half-written file");
        run.queries[0].1[1].0 = "d2".into();
        run.queries.push(("q\t2".into(), vec![]));
        let err = run.write_trec(&path).unwrap_err().to_string();
        assert!(err.contains("query id `q\t2`"), "{err}");
        run.queries.pop();
        run.write_trec(&path).unwrap();
        let back = Run::read_trec(&path).unwrap();
        assert_eq!(back.queries, run.queries);
    }

    #[test]
    fn a_document_listed_twice_for_a_query_is_refused_naming_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.trec");
        std::fs::write(
            &path,
            "q1 Q0 a 1 3.0 s\nq2 Q0 a 1 3.0 s\n\nq1 Q0 a 2 2.0 s\n",
        )
        .unwrap();
        let err = Run::read_trec(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.trec:4:") && err.contains("first on line 1"),
            "{err}"
        );
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
