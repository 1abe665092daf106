//! What the evaluation modes and the benchmark share: the index of a dataset's corpus,
//! BM25 candidate ids, progress bars and unit helpers.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tantivy_rerank_search::{Article, ArticleIndex, ImportOptions, SearchOptions};

use crate::dataset::Dataset;
use crate::error::{EvalError, Result};

/// Index `ds.corpus` into `dir` (a temporary directory when `None`; an existing index there is
/// reused as is). Returns the index and the temporary directory guard.
pub(crate) fn build_index(
    ds: &Dataset,
    dir: Option<&Path>,
    progress: bool,
) -> Result<(ArticleIndex, Option<tempfile::TempDir>)> {
    let search = |context: String| {
        move |source| EvalError::Search {
            context,
            source: Box::new(source),
        }
    };
    let (path, guard) = match dir {
        Some(d) => (d.to_path_buf(), None),
        None => {
            let tmp = tempfile::tempdir().map_err(EvalError::io(std::env::temp_dir()))?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    if path.join("meta.json").is_file() {
        let index =
            ArticleIndex::open(&path).map_err(search(format!("opening {}", path.display())))?;
        check_reused_index(&index, &path, ds)?;
        tracing::info!(dir = %path.display(), docs = index.num_docs(), "reusing index");
        return Ok((index, guard));
    }
    let index = ArticleIndex::create(&path, &Default::default())
        .map_err(search(format!("creating an index in {}", path.display())))?;
    let articles = ds.corpus.iter().map(|d| Article {
        id: d.id.clone(),
        title: d.title.clone(),
        body: d.text.clone(),
    });
    index
        .import_articles(
            articles,
            &ImportOptions {
                progress,
                ..Default::default()
            },
        )
        .map_err(search(format!("indexing {}", ds.name)))?;
    Ok((index, guard))
}

/// A reused index must hold `ds`'s corpus: the same number of documents, and the first, middle
/// and last corpus ids. (Another corpus would give every query zero relevant hits.)
fn check_reused_index(index: &ArticleIndex, path: &Path, ds: &Dataset) -> Result<()> {
    let mismatch = |reason: String| EvalError::IndexMismatch {
        path: path.to_path_buf(),
        dataset: ds.name.clone(),
        reason,
    };
    let docs = index.num_docs();
    if docs != ds.corpus.len() as u64 {
        return Err(mismatch(format!(
            "it has {docs} documents, the corpus {}",
            ds.corpus.len()
        )));
    }
    let n = ds.corpus.len();
    for i in [0, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(|&i| i < n)
    {
        let id = &ds.corpus[i].id;
        let found = index.contains_id(id).map_err(|source| EvalError::Search {
            context: format!("checking {}", path.display()),
            source: Box::new(source),
        })?;
        if !found {
            return Err(mismatch(format!("it has no document `{id}`")));
        }
    }
    Ok(())
}

pub(crate) fn progress_bar(enabled: bool, len: u64, name: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {bar:30} {pos}/{len} queries [{elapsed_precise} < {eta_precise}] {per_sec}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(name.to_string());
    bar
}

/// The BM25 top `k` document ids of `query` in `index` (`query_id` names it in errors).
pub(crate) fn bm25_ids(
    index: &ArticleIndex,
    query_id: &str,
    query: &str,
    k: usize,
) -> Result<Vec<(String, f32)>> {
    let results = index
        .search(query, &SearchOptions::default().top_n(k))
        .map_err(|source| EvalError::Search {
            context: format!("query `{query_id}`"),
            source: Box::new(source),
        })?;
    Ok(results
        .hits
        .into_iter()
        .map(|h| (h.doc.id, h.first_stage_score))
        .collect())
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn per_second(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}
