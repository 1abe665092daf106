//! SciFact: indexing, BM25 search and NDCG@10 of the first stage.

mod common;

use tantivy_rerank_search::{
    Analyzer, ArticleIndex, ImportOptions, QueryFields, QueryOptions, SchemaOptions,
};

fn build(dir: &std::path::Path, schema: &SchemaOptions) -> ArticleIndex {
    let data = common::dataset("scifact");
    let index = ArticleIndex::create(dir, schema).expect("create index");
    let report = index
        .import_beir(
            data.join("corpus.jsonl"),
            &ImportOptions {
                progress: false,
                ..Default::default()
            },
        )
        .expect("import scifact");
    assert_eq!(report.docs_indexed, 5183);
    assert_eq!(report.docs_replaced, 0);
    assert_eq!(index.num_docs(), 5183);
    index
}

/// The default configuration reaches the published BM25 quality on SciFact test.
#[test]
fn scifact_default_bm25_ndcg10() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let index = build(tmp.path(), &SchemaOptions::default());
    let data = common::dataset("scifact");

    let hits = common::bm25(
        &index,
        "microstructural development of human newborn cerebral white matter",
        5,
    );
    assert_eq!(hits[0].doc.id, "4983");
    assert!(hits
        .windows(2)
        .all(|w| w[0].first_stage_score >= w[1].first_stage_score));
    assert!(common::bm25(&index, "   ", 5).is_empty());
    // Syntax errors never fail.
    assert!(index
        .search(
            "title:(( \"unbalanced AND OR -",
            &tantivy_rerank_search::SearchOptions::default().top_n(5)
        )
        .is_ok());

    // Reopen from disk: same results.
    drop(index);
    let index = ArticleIndex::open(tmp.path()).expect("reopen");
    let ndcg = common::bm25_ndcg10(&index, &data, "test");
    eprintln!("SciFact test NDCG@10 (default config): {ndcg:.4}");
    assert!(ndcg >= 0.66, "NDCG@10 {ndcg:.4} < 0.66");
}

/// Every configuration we compared, printed (run with `--nocapture` to see the table).
#[test]
fn scifact_bm25_configurations() {
    let data = common::dataset("scifact");
    let mut rows = Vec::new();
    for analyzer in [Analyzer::EnStem, Analyzer::EnStemStop] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut index = build(
            tmp.path(),
            &SchemaOptions {
                analyzer,
                combined_field: true,
            },
        );
        let configs = [
            ("combined field", QueryFields::Combined, None),
            ("combined + title^0.5", QueryFields::Combined, Some(0.5)),
            ("combined + title^1", QueryFields::Combined, Some(1.0)),
            ("title+body, title^0.25", QueryFields::Separate, Some(0.25)),
            ("title+body, title^0.5", QueryFields::Separate, Some(0.5)),
            ("title+body, title^0.75", QueryFields::Separate, Some(0.75)),
            ("title+body, title^1", QueryFields::Separate, Some(1.0)),
            ("title+body, title^2", QueryFields::Separate, Some(2.0)),
            ("body only", QueryFields::Separate, Some(0.0)),
        ];
        for (name, fields, title_boost) in configs {
            index
                .set_query_options(QueryOptions {
                    fields,
                    title_boost,
                })
                .unwrap();
            let ndcg = common::bm25_ndcg10(&index, &data, "test");
            rows.push(format!("{:<14} {:<24} {ndcg:.4}", analyzer.name(), name));
            assert!(ndcg > 0.5, "{name}: {ndcg}");
        }
    }
    eprintln!("SciFact test NDCG@10 (BM25 top-100)\n{}", rows.join("\n"));
}
