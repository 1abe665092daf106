//! Import sources, replacement, bad input and index lifecycle errors.

mod common;

use std::io::Write;

use tantivy_rerank_search::{
    Article, ArticleIndex, Cascade, FieldMapping, ImportOptions, SchemaOptions, SearchError,
    SearchOptions, Stage,
};

fn quiet() -> ImportOptions {
    ImportOptions {
        progress: false,
        ..Default::default()
    }
}

fn write(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::File::create(path).expect("create file");
    f.write_all(bytes).expect("write file");
}

#[test]
fn reimport_replaces_by_id() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("c.jsonl");
    write(
        &corpus,
        br#"{"_id": "1", "title": "apples", "text": "red apples"}
{"_id": "2", "title": "pears", "text": "green pears"}
{"_id": "1", "title": "apples", "text": "yellow apples"}
"#,
    );
    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let r = index.import_beir(&corpus, &quiet()).unwrap();
    assert_eq!((r.docs_indexed, r.docs_replaced), (3, 1));
    assert_eq!(index.num_docs(), 2);
    let hits = common::bm25(&index, "apples", 10);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].doc.body, "yellow apples");

    // Importing the same file again replaces everything: still two documents.
    let r = index.import_beir(&corpus, &quiet()).unwrap();
    assert_eq!((r.docs_indexed, r.docs_replaced), (3, 3));
    assert_eq!(index.num_docs(), 2);
    assert_eq!(common::bm25(&index, "apples", 10).len(), 1);

    // A reopened index sees the same state.
    drop(index);
    let index = ArticleIndex::open(tmp.path().join("idx")).unwrap();
    assert_eq!(index.num_docs(), 2);
}

#[test]
fn malformed_line_is_an_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("bad.jsonl");
    write(&corpus, b"{\"_id\": \"1\", \"text\": \"ok\"}\n\n{\"_id\": \"2\", \"text\": oops}\n[1,2]\n{\"text\": \"no id\"}\n");
    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let err = index.import_beir(&corpus, &quiet()).unwrap_err();
    assert!(
        matches!(err, SearchError::MalformedLine { line: 3, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("bad.jsonl:3"), "{msg}");
    // Nothing was committed.
    assert_eq!(index.num_docs(), 0);

    let r = index
        .import_beir(
            &corpus,
            &ImportOptions {
                skip_bad_lines: true,
                ..quiet()
            },
        )
        .unwrap();
    assert_eq!((r.docs_indexed, r.bad_lines_skipped), (1, 3));
    assert_eq!(index.num_docs(), 1);
}

#[test]
fn generic_jsonl_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("g.jsonl");
    write(
        &corpus,
        b"{\"doc\": 7, \"headline\": \"Moon\", \"content\": \"the moon landing\"}\n",
    );
    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let mapping = FieldMapping {
        id: "doc".into(),
        title: Some("headline".into()),
        body: "content".into(),
    };
    index.import_jsonl(&corpus, &mapping, &quiet()).unwrap();
    let hits = common::bm25(&index, "landing", 3);
    assert_eq!(
        (hits[0].doc.id.as_str(), hits[0].doc.title.as_str()),
        ("7", "Moon")
    );
    let err = index.import_beir(&corpus, &quiet()).unwrap_err();
    assert!(
        err.to_string().contains("g.jsonl:1: missing field `_id`"),
        "{err}"
    );
}

#[test]
fn directory_import_titles_ids_and_non_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    write(
        &docs.join("a.md"),
        b"# Volcano facts\nMagma erupts from volcanoes.\n",
    );
    write(&docs.join("sub/b.txt"), b"Glaciers carve valleys.\n");
    write(&docs.join("latin1.txt"), b"caf\xe9 volcano\n");
    write(&docs.join("ignored.json"), b"{}");
    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let r = index.import_dir(&docs, &quiet()).unwrap();
    assert_eq!((r.docs_indexed, r.non_utf8_files_skipped), (2, 1));
    let hits = common::bm25(&index, "volcano", 5);
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].doc.id.as_str(), hits[0].doc.title.as_str()),
        ("a.md", "Volcano facts")
    );
    let hits = common::bm25(&index, "glacier", 5);
    assert_eq!(
        (hits[0].doc.id.as_str(), hits[0].doc.title.as_str()),
        ("sub/b.txt", "b")
    );
    // A link back to a parent folder is not followed: no loop, no second copy.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&docs, docs.join("sub/loop")).unwrap();
        let index =
            ArticleIndex::create(tmp.path().join("idx2"), &SchemaOptions::default()).unwrap();
        let r = index.import_dir(&docs, &quiet()).unwrap();
        assert_eq!(r.docs_indexed, 2);
    }
}

#[test]
fn ids_tantivy_cannot_hold_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let long = "x".repeat(70_000);
    // From JSONL: the line is named, and --skip-bad-lines may skip it.
    let corpus = tmp.path().join("long.jsonl");
    write(
        &corpus,
        format!("{{\"_id\": \"a\", \"text\": \"ok\"}}\n{{\"_id\": \"{long}\", \"text\": \"t\"}}\n")
            .as_bytes(),
    );
    let err = index.import_beir(&corpus, &quiet()).unwrap_err();
    assert!(
        matches!(err, SearchError::MalformedLine { line: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("70000 bytes long"), "{err}");
    // From the API: empty and over-long ids.
    for (id, expect) in [(String::new(), "it is empty"), (long, "70000 bytes long")] {
        let article = Article {
            id,
            title: String::new(),
            body: "text".into(),
        };
        let err = index.import_articles([article], &quiet()).unwrap_err();
        assert!(matches!(err, SearchError::InvalidId { .. }), "{err:?}");
        assert!(err.to_string().contains(expect), "{err}");
    }
    assert_eq!(index.num_docs(), 0);
}

#[test]
fn open_missing_index_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = ArticleIndex::open(&missing).unwrap_err();
    assert!(matches!(err, SearchError::IndexNotFound { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    // An existing but empty directory holds no index either.
    let err = ArticleIndex::open(tmp.path()).unwrap_err();
    assert!(matches!(err, SearchError::IndexNotFound { .. }));
}

/// The text fields `ArticleIndex` makes (id, title, body), with `field` given `options`
/// instead, or left out for `None`; `all` is added only when it is `field`.
fn schema_with(
    field: &str,
    options: Option<tantivy::schema::TextOptions>,
) -> tantivy::schema::Schema {
    use tantivy::schema::{STORED, STRING, TEXT};
    let mut b = tantivy::schema::Schema::builder();
    let fields = [
        ("id", STRING | STORED),
        ("title", TEXT | STORED),
        ("body", TEXT | STORED),
    ];
    for (name, default) in fields {
        match (name == field, &options) {
            (false, _) => drop(b.add_text_field(name, default)),
            (true, Some(o)) => drop(b.add_text_field(name, o.clone())),
            (true, None) => {}
        }
    }
    if let ("all", Some(o)) = (field, options) {
        b.add_text_field("all", o);
    }
    b.build()
}

#[test]
fn foreign_index_schemas_are_refused_on_open_naming_the_field() {
    use tantivy::schema::{Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, TEXT};
    let numeric_id = {
        let mut b = Schema::builder();
        b.add_u64_field("id", INDEXED | STORED | FAST);
        b.add_text_field("title", TEXT | STORED);
        b.add_text_field("body", TEXT | STORED);
        b.build()
    };
    let klingon = TextOptions::default()
        .set_indexing_options(TextFieldIndexing::default().set_tokenizer("klingon"));
    let cases = [
        ("id", numeric_id, "not a text field"),
        ("id", schema_with("id", Some(TEXT | STORED)), "`raw`"),
        ("body", schema_with("body", Some(TEXT)), "not stored"),
        (
            "title",
            schema_with("title", Some(STORED.into())),
            "not indexed",
        ),
        ("body", schema_with("body", None), "no such field"),
        (
            "all",
            schema_with("all", Some(klingon)),
            "tokenizer `klingon`",
        ),
    ];
    for (field, schema, reason) in cases {
        let tmp = tempfile::tempdir().unwrap();
        tantivy::Index::create_in_dir(tmp.path(), schema).unwrap();
        let err = ArticleIndex::open(tmp.path()).unwrap_err();
        assert!(
            matches!(&err, SearchError::SchemaMismatch { field: f, .. } if f == field),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(reason), "{msg}");
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    }
    // tantivy's own default text options fit.
    let tmp = tempfile::tempdir().unwrap();
    tantivy::Index::create_in_dir(tmp.path(), schema_with("", None)).unwrap();
    ArticleIndex::open(tmp.path()).unwrap();
}

#[test]
fn two_handles_on_one_index_see_each_others_commits_and_replace_by_id() {
    let tmp = tempfile::tempdir().unwrap();
    let a = ArticleIndex::create(tmp.path(), &SchemaOptions::default()).unwrap();
    // Opened on the empty index, before a commits anything.
    let b = ArticleIndex::open(tmp.path()).unwrap();
    let c = ArticleIndex::open(tmp.path()).unwrap();
    let article = |body: &str| Article {
        id: "x".into(),
        title: "cats".into(),
        body: body.into(),
    };
    a.import_articles([article("cats purr")], &quiet()).unwrap();
    // b re-imports the id right away: it replaces a's document (its reader may not have
    // caught up yet; the import looks ids up in the latest commit).
    let report = b
        .import_articles([article("cats purr v2")], &quiet())
        .unwrap();
    assert_eq!((report.docs_indexed, report.docs_replaced), (1, 1));
    assert_eq!(b.num_docs(), 1);
    let fresh = ArticleIndex::open(tmp.path()).unwrap();
    let hits = common::bm25(&fresh, "cats", 10);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].doc.body, "cats purr v2");
    // a sees b's commit after a reload ...
    a.reload().unwrap();
    assert_eq!(common::bm25(&a, "cats", 10)[0].doc.body, "cats purr v2");
    // ... and c on its own, through the reload policy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::bm25(&c, "cats", 10)
        .first()
        .map(|h| h.doc.body.as_str())
        != Some("cats purr v2")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "c never saw the commit"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn title_boosts_that_would_make_scores_infinite_are_refused() {
    use tantivy_rerank_search::QueryOptions;
    let tmp = tempfile::tempdir().unwrap();
    let mut index = ArticleIndex::create(tmp.path(), &SchemaOptions::default()).unwrap();
    for bad in [f32::INFINITY, f32::NAN, f32::MAX, -1e7] {
        let err = index
            .set_query_options(QueryOptions {
                title_boost: Some(bad),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                SearchError::InvalidOption {
                    option: "title_boost",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    assert_eq!(index.query_options(), QueryOptions::default());
    index
        .set_query_options(QueryOptions {
            title_boost: Some(2.0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(index.query_options().title_boost, Some(2.0));
}

#[test]
fn locked_index_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let index = ArticleIndex::create(tmp.path(), &SchemaOptions::default()).unwrap();
    let _writer: tantivy::IndexWriter = index.index().writer(50_000_000).unwrap();
    let err = index
        .import_articles(
            [Article {
                id: "1".into(),
                title: "t".into(),
                body: "b".into(),
            }],
            &quiet(),
        )
        .unwrap_err();
    assert!(matches!(err, SearchError::IndexLocked { .. }), "{err:?}");
    assert!(err.to_string().contains("locked"), "{err}");
}

#[test]
fn empty_query_returns_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let index = ArticleIndex::create(tmp.path(), &SchemaOptions::default()).unwrap();
    index
        .import_articles(
            [Article {
                id: "1".into(),
                title: "t".into(),
                body: "b".into(),
            }],
            &quiet(),
        )
        .unwrap();
    assert!(common::bm25(&index, "", 10).is_empty());
    assert!(common::bm25(&index, " \t\n", 10).is_empty());
    let r = common::bm25(&index, "", 10);
    assert!(r.is_empty());
}

#[test]
fn empty_title_and_body_are_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let index = ArticleIndex::create(tmp.path(), &SchemaOptions::default()).unwrap();
    let docs = [
        Article {
            id: "a".into(),
            title: String::new(),
            body: "lonely body".into(),
        },
        Article {
            id: "b".into(),
            title: "lonely title".into(),
            body: String::new(),
        },
    ];
    index.import_articles(docs, &quiet()).unwrap();
    let hits = common::bm25(&index, "lonely", 5);
    assert_eq!(hits.len(), 2);
    let reranker = |_q: &str, t: &[&str]| {
        Ok::<_, std::convert::Infallible>(t.iter().map(|x| x.len() as f32).collect())
    };
    let cascade = Cascade::of(reranker);
    let r = index
        .search("lonely", &SearchOptions::default().rerank(&cascade))
        .unwrap();
    assert_eq!(r.hits.len(), 2);
}

#[test]
fn tiny_memory_budget_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let index = ArticleIndex::create(tmp.path(), &SchemaOptions::default()).unwrap();
    let err = index
        .import_articles(
            Vec::new(),
            &ImportOptions {
                memory_budget_bytes: 1000,
                ..quiet()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SearchError::InvalidOption {
                option: "memory_budget_bytes",
                ..
            }
        ),
        "{err}"
    );
}

fn animals(schema: &SchemaOptions) -> (tempfile::TempDir, ArticleIndex) {
    let tmp = tempfile::tempdir().unwrap();
    let index = ArticleIndex::create(tmp.path(), schema).unwrap();
    let docs = [
        ("1", "Cats", "Cats purr and sleep all day."),
        ("2", "Dogs", "Dogs bark at the cats."),
        ("3", "Birds", "Birds sing in the morning."),
    ];
    index
        .import_articles(
            docs.map(|(id, title, body)| Article {
                id: id.into(),
                title: title.into(),
                body: body.into(),
            }),
            &quiet(),
        )
        .unwrap();
    (tmp, index)
}

fn ids(hits: &[tantivy_rerank_search::Hit<Article>]) -> Vec<&str> {
    let mut ids: Vec<&str> = hits.iter().map(|h| h.doc.id.as_str()).collect();
    ids.sort();
    ids
}

#[test]
fn query_without_searchable_terms_returns_nothing() {
    for combined_field in [false, true] {
        let (_tmp, index) = animals(&SchemaOptions {
            combined_field,
            ..Default::default()
        });
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let reranker = |_q: &str, t: &[&str]| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(vec![0.0; t.len()])
        };
        let cascade = Cascade::new(Stage::borrowed(&reranker));
        let reranked = SearchOptions::default().rerank(&cascade);
        // Stop words and operators only: every term is analyzed away.
        for q in [
            "the",
            "is it",
            "AND OR NOT",
            "+the +it",
            "-the",
            "-(is it)",
            "(is it)^2",
            "title:the",
            "\"the of\"",
        ] {
            assert!(common::bm25(&index, q, 10).is_empty(), "{q:?}");
            let r = index.search(q, &reranked).unwrap();
            assert!(r.hits.is_empty() && r.candidates == 0, "{q:?}");
            assert!(index.parse_query(q).unwrap().is_none(), "{q:?}");
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Legitimate queries still work: plain, with stop words, phrase, field, NOT-only
        // (every document without the term) and an explicit `*`.
        let hits = |q: &str| common::bm25(&index, q, 10);
        assert_eq!(ids(&hits("cats")), ["1", "2"]);
        assert_eq!(ids(&hits("the cats")), ["1", "2"]);
        assert_eq!(ids(&hits("\"cats purr\"")), ["1"]);
        assert_eq!(ids(&hits("title:dogs")), ["2"]);
        assert_eq!(ids(&hits("-cats")), ["3"]);
        assert_eq!(ids(&hits("the -cats")), ["3"]);
        assert_eq!(ids(&hits("*")), ["1", "2", "3"]);
        let r = index.search("is it cats", &reranked).unwrap();
        assert_eq!(r.hits.len(), 2);
    }
}

#[test]
fn any_limit_is_safe() {
    let (_tmp, index) = animals(&SchemaOptions::default());
    // tantivy's `TopDocs` preallocates its limit: these used to overflow or abort.
    for k in [usize::MAX, usize::MAX / 2, 1 << 40] {
        assert_eq!(ids(&common::bm25(&index, "cats", k)), ["1", "2"]);
        assert_eq!(common::bm25(&index, "cats", k).len(), 2);
        let searcher = index.searcher();
        // The collector over a child that keeps everything of a huge limit: tantivy's own
        // `TopDocs` preallocates its limit, so the child here is sized by the index.
        let everything =
            |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(vec![1.0; t.len()]);
        let cascade = Cascade::new(Stage::new(everything).window(k));
        let loader = index.loader();
        let child = tantivy::collector::TopDocs::with_limit(index.num_docs() as usize);
        let all = searcher
            .search(
                &tantivy::query::AllQuery,
                &cascade.collector(child, &searcher, "cats", &loader, k),
            )
            .unwrap()
            .unwrap();
        assert_eq!(all.hits.len(), 3);
        let r = index
            .search("cats", &SearchOptions::default().top_n(k).rerank(&cascade))
            .unwrap();
        assert_eq!((r.hits.len(), r.candidates), (2, 2));
    }
    // An empty index too.
    let tmp = tempfile::tempdir().unwrap();
    let empty = ArticleIndex::create(tmp.path(), &SchemaOptions::default()).unwrap();
    assert!(common::bm25(&empty, "cats", usize::MAX).is_empty());
}

#[test]
fn jsonl_without_the_body_field_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("c.jsonl");
    write(
        &corpus,
        b"{\"_id\": \"1\", \"title\": \"T\", \"text\": \"apples\"}\n{\"_id\": \"2\", \"text\": null}\n",
    );
    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let mapping = FieldMapping {
        id: "_id".into(),
        title: Some("nope".into()),
        body: "nope".into(),
    };
    let err = index.import_jsonl(&corpus, &mapping, &quiet()).unwrap_err();
    assert!(
        matches!(&err, SearchError::MissingField { line: 1, field, .. } if field == "nope"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("c.jsonl:1: missing field `nope`"),
        "{err}"
    );
    assert_eq!(index.num_docs(), 0);
    // --skip-bad-lines skips (and counts) such records like any other bad line.
    let skip = ImportOptions {
        skip_bad_lines: true,
        ..quiet()
    };
    let r = index.import_jsonl(&corpus, &mapping, &skip).unwrap();
    assert_eq!((r.docs_indexed, r.bad_lines_skipped), (0, 2));
    // A missing title field is fine (empty title), and a null body is an empty body.
    let mapping = FieldMapping {
        title: Some("nope".into()),
        ..FieldMapping::beir()
    };
    let r = index.import_jsonl(&corpus, &mapping, &quiet()).unwrap();
    assert_eq!((r.docs_indexed, r.bad_lines_skipped), (2, 0));
    let hits = common::bm25(&index, "apples", 5);
    assert_eq!(
        (hits[0].doc.id.as_str(), hits[0].doc.title.as_str()),
        ("1", "")
    );
}

#[test]
fn jsonl_byte_order_mark_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("bom.jsonl");
    write(
        &corpus,
        b"\xEF\xBB\xBF{\"_id\": \"1\", \"title\": \"T\", \"text\": \"apples\"}\n{\"_id\": \"2\", \"text\": \"pears\"}\n",
    );
    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let r = index.import_beir(&corpus, &quiet()).unwrap();
    assert_eq!(r.docs_indexed, 2);
    let hits = common::bm25(&index, "apples", 5);
    assert_eq!(
        (hits[0].doc.id.as_str(), hits[0].doc.title.as_str()),
        ("1", "T")
    );
    // Only at the very start: a BOM inside the file is still malformed JSON.
    write(
        &corpus,
        b"{\"_id\": \"1\", \"text\": \"a\"}\n\xEF\xBB\xBF{\"_id\": \"2\", \"text\": \"b\"}\n",
    );
    let err = index.import_beir(&corpus, &quiet()).unwrap_err();
    assert!(
        matches!(err, SearchError::MalformedLine { line: 2, .. }),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn directory_import_skips_what_it_cannot_read() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    write(&docs.join("good.txt"), b"Volcanoes erupt.\n");
    // Two names that a lossy conversion would both turn into `n\u{fffd}.txt`.
    write(
        &docs.join(OsStr::from_bytes(b"n\xfe.txt")),
        b"first glacier\n",
    );
    write(
        &docs.join(OsStr::from_bytes(b"n\xff.txt")),
        b"second glacier\n",
    );
    // A dangling symbolic link, and a link to a readable file (read under its own name).
    std::os::unix::fs::symlink(docs.join("gone.txt"), docs.join("dangling.txt")).unwrap();
    std::os::unix::fs::symlink(docs.join("good.txt"), docs.join("alias.md")).unwrap();
    // A FIFO: reading it would block until some process writes to it.
    let fifo = docs.join("pipe.txt");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());

    // A file and a sub-folder without read permission. Root reads them anyway, so what is
    // expected depends on whether the OS denies this process.
    use std::os::unix::fs::PermissionsExt;
    let locked = docs.join("locked.txt");
    write(&locked, b"locked avalanche\n");
    let private = docs.join("private");
    std::fs::create_dir(&private).unwrap();
    write(&private.join("inner.txt"), b"private avalanche\n");
    for p in [&locked, &private] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let denied = std::fs::read(&locked).is_err();
    assert_eq!(denied, std::fs::read_dir(&private).is_err());

    let index = ArticleIndex::create(tmp.path().join("idx"), &SchemaOptions::default()).unwrap();
    let report = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (index, docs) = (&index, &docs);
        scope.spawn(move || tx.send(index.import_dir(docs, &quiet())));
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(result) => result,
            Err(_) => {
                // Unblock the import stuck opening the FIFO, then fail.
                drop(std::fs::OpenOptions::new().write(true).open(&fifo));
                panic!("the folder import blocked on a FIFO");
            }
        }
    })
    .unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (indexed, unreadable) = if denied { (2, 4) } else { (4, 2) };
    assert_eq!(
        (
            report.docs_indexed,
            report.non_utf8_files_skipped,
            report.unreadable_files_skipped
        ),
        (indexed, 2, unreadable)
    );
    let found = common::bm25(&index, "volcano", 5);
    assert_eq!(ids(&found), ["alias.md", "good.txt"]);
    assert!(common::bm25(&index, "glacier", 5).is_empty());
    let avalanche = common::bm25(&index, "avalanche", 5);
    assert_eq!(avalanche.len(), if denied { 0 } else { 2 });
}
