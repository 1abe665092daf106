//! Import sources, replacement, bad input and index lifecycle errors.

use std::io::Write;

use tantivy_rerank_search::{
    Article, ArticleIndex, FieldMapping, ImportOptions, SchemaOptions, SearchError,
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
    let hits = index.search_bm25("apples", 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body, "yellow apples");

    // Importing the same file again replaces everything: still two documents.
    let r = index.import_beir(&corpus, &quiet()).unwrap();
    assert_eq!((r.docs_indexed, r.docs_replaced), (3, 3));
    assert_eq!(index.num_docs(), 2);
    assert_eq!(index.search_bm25("apples", 10).unwrap().len(), 1);

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
    let hits = index.search_bm25("landing", 3).unwrap();
    assert_eq!((hits[0].id.as_str(), hits[0].title.as_str()), ("7", "Moon"));
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
    let hits = index.search_bm25("volcano", 5).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].id.as_str(), hits[0].title.as_str()),
        ("a.md", "Volcano facts")
    );
    let hits = index.search_bm25("glacier", 5).unwrap();
    assert_eq!(
        (hits[0].id.as_str(), hits[0].title.as_str()),
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
    assert!(index.search_bm25("", 10).unwrap().is_empty());
    assert!(index.search_bm25(" \t\n", 10).unwrap().is_empty());
    let r = index.search_bm25_ids("", 10).unwrap();
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
    let hits = index.search_bm25("lonely", 5).unwrap();
    assert_eq!(hits.len(), 2);
    let reranker = tantivy_rerank_search::FnReranker::new(|_q: &str, t: &[&str]| {
        Ok::<_, std::convert::Infallible>(t.iter().map(|x| x.len() as f32).collect())
    });
    let r = index
        .search_reranked("lonely", &reranker, &Default::default())
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
