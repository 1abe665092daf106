//! [`ArticleIndex`]: an on-disk article index with BM25 and reranked search.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::error::LockError;
use tantivy::query::{EmptyQuery, Query, QueryParser, QueryParserError, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{
    doc, DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument,
    TantivyError, Term,
};

use crate::cancel::CancelToken;
use crate::cascade::{check_top_n, load_candidates, Cascade};
use crate::error::{abridge, BoxError, Result, SearchError};
use crate::import::{
    id_problem, read_dir, read_jsonl, Article, FieldMapping, ImportOptions, ImportReport,
};
use crate::loader::{first_str, DocLoader};
use crate::query_check::check_query;
use crate::rerank::{Hit, RerankResults, Timings};
use crate::schema::{register_analyzers, ArticleFields, SchemaOptions};
use crate::stored::{check_store_footers, read_document, Walked};

/// Smallest per-thread memory budget tantivy accepts.
const MIN_THREAD_BUDGET: usize = 15_000_000;

/// Which fields the BM25 first stage searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryFields {
    /// The combined `all` field when the index has one, else title + body. Default.
    #[default]
    Auto,
    /// The combined `all` field (title + body in one field, one BM25 score).
    Combined,
    /// Title and body as separate fields (their BM25 scores add up).
    Separate,
}

/// Default boost of the title when title and body are separate fields (best NDCG@10 on
/// SciFact test among 0.25, 0.5, 0.75, 1 and 2).
pub const DEFAULT_TITLE_BOOST: f32 = 0.5;

/// Options of the BM25 first stage.
///
/// tantivy's BM25 uses the fixed parameters `k1 = 1.2`, `b = 0.75`; they cannot be tuned.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryOptions {
    /// Which fields are searched.
    pub fields: QueryFields,
    /// Boost of the title field. `None`: [`DEFAULT_TITLE_BOOST`] when title and body are
    /// separate fields, and no separate title clause with the combined field. `Some(b)`:
    /// the title is searched with boost `b` in both modes (`b <= 0` leaves it out).
    pub title_boost: Option<f32>,
}
/// The largest title boost [`ArticleIndex::set_query_options`] takes (in size).
pub const MAX_TITLE_BOOST: f32 = 1e6;

/// An article index in a directory, searchable from many threads at once (`Sync`).
///
/// ```
/// use tantivy_rerank_search::{Article, ArticleIndex, Cascade, ImportOptions, SearchOptions};
/// # fn main() -> Result<(), tantivy_rerank_search::SearchError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let index = ArticleIndex::create(dir.path(), &Default::default())?;
/// let articles = vec![
///     Article { id: "1".into(), title: "Cats".into(), body: "Cats purr and sleep.".into() },
///     Article { id: "2".into(), title: "Dogs".into(), body: "Dogs bark at cats.".into() },
/// ];
/// let report = index.import_articles(articles, &ImportOptions::default())?;
/// assert_eq!(report.docs_indexed, 2);
///
/// let bm25 = index.search("cats", &SearchOptions::default())?;
/// assert_eq!(bm25.hits.len(), 2);
///
/// // Any closure can rerank; here: prefer texts that mention dogs.
/// let reranker = |_q: &str, texts: &[&str]| {
///     Ok::<_, std::convert::Infallible>(texts.iter().map(|t| t.matches("Dogs").count() as f32).collect())
/// };
/// let cascade = Cascade::of(reranker);
/// let results = index.search("cats", &SearchOptions::default().rerank(&cascade))?;
/// assert_eq!(results.hits[0].doc.id, "2");
/// # Ok(()) }
/// ```
pub struct ArticleIndex {
    path: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: ArticleFields,
    query_options: QueryOptions,
}

impl std::fmt::Debug for ArticleIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArticleIndex")
            .field("path", &self.path)
            .field("fields", &self.fields)
            .field("query_options", &self.query_options)
            .finish()
    }
}

fn map_writer_error(path: &Path) -> impl FnOnce(TantivyError) -> SearchError + '_ {
    move |e| match e {
        TantivyError::LockFailure(LockError::LockBusy, _) => SearchError::IndexLocked {
            path: path.to_path_buf(),
        },
        other => SearchError::Tantivy {
            context: format!("opening a writer on {}", path.display()),
            source: other,
        },
    }
}

impl ArticleIndex {
    /// Open the index in `path`. Fails with [`SearchError::IndexNotFound`] when the
    /// directory or the index in it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.join("meta.json").is_file() {
            return Err(SearchError::IndexNotFound {
                path: path.to_path_buf(),
            });
        }
        check_managed_files(path)?;
        guarded(path, "opening the index", || {
            let index = Index::open_in_dir(path)
                .map_err(SearchError::tantivy(format!("opening {}", path.display())))?;
            Self::from_index(path, index)
        })
    }

    /// Create a new index in `path` (created if missing). Fails if it already holds one.
    pub fn create(path: impl AsRef<Path>, options: &SchemaOptions) -> Result<Self> {
        let path = path.as_ref();
        std::fs::create_dir_all(path).map_err(SearchError::io(path))?;
        let index = Index::create_in_dir(path, ArticleFields::schema(options)).map_err(
            SearchError::tantivy(format!("creating an index in {}", path.display())),
        )?;
        Self::from_index(path, index)
    }

    /// Open the index in `path`, or create it with `options` when there is none.
    pub fn open_or_create(path: impl AsRef<Path>, options: &SchemaOptions) -> Result<Self> {
        let path = path.as_ref();
        if path.join("meta.json").is_file() {
            Self::open(path)
        } else {
            Self::create(path, options)
        }
    }

    fn from_index(path: &Path, index: Index) -> Result<Self> {
        register_analyzers(&index);
        check_store_footers(&index).map_err(|message| SearchError::Corrupted {
            path: path.to_path_buf(),
            context: "opening the doc store".into(),
            message,
        })?;
        let fields = ArticleFields::from_index(&index, path)?;
        let reader = index
            .reader_builder()
            // Commits of other handles and processes become visible within about half a
            // second; this handle's own imports reload at once.
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(SearchError::tantivy("opening a reader"))?;
        Ok(ArticleIndex {
            path: path.to_path_buf(),
            index,
            reader,
            fields,
            query_options: QueryOptions::default(),
        })
    }

    /// The index directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tantivy index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The fields.
    pub fn fields(&self) -> ArticleFields {
        self.fields
    }

    /// A searcher on the committed state as of the reader's last reload: this handle's own
    /// imports are visible as soon as they return; commits through another handle or
    /// process within about half a second, or at once after [`ArticleIndex::reload`].
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// Make the latest commit (of any handle or process) visible to searches now.
    pub fn reload(&self) -> Result<()> {
        self.reader
            .reload()
            .map_err(SearchError::tantivy("reloading the reader"))
    }

    /// Number of live documents.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// True when a live document has the id `id`.
    pub fn contains_id(&self, id: &str) -> Result<bool> {
        guarded(&self.path, "looking up an id", || {
            self.contains_id_unguarded(id)
        })
    }

    fn contains_id_unguarded(&self, id: &str) -> Result<bool> {
        let query = TermQuery::new(
            Term::from_field_text(self.fields.id, id),
            IndexRecordOption::Basic,
        );
        let live = self
            .searcher()
            .search(&query, &Count)
            .map_err(SearchError::tantivy(format!("looking up id `{id}`")))?;
        Ok(live > 0)
    }

    /// First-stage options.
    pub fn query_options(&self) -> QueryOptions {
        self.query_options
    }

    /// Set the first-stage options. A title boost that is not a finite number of at most
    /// [`MAX_TITLE_BOOST`] in size is [`SearchError::InvalidOption`] (an infinite BM25
    /// score would break every later stage).
    pub fn set_query_options(&mut self, options: QueryOptions) -> Result<()> {
        if let Some(b) = options
            .title_boost
            .filter(|b| !b.is_finite() || b.abs() > MAX_TITLE_BOOST)
        {
            return Err(SearchError::InvalidOption {
                option: "title_boost",
                value: b.to_string(),
                reason: "must be a finite number between -1e6 and 1e6",
            });
        }
        self.query_options = options;
        Ok(())
    }

    /// Builder form of [`ArticleIndex::set_query_options`].
    pub fn with_query_options(mut self, options: QueryOptions) -> Result<Self> {
        self.set_query_options(options)?;
        Ok(self)
    }

    // ---------------------------------------------------------------- import

    /// Import BEIR `corpus.jsonl` (`_id`, `title`, `text`).
    pub fn import_beir(
        &self,
        corpus: impl AsRef<Path>,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        self.import_jsonl(corpus, &FieldMapping::beir(), options)
    }

    /// Import a JSONL file whose records hold id, title and body under `mapping`'s names.
    pub fn import_jsonl(
        &self,
        path: impl AsRef<Path>,
        mapping: &FieldMapping,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        let path = path.as_ref();
        self.import_with(options, |sink, report| {
            read_jsonl(
                path,
                mapping,
                options.skip_bad_lines,
                &mut report.bad_lines_skipped,
                &mut |_, article| sink(article),
            )
        })
    }

    /// Import every `.txt` and `.md` file under `dir` (recursively). Title: the first
    /// markdown `# ` heading, else the file name without extension; body: the text, less
    /// that heading's line when it opens the file; id: the path relative to `dir`. Files
    /// whose text or path below `dir` is not UTF-8 are skipped with a warning and counted;
    /// so are entries that cannot be read as regular files (FIFOs, sockets, devices,
    /// dangling symbolic links, no read permission). Symbolic links to files are read,
    /// links to folders are not followed.
    pub fn import_dir(
        &self,
        dir: impl AsRef<Path>,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        let dir = dir.as_ref();
        self.import_with(options, |sink, report| read_dir(dir, report, sink))
    }

    /// Import articles from an iterator.
    pub fn import_articles(
        &self,
        articles: impl IntoIterator<Item = Article>,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        self.import_with(options, |sink, _| {
            articles.into_iter().try_for_each(&mut *sink)
        })
    }

    /// Run `produce`, indexing every article it hands to the sink, and commit once at the
    /// end. On error nothing is committed.
    fn import_with<F>(&self, options: &ImportOptions, produce: F) -> Result<ImportReport>
    where
        F: FnOnce(&mut dyn FnMut(Article) -> Result<()>, &mut ImportReport) -> Result<()>,
    {
        guarded(&self.path, "importing", || {
            self.import_unguarded(options, produce)
        })
    }

    fn import_unguarded<F>(&self, options: &ImportOptions, produce: F) -> Result<ImportReport>
    where
        F: FnOnce(&mut dyn FnMut(Article) -> Result<()>, &mut ImportReport) -> Result<()>,
    {
        let start = Instant::now();
        let mut writer = self.writer(options)?;
        // The writer lock keeps every other writer out until the commit, so the latest
        // commit is the state to look existing ids up in (another handle may have made it).
        self.reload()?;
        let searcher = self.reader.searcher();
        let existing = searcher.num_docs() > 0;
        let fields = self.fields;
        let mut seen: HashSet<String> = HashSet::new();
        let mut report = ImportReport::default();
        let bar = progress_bar(options.progress);
        let mut indexed = 0u64;
        let mut replaced = 0u64;
        let produced = {
            let writer_ref = &writer;
            let mut sink = |a: Article| -> Result<()> {
                if let Some(problem) = id_problem(&a.id) {
                    return Err(SearchError::InvalidId {
                        id: abridge(&format!("{:?}", a.id), 60),
                        reason: format!("it {problem}"),
                    });
                }
                let term = Term::from_field_text(fields.id, &a.id);
                let in_index = existing && {
                    let q = TermQuery::new(term.clone(), IndexRecordOption::Basic);
                    searcher
                        .search(&q, &Count)
                        .map_err(SearchError::tantivy("looking up an existing id"))?
                        > 0
                };
                let dup = !seen.insert(a.id.clone());
                if in_index || dup {
                    writer_ref.delete_term(term);
                    replaced += 1;
                }
                let mut doc = doc!(fields.id => a.id, fields.title => a.title.as_str(), fields.body => a.body.as_str());
                if let Some(all) = fields.all {
                    doc.add_text(all, &a.title);
                    doc.add_text(all, &a.body);
                }
                writer_ref
                    .add_document(doc)
                    .map_err(SearchError::tantivy("adding a document"))?;
                indexed += 1;
                bar.inc(1);
                Ok(())
            };
            produce(&mut sink, &mut report)
        };
        let committed = produced.and_then(|()| {
            writer
                .commit()
                .map(|_| ())
                .map_err(SearchError::tantivy("committing"))
        });
        if let Err(e) = committed {
            let e = self.failure_cause(&mut writer, e);
            // Dropping the writer rolls back what was not committed; the segment files it had
            // written stay on disk until a garbage collection removes them.
            drop(writer);
            bar.finish_and_clear();
            self.remove_uncommitted_files();
            return Err(e);
        }
        writer
            .wait_merging_threads()
            .map_err(SearchError::tantivy("merging segments"))?;
        self.reload()?;
        bar.finish_and_clear();
        report.docs_indexed = indexed;
        report.docs_replaced = replaced;
        report.elapsed = start.elapsed();
        tracing::info!(
            docs = report.docs_indexed,
            replaced = report.docs_replaced,
            bad_lines = report.bad_lines_skipped,
            non_utf8 = report.non_utf8_files_skipped,
            unreadable = report.unreadable_files_skipped,
            secs = report.elapsed.as_secs_f64(),
            "import committed"
        );
        Ok(report)
    }

    /// The error an import failed with, made precise: a writer whose indexing thread failed
    /// only says "An index writer was killed" to `add_document`, so the threads are asked for
    /// their own error; a full disk (or quota) becomes [`SearchError::DiskFull`].
    fn failure_cause(&self, writer: &mut IndexWriter, e: SearchError) -> SearchError {
        let e = match e {
            SearchError::Tantivy {
                source: TantivyError::ErrorInThread(message),
                context,
            } => match writer.prepare_commit() {
                // Joining the indexing threads returns the first one's failure.
                Err(cause) => SearchError::Tantivy {
                    context: format!("{context} (an indexing thread failed)"),
                    source: cause,
                },
                Ok(prepared) => {
                    drop(prepared);
                    SearchError::Tantivy {
                        context,
                        source: TantivyError::ErrorInThread(message),
                    }
                }
            },
            other => other,
        };
        match &e {
            SearchError::Tantivy { context, source } if tantivy_disk_full(source) => {
                SearchError::DiskFull {
                    path: self.path.clone(),
                    context: context.clone(),
                    cause: source.to_string(),
                }
            }
            SearchError::Io { source, .. } if io_disk_full(source) => SearchError::DiskFull {
                path: self.path.clone(),
                context: "importing".into(),
                cause: source.to_string(),
            },
            _ => e,
        }
    }

    /// Delete the files of segments that no commit refers to (those a failed import wrote),
    /// with tantivy's own garbage collection: it knows every file it wrote, and keeps those
    /// of the last commit. Failures are logged: the import's error is what the caller needs.
    fn remove_uncommitted_files(&self) {
        let collected = self
            .index
            .writer_with_num_threads::<TantivyDocument>(1, MIN_THREAD_BUDGET)
            .and_then(|w| w.garbage_collect_files().wait());
        match collected {
            Ok(gc) => tracing::info!(
                deleted = gc.deleted_files.len(),
                failed = gc.failed_to_delete_files.len(),
                "removed the files of a failed import"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                path = %self.path.display(),
                "could not remove the files of a failed import"
            ),
        }
    }

    fn writer(&self, options: &ImportOptions) -> Result<IndexWriter> {
        let budget = options.memory_budget_bytes;
        if budget < MIN_THREAD_BUDGET {
            return Err(SearchError::InvalidOption {
                option: "memory_budget_bytes",
                value: budget.to_string(),
                reason: "must be at least 15 MB",
            });
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = options
            .threads
            .unwrap_or(cores)
            .clamp(1, (budget / MIN_THREAD_BUDGET).max(1))
            // tantivy's `MAX_NUM_THREAD`.
            .min(8);
        // tantivy caps each thread's arena below 4 GB.
        let budget = budget.min(threads * ((4usize << 30) - (1 << 20)));
        tracing::debug!(threads, budget, "opening index writer");
        self.index
            .writer_with_num_threads(threads, budget)
            .map_err(map_writer_error(&self.path))
    }

    // ---------------------------------------------------------------- search

    /// Parse `query` leniently (syntax errors are logged at debug and never fail), after
    /// [`check_query`](crate::check_query): a query nested too deep or with an absurd boost is
    /// [`SearchError::InvalidQuery`].
    ///
    /// `None` (no hits) for a query with no searchable terms: empty, whitespace, or words
    /// that the analyzer removes entirely (stop words such as `the` or `is it`, or stray
    /// operators such as `AND OR NOT`). A query of only negative clauses (`-cats`) matches
    /// every document without those terms, as tantivy's parser does; one whose negated terms
    /// are all removed (`-the`) has nothing to search and is `None` too. An explicit `*`
    /// still matches every document.
    ///
    /// A query of more than [`DEFAULT_MAX_QUERY_TERMS`] terms is [`SearchError::QueryTooLong`]
    /// (see [`SearchOptions::max_query_terms`]).
    pub fn parse_query(&self, query: &str) -> Result<Option<Box<dyn Query>>> {
        self.parse_capped(query, DEFAULT_MAX_QUERY_TERMS)
    }

    fn parse_capped(&self, query: &str, max_terms: usize) -> Result<Option<Box<dyn Query>>> {
        check_query(query)?;
        self.check_terms(query, max_terms)?;
        Ok(self.parse_checked(query))
    }

    /// Refuse a query whose text the searched field's analyzer cuts into more than
    /// `max_terms` tokens, before tantivy's parser builds a clause (and later a scorer, with
    /// its buffers) for each: counting stops just past the cap, so a huge query costs no more
    /// than the cap to refuse.
    fn check_terms(&self, query: &str, max_terms: usize) -> Result<()> {
        let field = match self.query_options.fields {
            QueryFields::Auto | QueryFields::Combined => self.fields.all,
            QueryFields::Separate => None,
        }
        .unwrap_or(self.fields.body);
        let mut analyzer = self
            .index
            .tokenizer_for_field(field)
            .map_err(SearchError::tantivy("reading the query analyzer"))?;
        let mut stream = analyzer.token_stream(query);
        let mut terms = 0usize;
        while terms <= max_terms && stream.advance() {
            terms += 1;
        }
        if terms > max_terms {
            return Err(SearchError::QueryTooLong {
                terms,
                max: max_terms,
            });
        }
        Ok(())
    }

    fn parse_checked(&self, query: &str) -> Option<Box<dyn Query>> {
        if query.trim().is_empty() {
            return None;
        }
        let o = self.query_options;
        let f = self.fields;
        let combined = match o.fields {
            QueryFields::Auto | QueryFields::Combined => f.all,
            QueryFields::Separate => None,
        };
        let title_boost = o.title_boost.unwrap_or(if combined.is_some() {
            0.0
        } else {
            DEFAULT_TITLE_BOOST
        });
        let base = combined.unwrap_or(f.body);
        let parser = if title_boost > 0.0 {
            let mut p = QueryParser::for_index(&self.index, vec![base, f.title]);
            p.set_field_boost(f.title, title_boost);
            p
        } else {
            QueryParser::for_index(&self.index, vec![base])
        };
        // Natural-language queries keep tantivy's default OR semantics: BM25 ranks partial
        // matches.
        let (q, errors) = parser.parse_query_lenient(query);
        if !errors.is_empty() {
            tracing::debug!(query, ?errors, "query syntax errors ignored");
        }
        // When no positive clause is left (every term was analyzed away, or only negative
        // clauses were given), tantivy adds a match-all clause and reports
        // `AllButQueryForbidden`. With no term at all left to include or exclude, that
        // match-all would be the whole query: every document, each scored 1. (When nothing
        // at all is left, the parser returns an `EmptyQuery` instead.)
        let match_all_added = errors
            .iter()
            .any(|e| matches!(e, QueryParserError::AllButQueryForbidden));
        let mut has_term = false;
        q.query_terms(&mut |_, _| has_term = true);
        if !has_term && (match_all_added || q.is::<EmptyQuery>()) {
            tracing::debug!(query, "no searchable terms in the query: no hits");
            return None;
        }
        Some(q)
    }

    /// The loader of this index's documents ([`Article`]: id, title and body), for running
    /// the second stage on a query of your own ([`Cascade::rerank`], [`Cascade::collector`]).
    pub fn loader(&self) -> ArticleLoader {
        ArticleLoader {
            fields: self.fields,
        }
    }

    /// Search: the BM25 top `options.top_n` of `query`, or, with `options.rerank`, the BM25
    /// candidates its stages need, reranked, and the best `options.top_n` of them.
    ///
    /// A query with no searchable terms (see [`ArticleIndex::parse_query`]) has no hits and
    /// calls no reranker. Hits carry the stored [`Article`]; without reranking their
    /// `stage_scores` are empty and `rerank_score` and `score` are `None`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tantivy_rerank_search::{Article, ArticleIndex, Cascade, ImportOptions, SearchOptions};
    /// let dir = tempfile::tempdir()?;
    /// let index = ArticleIndex::create(dir.path(), &Default::default())?;
    /// let quiet = ImportOptions { progress: false, ..Default::default() };
    /// let article = |id: &str, body: &str| Article { id: id.into(), title: String::new(), body: body.into() };
    /// index.import_articles([article("v1", "Lava flows."), article("v2", "Lava and ash.")], &quiet)?;
    ///
    /// let bm25 = index.search("lava", &SearchOptions::default())?;
    /// assert_eq!(bm25.hits[0].first_stage_rank, 1);
    /// assert_eq!(bm25.hits[0].score, None);
    ///
    /// let ash = |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(t.iter().map(|t| t.matches("ash").count() as f32).collect());
    /// let cascade = Cascade::of(ash);
    /// let reranked = index.search("lava", &SearchOptions::default().top_n(1).rerank(&cascade))?;
    /// assert_eq!(reranked.hits[0].doc.id, "v2");
    /// # Ok(()) }
    /// ```
    pub fn search(&self, query: &str, options: &SearchOptions<'_>) -> Result<SearchResults> {
        guarded(&self.path, "searching", || {
            self.search_unguarded(query, options)
        })
    }

    fn search_unguarded(&self, query: &str, options: &SearchOptions<'_>) -> Result<SearchResults> {
        let started = Instant::now();
        check_top_n(options.top_n)?;
        if let Some(cascade) = options.rerank {
            cascade.validate()?;
        }
        if let Some(token) = options.cancel {
            token.check()?;
        }
        let searcher = self.reader.searcher();
        let Some(q) = self.parse_capped(query, options.max_query_terms)? else {
            return Ok(RerankResults::empty(query));
        };
        let limit = match options.rerank {
            Some(c) => c.stages()[0].options().window.max(options.top_n),
            None => options.top_n,
        };
        let top = searcher
            .search(
                q.as_ref(),
                &TopDocs::with_limit(limit.min(searcher_docs(&searcher))),
            )
            .map_err(SearchError::tantivy("collecting the first stage"))?;
        let retrieve = started.elapsed();
        let loader = self.loader();
        match options.rerank {
            Some(cascade) => cascade.rerank_since(
                &searcher,
                query,
                &top,
                &loader,
                options.top_n,
                started,
                retrieve,
                options.cancel,
            ),
            None => {
                let t = Instant::now();
                let loaded = load_candidates(&searcher, &top, &loader)?;
                let hits: Vec<Hit<Article>> = loaded
                    .into_iter()
                    .zip(1..)
                    .map(|(c, rank)| Hit::first_stage(c.doc, c.address, c.score, rank))
                    .collect();
                Ok(RerankResults {
                    candidates: hits.len(),
                    hits,
                    timings: Timings {
                        retrieve,
                        fetch: t.elapsed(),
                        ..Timings::default()
                    },
                    ..RerankResults::empty(query)
                })
            }
        }
    }
}

/// Results of [`ArticleIndex::search`].
pub type SearchResults = RerankResults<Article>;

/// The most terms a query may have by default ([`SearchOptions::max_query_terms`]).
pub const DEFAULT_MAX_QUERY_TERMS: usize = 1_024;

/// Options of [`ArticleIndex::search`].
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions<'a> {
    /// Hits returned (default 10).
    pub top_n: usize,
    /// The second stage; `None` (default): BM25 only.
    pub rerank: Option<&'a Cascade<'a>>,
    /// Stops the search when cancelled or past its deadline (default none): checked before
    /// the first stage and throughout the second (see [`CancelToken`]); the search then fails
    /// with [`SearchError::Cancelled`].
    pub cancel: Option<&'a CancelToken>,
    /// The most terms the query may have, as the searched field's analyzer cuts it (default
    /// [`DEFAULT_MAX_QUERY_TERMS`]); a longer query is [`SearchError::QueryTooLong`]. Each
    /// term costs memory while the query runs (tens of kilobytes: a 60,000-term query took
    /// gigabytes), so the cap bounds what one query can take.
    pub max_query_terms: usize,
}

impl Default for SearchOptions<'_> {
    fn default() -> Self {
        SearchOptions {
            top_n: 10,
            rerank: None,
            cancel: None,
            max_query_terms: DEFAULT_MAX_QUERY_TERMS,
        }
    }
}

impl<'a> SearchOptions<'a> {
    /// Return `top_n` hits.
    pub fn top_n(mut self, top_n: usize) -> Self {
        self.top_n = top_n;
        self
    }

    /// Rerank with `cascade`.
    pub fn rerank(mut self, cascade: &'a Cascade<'a>) -> Self {
        self.rerank = Some(cascade);
        self
    }

    /// Stop when `token` is cancelled.
    pub fn cancel(mut self, token: &'a CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Refuse queries of more than `terms` terms.
    pub fn max_query_terms(mut self, terms: usize) -> Self {
        self.max_query_terms = terms;
        self
    }
}

/// Loads an article index's documents: id, title and body; the reranker reads title and
/// body joined by a newline (the body alone when the title is empty).
#[derive(Debug, Clone, Copy)]
pub struct ArticleLoader {
    fields: ArticleFields,
}

impl DocLoader for ArticleLoader {
    type Doc = Article;

    fn load(&self, searcher: &Searcher, address: DocAddress) -> Result<Article, BoxError> {
        let f = self.fields;
        let [id, title, body] = match read_document(searcher, address, &[f.id, f.title, f.body])? {
            Walked::Values(found) => {
                let mut found = found.into_iter();
                [(); 3].map(|()| found.next().and_then(|v| v.into_iter().next()))
            }
            Walked::Nested => {
                let doc: TantivyDocument = searcher.doc(address)?;
                [f.id, f.title, f.body].map(|field| first_str(&doc, field).map(str::to_string))
            }
        };
        let id = id.ok_or_else(|| SearchError::MissingStoredField {
            doc_address: fmt_address(address),
            field: "id".into(),
        })?;
        Ok(Article {
            id,
            // Title and body may legitimately be empty: only the id is required.
            title: title.unwrap_or_default(),
            body: body.unwrap_or_default(),
        })
    }

    fn text<'d>(&self, doc: &'d Article) -> Cow<'d, str> {
        if doc.title.trim().is_empty() {
            Cow::Borrowed(&doc.body)
        } else {
            Cow::Owned(format!("{}\n{}", doc.title, doc.body))
        }
    }
}

/// Run `f`, turning a panic (tantivy panics on some corrupted segment data: an index out of
/// bounds, a failed unwrap) into [`SearchError::Corrupted`] naming the index. What tantivy
/// detects itself (checksums of `meta.json`, missing files) is its own error; corruption that
/// reads as valid data is not detected. A panic on a tantivy background thread (merging)
/// surfaces as the writer's error at commit.
fn guarded<T>(path: &Path, context: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            tracing::error!(path = %path.display(), context, message, "tantivy panicked");
            Err(SearchError::Corrupted {
                path: path.to_path_buf(),
                context: context.to_string(),
                message,
            })
        }
    }
}

/// Refuse an index whose `.managed.json` lists a file outside its directory: tantivy's
/// garbage collection deletes listed files it no longer uses, so a hand-edited entry such
/// as `../../important` would be deleted by the next import.
fn check_managed_files(path: &Path) -> Result<()> {
    let file = path.join(".managed.json");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SearchError::io(&file)(e)),
    };
    let bad = |entry: String, reason: &str| SearchError::UnsafeIndexFile {
        path: file.clone(),
        entry,
        reason: reason.to_string(),
    };
    let entries: Vec<String> = serde_json::from_str(&text).map_err(|e| {
        bad(
            crate::error::abridge(&text, 60),
            &format!("not a JSON list of file names: {e}"),
        )
    })?;
    for entry in entries {
        let p = Path::new(&entry);
        let plain = p.components().count() == 1
            && matches!(p.components().next(), Some(std::path::Component::Normal(_)));
        if !plain {
            return Err(bad(
                entry,
                "it is not a plain file name inside the index directory",
            ));
        }
    }
    Ok(())
}

/// Whether an I/O error says the disk (or the user's quota) is full: its kind, or that of an
/// I/O error it wraps (tantivy wraps some in errors of kind `Other`).
fn io_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || text_says_disk_full(&format!("{e:?}"))
}

/// Whether the debug text of an error names a full disk's error kind (an `Os` error's debug
/// text carries its kind too).
fn text_says_disk_full(debug: &str) -> bool {
    debug.contains("StorageFull") || debug.contains("QuotaExceeded")
}

/// Whether a tantivy error comes from a full disk: its I/O error, or, where tantivy keeps
/// only the text of one (an indexing thread's failure), that text.
fn tantivy_disk_full(e: &TantivyError) -> bool {
    use tantivy::directory::error::OpenWriteError;
    match e {
        TantivyError::IoError(io) => io_disk_full(io),
        TantivyError::OpenWriteError(OpenWriteError::IoError { io_error, .. }) => {
            io_disk_full(io_error)
        }
        other => text_says_disk_full(&format!("{other:?}")),
    }
}

/// Live documents of a searcher: the most a first stage can return (tantivy preallocates a
/// `TopDocs` limit, so an unclamped huge limit would abort on allocation).
fn searcher_docs(searcher: &Searcher) -> usize {
    usize::try_from(searcher.num_docs())
        .unwrap_or(usize::MAX)
        .max(1)
}

fn fmt_address(a: DocAddress) -> String {
    format!("{}/{}", a.segment_ord, a.doc_id)
}

fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} indexed {human_pos} docs [{elapsed_precise}] {per_sec}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    use tantivy::directory::error::{DeleteError, OpenReadError, OpenWriteError};
    use tantivy::directory::{
        AntiCallToken, Directory, FileHandle, MmapDirectory, TerminatingWrite, WatchCallback,
        WatchHandle, WritePtr,
    };

    /// A directory on a disk that holds `room` more bytes: writes past it fail with ENOSPC,
    /// as a full disk's do.
    #[derive(Debug, Clone)]
    struct SmallDisk {
        inner: MmapDirectory,
        room: Arc<AtomicI64>,
    }

    fn no_space() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::StorageFull)
    }

    impl SmallDisk {
        fn take(&self, bytes: usize) -> std::io::Result<()> {
            let left = self.room.fetch_sub(bytes as i64, Ordering::SeqCst) - bytes as i64;
            if left < 0 {
                self.room.fetch_add(bytes as i64, Ordering::SeqCst);
                return Err(no_space());
            }
            Ok(())
        }
    }

    struct SmallFile {
        inner: WritePtr,
        disk: SmallDisk,
    }

    impl Write for SmallFile {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.disk.take(buf.len())?;
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }

    impl TerminatingWrite for SmallFile {
        fn terminate_ref(&mut self, token: AntiCallToken) -> std::io::Result<()> {
            self.inner.terminate_ref(token)
        }
    }

    impl Directory for SmallDisk {
        fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
            self.inner.get_file_handle(path)
        }
        fn delete(&self, path: &Path) -> Result<(), DeleteError> {
            self.inner.delete(path)
        }
        fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
            self.inner.exists(path)
        }
        fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
            let inner = self.inner.open_write(path)?;
            Ok(std::io::BufWriter::new(Box::new(SmallFile {
                inner,
                disk: self.clone(),
            })))
        }
        fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
            self.inner.atomic_read(path)
        }
        fn atomic_write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
            self.take(data.len())?;
            self.inner.atomic_write(path, data)
        }
        fn sync_directory(&self) -> std::io::Result<()> {
            self.inner.sync_directory()
        }
        fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
            self.inner.watch(callback)
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // Lock files and the managed-file list are bookkeeping, not segments.
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    fn articles(n: usize, from: usize) -> impl Iterator<Item = Article> {
        (from..from + n).map(|i| Article {
            id: format!("a{i}"),
            title: format!("Article {i}"),
            body: format!("Lava flows {i} and ash clouds drift over the valley {i}. ").repeat(20),
        })
    }

    /// A full disk during an import: the error says so, nothing is committed, the segment
    /// files the import wrote are removed, and the next import works once there is room.
    #[test]
    fn a_full_disk_is_named_and_its_partial_files_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = SmallDisk {
            inner: MmapDirectory::open(tmp.path()).unwrap(),
            room: Arc::new(AtomicI64::new(i64::MAX / 2)),
        };
        let index = Index::create(
            disk.clone(),
            ArticleFields::schema(&SchemaOptions::default()),
            tantivy::IndexSettings::default(),
        )
        .unwrap();
        let index = ArticleIndex::from_index(tmp.path(), index).unwrap();
        let options = ImportOptions {
            progress: false,
            threads: Some(1),
            memory_budget_bytes: MIN_THREAD_BUDGET,
            ..Default::default()
        };
        index.import_articles(articles(20, 0), &options).unwrap();
        let committed = files(tmp.path());

        // Room for a few kilobytes: the segment written at the commit does not fit.
        disk.room.store(4_000, Ordering::SeqCst);
        let err = index
            .import_articles(articles(200, 20), &options)
            .unwrap_err();
        assert!(matches!(err, SearchError::DiskFull { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("is full") && text.contains(&tmp.path().display().to_string()),
            "{text}"
        );
        assert_eq!(
            index.num_docs(),
            20,
            "nothing of the failed import committed"
        );
        assert_eq!(
            files(tmp.path()),
            committed,
            "the partial segment files are gone"
        );

        // A segment flushed in the middle of an import (the writer's memory budget is full)
        // fails on its indexing thread: `add_document` only hears that the writer was killed,
        // and the thread's own error is fetched.
        disk.room.store(4_000, Ordering::SeqCst);
        let err = index
            .import_articles(articles(20_000, 1_000), &options)
            .unwrap_err();
        match &err {
            SearchError::DiskFull { context, .. } => {
                assert!(context.contains("adding a document"), "{err}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(files(tmp.path()), committed);

        // Room again: the same import works.
        disk.room.store(i64::MAX / 2, Ordering::SeqCst);
        let report = index.import_articles(articles(200, 20), &options).unwrap();
        assert_eq!(report.docs_indexed, 200);
        assert_eq!(index.num_docs(), 220);
    }
}
