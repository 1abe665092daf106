//! The second stage on an index of the user's own schema: their fields, a boolean query with
//! a range filter, their collector, stored-field and closure loaders.

mod common;

use std::ops::Bound;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::schema::{Field, Schema, Value, FAST, INDEXED, STORED, STRING, TEXT};
use tantivy::{doc, DocAddress, Index, Order, Searcher, TantivyDocument, Term};
use tantivy_rerank_search::{Cascade, SearchError, Stage, StoredText};

struct News {
    index: Index,
    headline: Field,
    content: Field,
    paragraph: Field,
}

/// SQuAD paragraphs as "news": headline = article title, content = paragraph text,
/// `paragraph` = its position in the article (a u64 fast field), `article` = the article id.
fn build_news() -> News {
    let mut builder = Schema::builder();
    let headline = builder.add_text_field("headline", TEXT | STORED);
    let content = builder.add_text_field("content", TEXT | STORED);
    let paragraph = builder.add_u64_field("paragraph", INDEXED | FAST | STORED);
    let article = builder.add_text_field("article", STRING | STORED);
    let index = Index::create_in_ram(builder.build());
    let mut writer = index.writer(50_000_000).unwrap();
    let corpus = common::dataset("squad-paragraphs").join("corpus.jsonl");
    let text = std::fs::read_to_string(corpus).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["_id"].as_str().unwrap();
        let (art, p) = id.rsplit_once("-p").unwrap();
        writer
            .add_document(doc!(
                headline => v["title"].as_str().unwrap(),
                content => v["text"].as_str().unwrap(),
                paragraph => p.parse::<u64>().unwrap(),
                article => art,
            ))
            .unwrap();
    }
    writer.commit().unwrap();
    News {
        index,
        headline,
        content,
        paragraph,
    }
}

impl News {
    /// `text` in headline or content, among the first `max_paragraph` paragraphs.
    fn query(&self, text: &str, max_paragraph: u64) -> Box<dyn Query> {
        let parser = QueryParser::for_index(&self.index, vec![self.headline, self.content]);
        let (words, _) = parser.parse_query_lenient(text);
        let range = RangeQuery::new(
            Bound::Included(Term::from_field_u64(self.paragraph, 0)),
            Bound::Excluded(Term::from_field_u64(self.paragraph, max_paragraph)),
        );
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, words),
            (Occur::Must, Box::new(range)),
        ]))
    }

    fn paragraph_of(&self, searcher: &Searcher, address: DocAddress) -> u64 {
        let doc: TantivyDocument = searcher.doc(address).unwrap();
        doc.get_first(self.paragraph)
            .and_then(|v| v.as_u64())
            .unwrap()
    }
}

/// Counts the query's words in each text.
fn overlap(q: &str, texts: &[&str]) -> Result<Vec<f32>, std::convert::Infallible> {
    let words: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
    Ok(texts
        .iter()
        .map(|t| {
            let t = t.to_lowercase();
            words
                .iter()
                .filter(|w| t.contains(w.as_ref() as &str))
                .count() as f32
        })
        .collect())
}

const QUERY: &str = "Which NFL team won Super Bowl 50 champion";

#[test]
fn function_and_collector_rerank_a_filtered_boolean_query_alike() {
    let news = build_news();
    let searcher = news.index.reader().unwrap().searcher();
    let query = news.query(QUERY, 3);
    let text = StoredText::new(&news.index.schema(), ["headline", "content"]).unwrap();
    let cascade = Cascade::new(Stage::new(overlap).window(30).passages(None));

    let top = searcher
        .search(query.as_ref(), &TopDocs::with_limit(50))
        .unwrap();
    assert!(top.len() >= 30, "{}", top.len());
    let by_function = cascade.rerank(&searcher, QUERY, &top, &text, 10).unwrap();
    let collector = cascade.collector(TopDocs::with_limit(50), &searcher, QUERY, &text, 10);
    let by_collector = searcher
        .search(query.as_ref(), &collector)
        .unwrap()
        .unwrap();

    let key = |r: &tantivy_rerank_search::RerankResults<String>| {
        r.hits
            .iter()
            .map(|h| (h.address, h.first_stage_rank, h.score.map(f32::to_bits)))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&by_function), key(&by_collector));
    assert_eq!(by_function.hits.len(), 10);
    assert_eq!(by_collector.candidates, 50);
    // The filter held, and the text is the two stored fields joined.
    for h in &by_collector.hits {
        assert!(news.paragraph_of(&searcher, h.address) < 3);
        let doc: TantivyDocument = searcher.doc(h.address).unwrap();
        let headline = doc
            .get_first(news.headline)
            .and_then(|v| v.as_str())
            .unwrap();
        assert!(h.doc.starts_with(&format!("{headline}\n")), "{}", h.doc);
    }
    // The reranker reordered: the best hit is not simply BM25's best.
    let scores: Vec<f32> = by_collector.hits.iter().map(|h| h.score.unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(by_collector.timings.retrieve > std::time::Duration::ZERO);
}

#[test]
fn a_fast_field_order_and_a_closure_loader_work_as_the_first_stage() {
    let news = build_news();
    let searcher = news.index.reader().unwrap().searcher();
    let query = news.query("Super Bowl", 40);
    // First stage: the latest paragraphs first (descending `paragraph`), not BM25.
    let child = TopDocs::with_limit(20).order_by_u64_field("paragraph", Order::Desc);
    // Text: headline only, read by a closure.
    let headline = news.headline;
    let loader = move |s: &Searcher, a: DocAddress| -> Result<String, tantivy::TantivyError> {
        let doc: TantivyDocument = s.doc(a)?;
        Ok(doc
            .get_first(headline)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string())
    };
    let cascade = Cascade::new(Stage::new(overlap).window(20));
    let results = searcher
        .search(
            query.as_ref(),
            &cascade.collector(child, &searcher, "super bowl", &loader, 20),
        )
        .unwrap()
        .unwrap();
    assert_eq!(results.hits.len(), 20);
    for h in &results.hits {
        assert_eq!(
            h.first_stage_score,
            news.paragraph_of(&searcher, h.address) as f32,
            "the first-stage score is the fast field value"
        );
        assert!(!h.doc.is_empty());
    }
    // Headlines that contain both words come first.
    assert!(results.hits[0].doc.to_lowercase().contains("super bowl"));
}

#[test]
fn wrong_searcher_and_failing_parts_are_errors_not_panics() {
    let news = build_news();
    let searcher = news.index.reader().unwrap().searcher();
    let other = build_news();
    let other_searcher = other.index.reader().unwrap().searcher();
    let query = news.query(QUERY, 5);
    let text = StoredText::new(&news.index.schema(), ["content"]).unwrap();
    let cascade = Cascade::of(overlap);
    // A collector given another index's searcher is refused by tantivy's search call.
    let collector = cascade.collector(TopDocs::with_limit(10), &other_searcher, QUERY, &text, 5);
    let err = searcher
        .search(query.as_ref(), &collector)
        .expect_err("refused");
    assert!(err.to_string().contains("other than the one"), "{err}");
    // A loader that fails names the address; a reranker that fails names the query.
    let broken = |_s: &Searcher, _a: DocAddress| Err::<String, _>("store is gone");
    let collector = cascade.collector(TopDocs::with_limit(10), &searcher, QUERY, &broken, 5);
    let inner = searcher.search(query.as_ref(), &collector).unwrap();
    match inner {
        Err(SearchError::Load { address, source }) => {
            assert!(address.contains('/'), "{address}");
            assert!(source.to_string().contains("store is gone"));
        }
        other => panic!("expected a load error, got {other:?}"),
    }
    let failing = Cascade::of(|_q: &str, _t: &[&str]| Err::<Vec<f32>, _>("model fell over"));
    let collector = failing.collector(TopDocs::with_limit(10), &searcher, QUERY, &text, 5);
    let inner = searcher.search(query.as_ref(), &collector).unwrap();
    assert!(
        matches!(inner, Err(SearchError::Rerank { .. })),
        "{inner:?}"
    );
    // Fields that cannot give text are refused up front, by name.
    let schema = news.index.schema();
    for (field, why) in [("nope", "no such field"), ("paragraph", "not a text field")] {
        let err = StoredText::new(&schema, [field]).unwrap_err();
        assert!(
            err.to_string().contains(field) && err.to_string().contains(why),
            "{err}"
        );
    }
    // top_n 0 is an option error, inside the collector's result too.
    let collector = cascade.collector(TopDocs::with_limit(10), &searcher, QUERY, &text, 0);
    assert!(matches!(
        searcher.search(query.as_ref(), &collector).unwrap(),
        Err(SearchError::InvalidOption {
            option: "top_n",
            ..
        })
    ));
}
