//! Hostile queries and index directories: nesting that would overflow the parser's stack,
//! boosts that would make scores infinite, a `.managed.json` pointing outside the index, and
//! corrupted segment files. Each is an error, never a crash or a file touched outside.

mod common;

use std::time::Duration;

use tantivy_rerank_search::{
    Article, ArticleIndex, ImportOptions, SchemaOptions, SearchError, SearchOptions,
    MAX_QUERY_DEPTH,
};

fn quiet() -> ImportOptions {
    ImportOptions {
        progress: false,
        ..Default::default()
    }
}

fn small_index(dir: &std::path::Path) -> ArticleIndex {
    let index = ArticleIndex::create(dir, &SchemaOptions::default()).unwrap();
    let docs = (0..40).map(|i| Article {
        id: format!("d{i}"),
        title: format!("Cats and dogs {i}"),
        body: format!("Cats purr, dogs bark, birds sing {i} times a day."),
    });
    index.import_articles(docs, &quiet()).unwrap();
    index
}

/// Run `f` on a thread with a 2 MiB stack, as a tokio blocking thread or a rayon worker has:
/// a stack overflow there aborts the whole process.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .expect("no panic")
}

#[test]
fn deep_nesting_is_refused_before_the_parser_sees_it() {
    let tmp = tempfile::tempdir().unwrap();
    small_index(tmp.path());
    let path = tmp.path().to_path_buf();
    on_small_stack(move || {
        let index = ArticleIndex::open(&path).unwrap();
        let top = SearchOptions::default();
        for query in [
            format!("{}cats{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}cats", "NOT ".repeat(100_000)),
            format!("{}cats", "-(".repeat(50_000)),
            "(".repeat(1_000_000),
        ] {
            match index.search(&query, &top) {
                Err(SearchError::InvalidQuery { reason }) => {
                    assert!(reason.contains("nests"), "{reason}")
                }
                other => panic!(
                    "expected InvalidQuery, got {:?}",
                    other.map(|r| r.hits.len())
                ),
            }
        }
        // The deepest allowed query still runs on this stack.
        let deepest = format!(
            "{}cats{}",
            "(".repeat(MAX_QUERY_DEPTH),
            ")".repeat(MAX_QUERY_DEPTH)
        );
        let r = index.search(&deepest, &top).unwrap();
        assert!(!r.hits.is_empty());
        let nots = format!("dogs {}cats", "NOT ".repeat(MAX_QUERY_DEPTH));
        assert!(index.search(&nots, &top).is_ok());
    });
}

#[test]
fn boosts_cannot_make_scores_infinite() {
    let tmp = tempfile::tempdir().unwrap();
    let index = small_index(tmp.path());
    let top = SearchOptions::default();
    for query in [
        "cats^1e39".to_string(),
        format!("cats^1{}", "0".repeat(50)),
        "dogs OR cats^3.5e38".into(),
        "(cats dogs)^1e7".into(),
    ] {
        match index.search(&query, &top) {
            Err(SearchError::InvalidQuery { reason }) => {
                assert!(reason.contains("boost"), "{reason}")
            }
            other => panic!(
                "{query}: expected InvalidQuery, got {:?}",
                other.map(|r| r.hits.len())
            ),
        }
    }
    // Ordinary boosts keep finite, ordered scores.
    let r = index.search("cats^2 dogs^0.5", &top).unwrap();
    assert!(r.hits.iter().all(|h| h.first_stage_score.is_finite()));
    assert!(r
        .hits
        .windows(2)
        .all(|w| w[0].first_stage_score >= w[1].first_stage_score));
}

#[test]
fn a_managed_file_list_pointing_outside_the_index_is_refused_and_nothing_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "do not delete").unwrap();
    let dir = tmp.path().join("idx");
    drop(small_index(&dir));
    let managed = dir.join(".managed.json");
    let mut entries: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&managed).unwrap()).unwrap();
    for evil in ["../victim.txt", "/etc/hostname", "sub/../../victim.txt"] {
        let mut e = entries.clone();
        e.push(evil.to_string());
        std::fs::write(&managed, serde_json::to_string(&e).unwrap()).unwrap();
        match ArticleIndex::open(&dir) {
            Err(SearchError::UnsafeIndexFile { entry, .. }) => assert_eq!(entry, evil),
            other => panic!("{evil}: expected UnsafeIndexFile, got {other:?}"),
        }
        match ArticleIndex::open_or_create(&dir, &SchemaOptions::default()) {
            Err(SearchError::UnsafeIndexFile { .. }) => {}
            other => panic!("{evil}: expected UnsafeIndexFile, got {other:?}"),
        }
        assert!(victim.exists(), "{evil}: the file outside was deleted");
    }
    entries.sort();
    std::fs::write(&managed, serde_json::to_string(&entries).unwrap()).unwrap();
    let index = ArticleIndex::open(&dir).expect("a clean list opens");
    index
        .import_articles(
            [Article {
                id: "new".into(),
                title: String::new(),
                body: "new text".into(),
            }],
            &quiet(),
        )
        .unwrap();
    assert!(victim.exists());
}

/// Random byte flips in segment files: every open, search and import returns (an error or a
/// result), and none panics through the library.
#[test]
fn corrupted_segment_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    drop(small_index(&clean));
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&clean)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            !name.starts_with('.') && name != "meta.json"
        })
        .collect();
    assert!(!files.is_empty());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut errors, mut ok) = (0, 0);
    for round in 0..60 {
        let dir = tmp.path().join(format!("broken{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&clean).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        let target = &files[(next() as usize) % files.len()];
        let path = dir.join(target.file_name().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.is_empty() {
            continue;
        }
        for _ in 0..1 + next() % 8 {
            let i = (next() as usize) % bytes.len();
            bytes[i] ^= 1 << (next() % 8);
        }
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let index = ArticleIndex::open(&dir)?;
            index.search("cats dogs", &SearchOptions::default().top_n(40))?;
            index.import_articles(
                [Article {
                    id: "x".into(),
                    title: "t".into(),
                    body: "cats".into(),
                }],
                &quiet(),
            )?;
            Ok::<_, SearchError>(())
        });
        match outcome {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!(
                "round {round}: a panic escaped the library ({})",
                target.display()
            ),
        }
    }
    eprintln!("corrupted indexes: {errors} errors, {ok} unaffected");
    assert!(errors > 0, "some corruption is detected");
    let _ = Duration::ZERO;
}

/// A query of tens of thousands of terms took gigabytes while tantivy built and ran it: it is
/// refused before the parser sees it, naming the cap, and the cap can be raised.
#[test]
fn a_query_of_too_many_terms_is_refused_before_it_is_built() {
    let tmp = tempfile::tempdir().unwrap();
    let index = small_index(tmp.path());
    let words: Vec<String> = (0..60_000).map(|i| format!("w{i}")).collect();
    let huge = words.join(" ");
    let started = std::time::Instant::now();
    match index.search(&huge, &SearchOptions::default()) {
        Err(SearchError::QueryTooLong { terms, max }) => {
            assert_eq!(max, tantivy_rerank_search::DEFAULT_MAX_QUERY_TERMS);
            assert_eq!(terms, max + 1, "counting stops past the cap");
        }
        other => panic!("60,000 terms: {:?}", other.map(|r| r.hits.len())),
    }
    // Refusing costs the cap, not the query (a debug build counts 1,025 tokens in far less).
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = index
        .search(
            &words[..40].join(" "),
            &SearchOptions::default().max_query_terms(39),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at most 39") && err.contains("max_query_terms"),
        "{err}"
    );
    // At the cap, and with the cap raised, the query runs.
    let cats = vec!["cats"; 39].join(" ");
    let options = SearchOptions::default().max_query_terms(39);
    assert_eq!(index.search(&cats, &options).unwrap().hits.len(), 10);
    // Words the analyzer drops (stop words, punctuation) are no terms.
    let padded = format!("cats {}", "the , ; ".repeat(100));
    assert_eq!(
        index
            .search(&padded, &SearchOptions::default().max_query_terms(1))
            .unwrap()
            .hits
            .len(),
        10
    );
}

/// Fuzzy terms and wildcards matched nothing without a word said; now they are refused.
#[test]
fn fuzzy_and_wildcard_syntax_is_refused_not_silently_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let index = small_index(tmp.path());
    for query in ["cats~2", "cat*", "body:*", "\"cat\"*"] {
        match index.search(query, &SearchOptions::default()) {
            Err(SearchError::InvalidQuery { reason }) => {
                assert!(reason.contains("not support"), "{query}: {reason}")
            }
            other => panic!("{query}: {:?}", other.map(|r| r.hits.len())),
        }
    }
    // What the parser does support still runs.
    for query in ["*", "\"cats purr\"~1", "\"cats purr\"*", "do cats purr?"] {
        let hits = index.search(query, &SearchOptions::default()).unwrap().hits;
        assert!(!hits.is_empty(), "{query}");
    }
}

/// A search handed a cancel token stops with a typed error: before anything runs when the
/// token is already cancelled, between reranker calls when it is cancelled meanwhile.
#[test]
fn a_cancelled_search_stops_between_reranker_calls() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tantivy_rerank_search::{CancelToken, Cascade, Stage};
    let tmp = tempfile::tempdir().unwrap();
    let index = small_index(tmp.path());
    let token = CancelToken::new();
    let calls = AtomicUsize::new(0);
    let cancel_on_second = |_q: &str, texts: &[&str]| {
        if calls.fetch_add(1, Ordering::SeqCst) == 1 {
            token.cancel();
        }
        Ok::<_, std::convert::Infallible>(vec![0.0; texts.len()])
    };
    let cascade = Cascade::new(
        Stage::new(cancel_on_second)
            .window(40)
            .passages(None)
            .with_budget_batch(4),
    );
    let options = SearchOptions::default().rerank(&cascade).cancel(&token);
    let err = index.search("cats", &options).unwrap_err();
    assert!(matches!(err, SearchError::Cancelled { .. }), "{err}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "10 batches of 4 without the token"
    );
    // Cancelled before the search: no reranker call at all.
    let err = index.search("cats", &options).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
