//! Reranked search over the long SQuAD articles: closure, fixture cross-encoder, real
//! bi-encoder, concurrency and reranker failures.

mod common;

use tantivy_rerank_search::{
    Aggregation, ArticleIndex, Cascade, Combination, ImportOptions, PassageOptions, Reranker,
    SchemaOptions, SearchError, SearchOptions, SearchResults, Stage,
};

/// One stage of `reranker` over the best `window` candidates.
fn stage<'a>(
    reranker: impl Reranker + 'a,
    window: usize,
    passages: Option<PassageOptions>,
) -> Stage<'a> {
    Stage::new(reranker).window(window).passages(passages)
}

/// `index.search` reranked by `cascade`, `top_n` hits.
fn reranked(
    index: &ArticleIndex,
    query: &str,
    cascade: &Cascade<'_>,
    top_n: usize,
) -> Result<SearchResults, SearchError> {
    index.search(
        query,
        &SearchOptions::default().top_n(top_n).rerank(cascade),
    )
}

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
fn check_results(r: &SearchResults, window: usize, top_n: usize) {
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
        assert!(
            s.is_finite() && h.rerank_score.unwrap().is_finite() && h.first_stage_score.is_finite()
        );
        assert!(h.first_stage_rank >= 1 && h.first_stage_rank <= window);
        assert!(!h.doc.id.is_empty() && !h.doc.body.is_empty());
    }
    assert!(
        reranked.windows(2).all(|w| w[0].score >= w[1].score),
        "reranked part sorted by final score"
    );
    assert!(tail
        .windows(2)
        .all(|w| w[0].first_stage_rank < w[1].first_stage_rank
            && w[0].first_stage_score >= w[1].first_stage_score));
    assert!(tail.iter().all(|h| h.first_stage_rank > window));
    let mut ids: Vec<&str> = r.hits.iter().map(|h| h.doc.id.as_str()).collect();
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
    let overlap = |q: &str, texts: &[&str]| {
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
    };
    let popts = Some(PassageOptions {
        length: 120,
        stride: 60,
        max_passages: 10,
    });
    let cascade = Cascade::new(stage(overlap, 5, popts));
    let r = reranked(&index, query, &cascade, 8).unwrap();
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
    let tail: Vec<usize> = r.hits[5..].iter().map(|h| h.first_stage_rank).collect();
    assert_eq!(tail, [6, 7, 8]);
    // Timings serialise as milliseconds.
    let json = serde_json::to_value(r.timings).unwrap();
    assert!(json["score"].as_f64().is_some());

    for (combination, aggregation) in [
        (Combination::Linear { alpha: 0.5 }, Aggregation::Mean),
        (Combination::rrf(), Aggregation::First),
    ] {
        let c = Cascade::new(stage(overlap, 5, popts).aggregation(aggregation))
            .combination(combination);
        check_results(&reranked(&index, query, &c, 8).unwrap(), 5, 8);
    }
    // Passage splitting off: whole documents, no passage reported.
    let whole = Cascade::new(stage(overlap, 5, None));
    let r = reranked(&index, query, &whole, 8).unwrap();
    assert_eq!(r.passages_scored, 5);
    assert!(r.hits.iter().all(|h| h.passage.is_none()));
    // Empty query: no hits, no reranker call.
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(reranked(&index, "  ", &cascade, 8).unwrap().hits.is_empty());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before);
    // Invalid options are errors naming the option.
    let bad_alpha =
        Cascade::new(stage(overlap, 5, popts)).combination(Combination::Linear { alpha: 2.0 });
    let zero_window = Cascade::new(stage(overlap, 0, popts));
    for (result, name) in [
        (reranked(&index, query, &bad_alpha, 8), "combination.alpha"),
        (reranked(&index, query, &zero_window, 8), "window"),
        (reranked(&index, query, &cascade, 0), "top_n"),
    ] {
        match result {
            Err(SearchError::InvalidOption { option, .. }) => assert_eq!(option, name),
            other => panic!("{name}: expected InvalidOption, got {other:?}"),
        }
    }
    // BM25 only: the first-stage order, no stage scores.
    let bm25 = index
        .search(query, &SearchOptions::default().top_n(3))
        .unwrap();
    assert_eq!(bm25.hits.len(), 3);
    assert!(bm25
        .hits
        .iter()
        .zip(1..)
        .all(|(h, rank)| h.first_stage_rank == rank
            && h.score.is_none()
            && h.stage_scores.is_empty()));
}

#[test]
fn bad_reranker_output_fails_the_query() {
    let tmp = tempfile::tempdir().unwrap();
    let index = squad_index(tmp.path());
    let run = |r: &dyn Reranker| {
        reranked(
            &index,
            "Super Bowl",
            &Cascade::new(Stage::borrowed(r).window(3).passages(None)),
            10,
        )
    };
    let nan = |_q: &str, t: &[&str]| {
        Ok::<_, std::convert::Infallible>(
            (0..t.len())
                .map(|i| if i == 1 { f32::NAN } else { 1.0 })
                .collect(),
        )
    };
    let err = run(&nan).unwrap_err();
    assert!(matches!(err, SearchError::NonFiniteScore { .. }), "{err}");
    let inf =
        |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(vec![f32::INFINITY; t.len()]);
    assert!(matches!(run(&inf), Err(SearchError::NonFiniteScore { .. })));
    let short = |_q: &str, _t: &[&str]| Ok::<_, std::convert::Infallible>(vec![0.5]);
    let err = run(&short).unwrap_err();
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
    let failing = |_q: &str, _t: &[&str]| Err::<Vec<f32>, _>("model exploded");
    let err = run(&failing).unwrap_err();
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
    let reranker = |q: &str, texts: &[&str]| {
        Ok::<_, std::convert::Infallible>(
            texts
                .iter()
                .map(|t| {
                    q.split_whitespace().filter(|w| t.contains(w)).count() as f32
                        + t.len() as f32 * 1e-6
                })
                .collect(),
        )
    };
    let cascade = Cascade::new(Stage::new(reranker).window(10));
    let run = |q: &str| {
        let r = reranked(&index, q, &cascade, 15).unwrap();
        let bm25 = index
            .search(q, &SearchOptions::default().top_n(20))
            .unwrap();
        (
            r.hits
                .iter()
                .map(|h| {
                    (
                        h.doc.id.clone(),
                        h.score.map(f32::to_bits),
                        h.first_stage_score.to_bits(),
                    )
                })
                .collect::<Vec<_>>(),
            bm25.hits
                .iter()
                .map(|c| (c.doc.id.clone(), c.first_stage_score.to_bits()))
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
    use tantivy_rerank_encoders::{
        BiEncoder, BiEncoderOptions, CrossEncoder, CrossEncoderOptions, DeviceSpec,
    };
    use tantivy_rerank_search::{BoxError, ModelTokenizer, PassageTokenizer, RerankError};

    /// Records what it is asked to score; `whole` makes its tokenizer ignore `need`, so
    /// every document is tokenised in full before it is cut into passages.
    struct Recording<'a> {
        model: &'a CrossEncoder,
        whole: bool,
        seen: std::sync::Mutex<Vec<String>>,
    }

    impl PassageTokenizer for Recording<'_> {
        fn token_spans(&self, text: &str, need: usize) -> Result<Vec<(usize, usize)>, BoxError> {
            let tokenizer = self.model.tokenizer();
            Ok(match self.whole {
                true => tokenizer.token_spans(text)?,
                false => tokenizer.token_spans_head(text, need)?,
            })
        }
        fn count_tokens(&self, text: &str) -> Result<usize, BoxError> {
            PassageTokenizer::count_tokens(self.model.tokenizer(), text)
        }
        fn special_tokens(&self, pair: bool) -> usize {
            self.model.tokenizer().special_tokens(pair)
        }
        fn max_tokens(&self) -> usize {
            PassageTokenizer::max_tokens(self.model.tokenizer())
        }
    }

    impl Reranker for Recording<'_> {
        fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
            self.seen
                .lock()
                .unwrap()
                .extend(texts.iter().map(|t| t.to_string()));
            self.model.rerank(query, texts)
        }
        fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
            let input = self.model.tokenizer_input();
            Some(ModelTokenizer {
                tokenizer: self,
                input,
            })
        }
    }

    trait Input {
        fn tokenizer_input(&self) -> tantivy_rerank_search::ModelInput;
    }

    impl Input for CrossEncoder {
        fn tokenizer_input(&self) -> tantivy_rerank_search::ModelInput {
            Reranker::tokenizer(self).expect("a tokenizer").input
        }
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../encoders/tests/fixtures")
            .join(name)
    }

    fn cpu() -> CrossEncoderOptions {
        CrossEncoderOptions::default().device(DeviceSpec::Cpu)
    }

    #[test]
    fn long_articles_tokenised_only_as_far_as_their_passages_give_the_same_passages() {
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        for name in ["modernbert-1label-mean", "bert-2label-vocab"] {
            let model = CrossEncoder::from_dir(fixture(name), cpu()).expect("fixture");
            let run = |whole: bool| {
                let r = Recording {
                    model: &model,
                    whole,
                    seen: Default::default(),
                };
                let popts = Some(PassageOptions {
                    length: 40,
                    stride: 20,
                    max_passages: 6,
                });
                let cascade = Cascade::new(Stage::borrowed(&r).window(8).passages(popts));
                let results = reranked(&index, "super bowl champions", &cascade, 8).unwrap();
                drop(cascade);
                (r.seen.into_inner().unwrap(), results.hits)
            };
            let (head, whole) = (run(false), run(true));
            assert_eq!(head.0.len(), 8 * 6, "{name}: every article has 6 passages");
            assert_eq!(head, whole, "{name}");
        }
    }

    #[test]
    fn fixture_cross_encoder_reranks() {
        let model = CrossEncoder::from_dir(fixture("bert-3label"), cpu()).expect("fixture");
        let tok = Reranker::tokenizer(&model).expect("the model has a tokenizer");
        assert_eq!(tok.tokenizer.max_tokens(), 64);
        assert!(tok.tokenizer.count_tokens("super bowl").unwrap() > 0);
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        let popts = Some(PassageOptions {
            length: 60,
            stride: 60,
            max_passages: 6,
        });
        let cascade = Cascade::new(Stage::borrowed(&model).window(6).passages(popts));
        let query = "Which team won Super Bowl 50?";
        let r = reranked(&index, query, &cascade, 8).unwrap();
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
        let query_tokens = model.tokenizer().count_tokens(query).unwrap();
        for h in r.hits.iter().filter_map(|h| h.passage.as_ref()) {
            let n = model.tokenizer().count_tokens(&h.text).unwrap();
            assert!(
                n + query_tokens + 3 <= 64,
                "{n} + {query_tokens} tokens: {:?}",
                h.text
            );
        }
        // Same input, same scores (deterministic CPU forward).
        let again = reranked(&index, query, &cascade, 8).unwrap();
        assert_eq!(r.hits, again.hits);
    }

    /// Through the inference queue the search gives the model's own scores; a search whose
    /// token is cancelled while it waits on the queue fails as cancelled, and a deadline
    /// already passed stops it before any pair is scored.
    #[test]
    fn queued_reranker_scores_like_the_model_and_stops_when_cancelled() {
        use tantivy_rerank_encoders::{InferenceQueue, QueueOptions};
        use tantivy_rerank_search::{CancelToken, QueuedReranker};
        let model = std::sync::Arc::new(
            CrossEncoder::from_dir(fixture("bert-3label"), cpu()).expect("fixture"),
        );
        let queue = InferenceQueue::start(model.clone(), QueueOptions::default()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        let query = "Which team won Super Bowl 50?";
        let direct = Cascade::new(Stage::borrowed(model.as_ref()).window(6));
        let queued = Cascade::new(Stage::new(QueuedReranker::new(queue.clone(), None)).window(6));
        let want = reranked(&index, query, &direct, 6).unwrap();
        let got = reranked(&index, query, &queued, 6).unwrap();
        assert_eq!(want.hits, got.hits);

        let token = CancelToken::new();
        let stage = QueuedReranker::new(queue.clone(), Some(token.clone()));
        token.cancel();
        let err = stage.rerank(query, &["a", "b"]).unwrap_err();
        assert!(matches!(err, RerankError::Cancelled), "{err}");
        let past = CancelToken::with_deadline(std::time::Instant::now());
        let cascade =
            Cascade::new(Stage::new(QueuedReranker::new(queue, Some(past.clone()))).window(6));
        let err = index
            .search(
                query,
                &SearchOptions::default()
                    .top_n(6)
                    .rerank(&cascade)
                    .cancel(&past),
            )
            .unwrap_err();
        assert!(matches!(err, SearchError::Cancelled { .. }), "{err}");
    }

    #[test]
    fn passage_budget_leaves_room_for_the_query_only_when_the_model_reads_it() {
        let dir = fixture("bert-3label");
        let cross = CrossEncoder::from_dir(&dir, cpu()).expect("fixture");
        let bi = BiEncoder::from_dir(&dir, BiEncoderOptions::default().device(DeviceSpec::Cpu))
            .expect("fixture");
        let query = "which team won super bowl 50";
        let q = cross.tokenizer().count_tokens(query).unwrap();
        assert!(q > 3, "{q}");
        // The special tokens come from the tokenizer: 3 for a pair, 2 for a text alone.
        assert_eq!(cross.tokenizer().special_tokens(true), 3);
        assert_eq!(cross.tokenizer().special_tokens(false), 2);
        let budget = |r: &dyn Reranker, query: &str| {
            r.tokenizer()
                .expect("tokenizer")
                .passage_budget(query)
                .unwrap()
        };
        // [CLS] query [SEP] passage [SEP] within 64 tokens.
        assert_eq!(budget(&cross, query), 64 - q - 3);
        // The bi-encoder embeds [CLS] passage [SEP] alone, whatever the query.
        assert_eq!(budget(&bi, query), 64 - 2);
        assert_eq!(budget(&bi, &query.repeat(20)), 64 - 2);
    }

    #[test]
    fn a_cascade_of_two_models_and_a_budget_run_on_the_article_index() {
        let small = CrossEncoder::from_dir(fixture("bert-2label-vocab"), cpu()).expect("fixture");
        let large = CrossEncoder::from_dir(fixture("bert-3label"), cpu()).expect("fixture");
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        let query = "Which team won Super Bowl 50?";
        let cascade = Cascade::new(Stage::borrowed(&small).window(10).name("small"))
            .then(Stage::borrowed(&large).window(3).name("large"));
        let r = reranked(&index, query, &cascade, 12).unwrap();
        assert_eq!(r.hits.len(), 12);
        assert_eq!(r.stages.len(), 2);
        assert_eq!((r.stages[0].docs, r.stages[0].docs_scored), (10, 10));
        assert_eq!((r.stages[1].docs, r.stages[1].docs_scored), (3, 3));
        // The large model's three, then the small model's other seven, then BM25's tail.
        assert!(r.hits[..3]
            .iter()
            .all(|h| h.stage_scores.iter().all(Option::is_some)));
        assert!(r.hits[3..10]
            .iter()
            .all(|h| h.stage_scores[0].is_some() && h.stage_scores[1].is_none()));
        assert!(r.hits[10..].iter().all(|h| h.score.is_none()));
        // The large model saw the small model's best three: they are the top three of a
        // single-stage search with the small model alone.
        let alone = reranked(
            &index,
            query,
            &Cascade::new(Stage::borrowed(&small).window(10)),
            10,
        )
        .unwrap();
        let mut top3: Vec<&str> = r.hits[..3].iter().map(|h| h.doc.id.as_str()).collect();
        let mut small3: Vec<&str> = alone.hits[..3].iter().map(|h| h.doc.id.as_str()).collect();
        top3.sort();
        small3.sort();
        assert_eq!(top3, small3);
        // With a budget already spent by the first stage's cost estimate, the second model is
        // cut short but every candidate still comes back.
        let budgeted = Cascade::new(Stage::borrowed(&small).window(10))
            .then(Stage::borrowed(&large).window(10))
            .budget(std::time::Duration::from_nanos(1));
        let r = reranked(&index, query, &budgeted, 12).unwrap();
        assert!(r.budget_exhausted);
        assert_eq!(r.hits.len(), 12);
        assert_eq!(r.stages[0].docs_scored, 0);
    }

    #[test]
    fn minilm_bi_encoder_reranks() {
        let dir = common::shared().join("models/all-MiniLM-L6-v2");
        assert!(
            dir.join("model.safetensors").is_file(),
            "{} is missing",
            dir.display()
        );
        let model = BiEncoder::from_dir(&dir, BiEncoderOptions::default().device(DeviceSpec::Cpu))
            .expect("MiniLM");
        let tmp = tempfile::tempdir().unwrap();
        let index = squad_index(tmp.path());
        let popts = Some(PassageOptions {
            length: 150,
            stride: 150,
            max_passages: 4,
        });
        let cascade = Cascade::new(Stage::new(model).window(4).passages(popts));
        let r = reranked(
            &index,
            "Which NFL team represented the AFC at Super Bowl 50?",
            &cascade,
            6,
        )
        .unwrap();
        check_results(&r, 4, 6);
        assert_eq!(
            r.hits[0].doc.id, "squad-a00",
            "the Super Bowl 50 article wins: {:?}",
            r.hits[0].doc.title
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
