//! Rerank a search over an index of your own schema: your fields, your query (a boolean query
//! with a range filter), tantivy's own `TopDocs` as the first stage, and a reranker as the
//! second stage through [`Cascade::collector`].
//!
//! ```text
//! cargo run --release --example own_schema -- [--model DIR|HUB_ID] [--query TEXT] [--max-paragraph N]
//! ```
//!
//! The index (in the project's `index-data/own_schema`, rebuilt on each run) holds the SQuAD
//! paragraphs of the shared data folder as news items: `headline` (the article's title),
//! `content` (the paragraph), `paragraph` (its position in the article: a `u64` fast field)
//! and `article` (the article's id). The query matches headline or content and keeps only
//! the first `--max-paragraph` paragraphs of each article (default 5).
//!
//! Without `--model` the reranker is a closure (query words found in the text, weighted by
//! how rare they are); with it, any cross-encoder or embedding-model directory or Hub id
//! (`../shared/models/all-MiniLM-L6-v2` works here). The first-stage and reranked lists are
//! printed side by side.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::schema::{Field, Schema, Value, FAST, INDEXED, STORED, STRING, TEXT};
use tantivy::{doc, DocAddress, Index, Searcher, TantivyDocument, Term};
use tantivy_rerank::encoders::{BiEncoderOptions, CrossEncoderOptions};
use tantivy_rerank::search::{load_model_reranker, Cascade, Reranker, Stage, StoredText};

struct News {
    index: Index,
    headline: Field,
    content: Field,
    paragraph: Field,
}

/// Build the index of SQuAD paragraphs in `dir`.
fn build(corpus: &Path, dir: &Path) -> anyhow::Result<News> {
    let mut builder = Schema::builder();
    let headline = builder.add_text_field("headline", TEXT | STORED);
    let content = builder.add_text_field("content", TEXT | STORED);
    let paragraph = builder.add_u64_field("paragraph", INDEXED | FAST | STORED);
    let article = builder.add_text_field("article", STRING | STORED);
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let index = Index::create_in_dir(dir, builder.build())?;
    let mut writer = index.writer(100_000_000)?;
    let text =
        std::fs::read_to_string(corpus).with_context(|| format!("reading {}", corpus.display()))?;
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}", corpus.display(), line_no + 1))?;
        let field = |name: &str| v[name].as_str().unwrap_or_default();
        // Ids look like `squad-a00-p003`: article `squad-a00`, paragraph 3.
        let (art, p) = field("_id")
            .rsplit_once("-p")
            .unwrap_or((field("_id"), "0"));
        writer.add_document(doc!(
            headline => field("title"),
            content => field("text"),
            paragraph => p.parse::<u64>().unwrap_or(0),
            article => art,
        ))?;
    }
    writer.commit()?;
    Ok(News {
        index,
        headline,
        content,
        paragraph,
    })
}

impl News {
    /// `text` in headline or content, among the first `max_paragraph` paragraphs.
    fn query(&self, text: &str, max_paragraph: u64) -> Box<dyn Query> {
        let parser = QueryParser::for_index(&self.index, vec![self.headline, self.content]);
        let (words, _errors) = parser.parse_query_lenient(text);
        let first_paragraphs = RangeQuery::new(
            Bound::Included(Term::from_field_u64(self.paragraph, 0)),
            Bound::Excluded(Term::from_field_u64(self.paragraph, max_paragraph)),
        );
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, words),
            (Occur::Must, Box::new(first_paragraphs)),
        ]))
    }

    fn describe(&self, searcher: &Searcher, address: DocAddress) -> anyhow::Result<String> {
        let doc: TantivyDocument = searcher.doc(address)?;
        let headline = doc.get_first(self.headline).and_then(|v| v.as_str());
        let paragraph = doc.get_first(self.paragraph).and_then(|v| v.as_u64());
        Ok(format!(
            "{} ¶{}",
            headline.unwrap_or("?"),
            paragraph.unwrap_or(0)
        ))
    }
}

/// A reranker without a model: the query's words found in the text, each weighted by how
/// rare it is among the texts of this query.
fn word_overlap(query: &str, texts: &[&str]) -> Result<Vec<f32>, std::convert::Infallible> {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect();
    let lower: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for w in &words {
        df.insert(
            w,
            lower
                .iter()
                .filter(|t| t.contains(w.as_ref() as &str))
                .count(),
        );
    }
    Ok(lower
        .iter()
        .map(|t| {
            words
                .iter()
                .filter(|w| t.contains(w.as_ref() as &str))
                .map(|w| (1.0 + texts.len() as f32 / (1.0 + df[w.as_str()] as f32)).ln())
                .sum()
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    // Recycle the model's large activation buffers instead of page-faulting fresh ones in
    // every layer (a process-wide glibc setting, so the application makes it, not the library).
    tantivy_rerank::encoders::memory::reuse_large_buffers();
    let mut model: Option<String> = None;
    let mut query = "Which NFL team won Super Bowl 50?".to_string();
    let mut max_paragraph = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => {
                model = Some(
                    args.next()
                        .context("--model needs a directory or a Hub id")?,
                )
            }
            "--query" => query = args.next().context("--query needs text")?,
            "--max-paragraph" => {
                max_paragraph = args
                    .next()
                    .context("--max-paragraph needs a number")?
                    .parse()
                    .context("--max-paragraph")?
            }
            "-h" | "--help" => {
                println!(
                    "usage: own_schema [--model DIR|HUB_ID] [--query TEXT] [--max-paragraph N]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = std::env::var_os("TANTIVY_RERANK_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    let corpus = shared.join("data/squad-paragraphs/corpus.jsonl");
    let news = build(&corpus, &root.join("index-data/own_schema"))?;
    let searcher = news.index.reader()?.searcher();
    println!(
        "indexed {} paragraphs; query {query:?}, paragraphs 0..{max_paragraph} only",
        searcher.num_docs()
    );

    let reranker: Arc<dyn Reranker> = match &model {
        Some(m) => Arc::from(
            load_model_reranker(
                m,
                CrossEncoderOptions::default(),
                BiEncoderOptions::default(),
            )
            .with_context(|| format!("loading {m}"))?,
        ),
        None => {
            println!("no --model: reranking with a word-overlap closure");
            Arc::new(word_overlap)
        }
    };
    let cascade = Cascade::new(Stage::shared(reranker).window(30));
    // The text the reranker reads: headline and content, joined.
    let text = StoredText::new(&news.index.schema(), ["headline", "content"])?;

    // First stage and second stage in one tantivy search: `TopDocs` collects per segment,
    // the cascade reranks its merged top 50 with one batched model call.
    let q = news.query(&query, max_paragraph);
    let collector = cascade.collector(TopDocs::with_limit(50), &searcher, &query, &text, 10);
    let results = searcher.search(q.as_ref(), &collector)??;

    // The first stage alone, for comparison.
    let bm25 = searcher.search(q.as_ref(), &TopDocs::with_limit(10))?;
    println!(
        "\n{:<44} | {:<44}",
        "first stage (BM25, filtered)", "reranked"
    );
    for (i, h) in results.hits.iter().enumerate() {
        let left = match bm25.get(i) {
            Some(&(score, address)) => {
                format!("{:>6.2} {}", score, news.describe(&searcher, address)?)
            }
            None => String::new(),
        };
        let reranked = format!(
            "{:>7} (#{:<2}) {}",
            h.score.map_or("-".into(), |s| format!("{s:.3}")),
            h.first_stage_rank,
            news.describe(&searcher, h.address)?
        );
        println!("{:<44} | {}", shorten(&left, 44), shorten(&reranked, 60));
    }
    println!(
        "\n{} candidates; {}",
        results.candidates,
        results.timing_summary()
    );
    Ok(())
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
