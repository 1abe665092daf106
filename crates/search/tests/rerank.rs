//! Reranked search over the long SQuAD articles: closure, fixture cross-encoder, real
//! bi-encoder, concurrency and reranker failures.

mod common;

use tantivy_rerank_search::{
    Aggregation, ArticleIndex, Combination, FnReranker, ImportOptions, PassageOptions,
    RerankOptions, RerankResults, SchemaOptions, SearchError,
};

fn squad_index(dir: &std::path::Path) -> ArticleIndex {
    let data = common::dataset("squad-articles");
    let index = ArticleIndex::create(dir, &SchemaOptions::default()).expect("create");
    let r = index
        .import_beir(
            data.join("corpus.jsonl"),
            &ImportOptions {
                progress: false,
                ..Default::default()
            },
        )
        .expect("import squad-articles");
    assert_eq!(r.docs_indexed, 48);
    index
}

/// Structural checks every reranked result must pass.
fn check_results(r: &RerankResults, window: usize, top_n: usize) {
    assert!(r.hits.len() <= top_n);
    let reranked: Vec<_> = r.hits.iter().filter(|h| h.rerank_score.is_some()).collect();
    let tail: Vec<_> = r.hits.iter().filter(|h| h.rerank_score.is_none()).collect();
    assert!(reranked.len() <= window);
    // Reranked first, then the BM25 tail.
    assert!(r
        .hits
        .iter()
        .skip(reranked.len())
        .all(|h| h.rerank_score.is_none()));
    for h in &reranked {
        let s = h.score.expect("final score");
        assert!(s.is_finite() && h.rerank_score.unwrap().is_finite() && h.bm25_score.is_finite());
        assert!(h.bm25_rank >= 1 && h.bm25_rank <= window);
        assert!(!h.id.is_empty() && !h.body.is_empty());
    }
    assert!(
        reranked.windows(2).all(|w| w[0].score >= w[1].score),
        "reranked part sorted by final score"
    );
    assert!(tail
        .windows(2)
        .all(|w| w[0].bm25_rank < w[1].bm25_rank && w[0].bm25_score >= w[1].bm25_score));
    assert!(tail.iter().all(|h| h.bm25_rank > window));
    let mut ids: Vec<&str> = r.hits.iter().map(|h| h.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), r.hits.len(), "no duplicate hits");
}

#[test]
fn closure_reranker_with_passages_and_fusion() {
    let tmp = tempfile::tempdir().unwrap();
    let index = squad_index(tmp.path());
    let query = "Which NFL team represented the AFC at Super Bowl 50?";
    // Score passages by how many query words they contain.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let overlap = FnReranker::new(|q: &str, texts: &[&str]| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let words: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
        Ok::<_, std::convert::Infallible>(
            texts
                .iter()
                .map(|t| {
                    let t = t.to_lowercase();
                    words.iter().filter(|w| t.contains(w.as_str())).count() as f32
                })
                .collect(),
        )
    });
    let opts = RerankOptions {
        window: 5,
        top_n: 8,
        passages: Some(PassageOptions {
            length: 120,
            stride: 60,
            max_passages: 10,
        }),
        ..Default::default()
    };
    let r = index.search_reranked(query, &overlap, &opts).unwrap();
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one reranker call per query"
    );
    assert_eq!(r.hits.len(), 8);
    check_results(&r, 5, 8);
    assert_eq!(
        r.hits.iter().filter(|h| h.rerank_score.is_some()).count(),
        5
    );
    assert!(
        r.passages_scored > 5 && r.passages_scored <= 50,
        "{}",
        r.passages_scored
    );
    let best = &r.hits[0];
    let p = best.passage.as_ref().expect("passage reported");
    assert!(p.index < p.of && p.of <= 10 && !p.text.is_empty());
    assert_eq!(
        Some(p.score),
        best.rerank_score,
        "max aggregation reports the winning passage"
    );
    // The BM25 tail keeps BM25 order and ranks 6..8.
    let tail: Vec<usize> = r.hits[5..].iter().map(|h| h.bm25_rank).collect();
    assert_eq!(tail, [6, 7, 8]);
    // Timings serialise as milliseconds.
    let json = serde_json::to_value(r.timings).unwrap();
    assert!(json["score"].as_f64().is_some());

    for (combination, aggregation) in [
        (Combination::Linear { alpha: 0.5 }, Aggregation::Mean),
        (Combination::rrf(), Aggregation::First),
    ] {
        let o = RerankOptions {
            combination,
            aggregation,
            ..opts.clone()
        };
        check_results(&index.search_reranked(query, &overlap, &o).unwrap(), 5, 8);
    }
    // Passage splitting off: whole documents, no passage reported.
    let o = RerankOptions {
        passages: None,
        ..opts.clone()
    };
    let r = index.search_reranked(query, &overlap, &o).unwrap();
    assert_eq!(r.passages_scored, 5);
    assert!(r.hits.iter().all(|h| h.passage.is_none()));
    // Empty query: no hits, no reranker call.
    assert!(index
        .search_reranked("  ", &overlap, &opts)
        .unwrap()
        .hits
        .is_empty());
    // Invalid options are errors naming the option.
    for (o, name) in [
        (
            RerankOptions {
                combination: Combination::Linear { alpha: 2.0 },
                ..opts.clone()
            },
            "combination.alpha",
        ),
        (
            RerankOptions {
                window: 0,
                ..opts.clone()
            },
            "window",
        ),
        (
            RerankOptions {
                top_n: 0,
                ..opts.clone()
            },
            "top_n",
        ),
    ] {
        match index.search_reranked(query, &overlap, &o) {
            Err(SearchError::InvalidOption { option, .. }) => assert_eq!(option, name),
            other => panic!("{name}: expected InvalidOption, got {other:?}"),
        }
    }
    // Retrieving 0 candidates gives none.
    let searcher = index.searcher();
    let q = index.parse_query(query).expect("query");
    assert!(index.retrieve(&searcher, q.as_ref(), 0).unwrap().is_empty());
}

#[test]
fn bad_reranker_output_fails_the_query() {
    let tmp = tempfile::tempdir().unwrap();
    let index = squad_index(tmp.path());
    let opts = RerankOptions {
        window: 3,
        passages: None,
        ..Default::default()
    };
    let nan = FnReranker::new(|_q: &str, t: &[&str]| {
        Ok::<_, std::convert::Infallible>(
            (0..t.len())
                .map(|i| if i == 1 { f32::NAN } else { 1.0 })
                .collect(),
        )
    });
    let err = index
        .search_reranked("Super Bowl", &nan, &opts)
        .unwrap_err();
    assert!(matches!(err, SearchError::NonFiniteScore { .. }), "{err}");
    let inf = FnReranker::new(|_q: &str, t: &[&str]| {
        Ok::<_, std::convert::Infallible>(vec![f32::INFINITY; t.len()])
    });
    assert!(matches!(
        index.search_reranked("Super Bowl", &inf, &opts),
        Err(SearchError::NonFiniteScore { .. })
    ));
    let short =
        FnReranker::new(|_q: &str, _t: &[&str]| Ok::<_, std::convert::Infallible>(vec![0.5]));
    let err = index
        .search_reranked("Super Bowl", &short, &opts)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SearchError::ScoreCountMismatch {
                expected: 3,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
    let failing = FnReranker::new(|_q: &str, _t: &[&str]| Err::<Vec<f32>, _>("model exploded"));
    let err = index
        .search_reranked("Super Bowl", &failing, &opts)
        .unwrap_err();
    assert!(matches!(err, SearchError::Rerank { .. }));
    assert!(format!("{err}").contains("model exploded"), "{err}");
}

#[test]
fn concurrent_searches_equal_serial() {
    let tmp = tempfile::tempdir().unwrap();
    let index = squad_index(tmp.path());
    let data = common::dataset("squad-articles");
    let mut queries: Vec<String> = common::queries(&data).into_values().collect();
    queries.sort();
    queries.truncate(64);
    let reranker = FnReranker::new(|q: &str, texts: &[&str]| {
        Ok::<_, std::convert::Infallible>(
            texts
                .iter()
                .map(|t| {
                    q.split_whitespace().filter(|w| t.contains(w)).count() as f32
                        + t.len() as f32 * 1e-6
                })
                .collect(),
        )
    });
    let opts = RerankOptions {
        window: 10,
        top_n: 15,
        ..Default::default()
    };
    let run = |q: &str| {
        let r = index.search_reranked(q, &reranker, &opts).unwrap();
        let bm25 = index.search_bm25(q, 20).unwrap();
        (
            r.hits
                .iter()
                .map(|h| {
                    (
                        h.id.clone(),
                        h.score.map(f32::to_bits),
                        h.bm25_score.to_bits(),
                    )
                })
                .collect::<Vec<_>>(),
            bm25.iter()
                .map(|c| (c.id.clone(), c.score.to_bits()))
                .collect::<Vec<_>>(),
        )
    };
    let serial: Vec<_> = queries.iter().map(|q| run(q)).collect();
    let parallel: Vec<Vec<(usize, _)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let queries = &queries;
                let run = &run;
                s.spawn(move || {
                    queries
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % 8 == t)
                        .map(|(i, q)| (i, run(q)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("search thread"))
            .collect()
    });
    let mut n = 0;
    for (i, result) in parallel.into_iter().flatten() {
        assert_eq!(
            result, serial[i],
            "query {i} differs between threads and serial"
        );
        n += 1;
    }
    assert_eq!(n, queries.len());
}

#[cfg(feature = "encoders")]
mod encoders {
    use super::*;
    use tantivy_rerank_encoders::{BiEncoder, CrossEncoder, CrossEncoderOptions, DeviceSpec};
    use tantivy_rerank_search::Reranker;

    /// Records what it is asked to score; `whole` hides the model's `token_spans_head`, so
    /// every document is tokenised in full before it is cut into passages.
    struct Recording<'a> {
        model: &'a CrossEncoder,
        whole: bool,
        seen: std::sync::Mutex<Vec<String>>,
    }

    impl Reranker for Recording<'_> {
        fn rerank(
            &self,
            query: &str,
            texts: &[&str],
        ) -> Result<Vec<f32>, tantivy_rerank_search::RerankError> {
            self.seen
                .lock()
                .unwrap()
                .extend(texts.iter().map(|t| t.to_string()));
            self.model.rerank(query, texts)
        }
        fn max_tokens(&self) -> Option<usize> {
            self.model.max_tokens()
        }
        fn count_tokens(&self, text: &str) -> Option<usize> {
            self.model.count_tokens(text)
        }
        fn token_spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
            self.model.token_spans(text)
        }
        fn token_spans_head(&self, text: &str, need: usize) -> Option<Vec<(usize, usize)>> {
            match self.whole {
                true => self.model.token_spans(text),
                false => self.model.token_spans_head(text, need),
            }
        }
    }

    #[test]
    fn long_articles_tokenised_only_as_far_as_their_passages_give_the_same_passages() {
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        for fixture in ["modernbert-1label-mean", "bert-2label-vocab"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../encoders/tests/fixtures")
                .join(fixture);
            let options = CrossEncoderOptions::default().device(DeviceSpec::Cpu);
            let model = CrossEncoder::from_dir(&dir, options).expect("fixture");
            let run = |whole: bool| {
                let r = Recording {
                    model: &model,
                    whole,
                    seen: Default::default(),
                };
                let opts = RerankOptions {
                    window: 8,
                    top_n: 8,
                    passages: Some(PassageOptions {
                        length: 40,
                        stride: 20,
                        max_passages: 6,
                    }),
                    ..Default::default()
                };
                let results = index
                    .search_reranked("super bowl champions", &r, &opts)
                    .unwrap();
                (r.seen.into_inner().unwrap(), results.hits)
            };
            let (head, whole) = (run(false), run(true));
            assert_eq!(
                head.0.len(),
                8 * 6,
                "{fixture}: every article has 6 passages"
            );
            assert_eq!(head, whole, "{fixture}");
        }
    }

    #[test]
    fn fixture_cross_encoder_reranks() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../encoders/tests/fixtures/bert-3label");
        let model =
            CrossEncoder::from_dir(&dir, CrossEncoderOptions::default().device(DeviceSpec::Cpu))
                .expect("fixture");
        assert!(model.max_tokens().is_some());
        assert!(model.count_tokens("super bowl").is_some());
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        let opts = RerankOptions {
            window: 6,
            top_n: 8,
            passages: Some(PassageOptions {
                length: 60,
                stride: 60,
                max_passages: 6,
            }),
            ..Default::default()
        };
        let r = index
            .search_reranked("Which team won Super Bowl 50?", &model, &opts)
            .unwrap();
        check_results(&r, 6, 8);
        assert_eq!(r.hits.len(), 8);
        assert!(r.hits[0].passage.is_some());
        // Passages were fitted to the 64-token model: never more than 6 per document.
        assert!(
            r.passages_scored <= 36 && r.passages_scored >= 6,
            "{}",
            r.passages_scored
        );
        // Passages are cut by the model's tokens and fit next to the query: the winning
        // passage plus the query and 3 special tokens is within the 64-token limit, so the
        // model never truncated it.
        let query_tokens = model.count_tokens("Which team won Super Bowl 50?").unwrap();
        for h in r.hits.iter().filter_map(|h| h.passage.as_ref()) {
            let n = model.count_tokens(&h.text).unwrap();
            assert!(
                n + query_tokens + 3 <= 64,
                "{n} + {query_tokens} tokens: {:?}",
                h.text
            );
        }
        // Same input, same scores (deterministic CPU forward).
        let again = index
            .search_reranked("Which team won Super Bowl 50?", &model, &opts)
            .unwrap();
        assert_eq!(r.hits, again.hits);
    }

    #[test]
    fn passage_budget_leaves_room_for_the_query_only_when_the_model_reads_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../encoders/tests/fixtures/bert-3label");
        let options = || CrossEncoderOptions::default().device(DeviceSpec::Cpu);
        let cross = CrossEncoder::from_dir(&dir, options()).expect("fixture");
        let bi = BiEncoder::from_dir(&dir, options()).expect("fixture");
        let query = "which team won super bowl 50";
        let q = cross.count_tokens(query).unwrap();
        assert!(q > 3, "{q}");
        // [CLS] query [SEP] passage [SEP] within 64 tokens.
        assert_eq!(cross.passage_budget(query), Some(64 - q - 3));
        // The bi-encoder embeds [CLS] passage [SEP] alone, whatever the query.
        assert_eq!(bi.passage_budget(query), Some(64 - 2));
        assert_eq!(bi.passage_budget(&query.repeat(20)), Some(64 - 2));
    }

    #[test]
    fn minilm_bi_encoder_reranks() {
        let dir = common::shared().join("models/all-MiniLM-L6-v2");
        assert!(
            dir.join("model.safetensors").is_file(),
            "{} is missing",
            dir.display()
        );
        let model =
            BiEncoder::from_dir(&dir, CrossEncoderOptions::default().device(DeviceSpec::Cpu))
                .expect("MiniLM");
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        let opts = RerankOptions {
            window: 4,
            top_n: 6,
            passages: Some(PassageOptions {
                length: 150,
                stride: 150,
                max_passages: 4,
            }),
            ..Default::default()
        };
        let r = index
            .search_reranked(
                "Which NFL team represented the AFC at Super Bowl 50?",
                &model,
                &opts,
            )
            .unwrap();
        check_results(&r, 4, 6);
        assert_eq!(
            r.hits[0].id, "squad-a00",
            "the Super Bowl 50 article wins: {:?}",
            r.hits[0].title
        );
        for h in r.hits.iter().take(4) {
            let s = h.rerank_score.unwrap();
            assert!((-1.0..=1.0).contains(&s), "cosine {s}");
            assert!(h.passage.is_some());
        }
        eprintln!(
            "MiniLM timings: {}",
            serde_json::to_string(&r.timings).unwrap()
        );
    }
}
