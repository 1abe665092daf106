//! `pipeline` mode and the BEIR reader: bad input, run files that re-score to the reported
//! numbers, and BM25 on SciFact from the shared data folder.

use std::path::Path;

use tantivy_rerank_eval::{
    evaluate_pipeline, load_beir, score_run, EvalError, EvalReport, PipelineOptions, Run,
};
use tantivy_rerank_eval::{Combination, RerankOptions, StageOptions};
use tantivy_rerank_testdata::shared_dir as shared;

/// One stage over the best `window` documents, scored whole.
fn whole_docs(window: usize) -> RerankOptions {
    RerankOptions {
        stages: vec![StageOptions {
            window,
            passages: None,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn write_beir(dir: &Path, corpus: &str, queries: &str, qrels: &str) {
    std::fs::create_dir_all(dir.join("qrels")).expect("mkdir");
    std::fs::write(dir.join("corpus.jsonl"), corpus).expect("corpus");
    std::fs::write(dir.join("queries.jsonl"), queries).expect("queries");
    std::fs::write(dir.join("qrels/test.tsv"), qrels).expect("qrels");
}

const CORPUS: &str = r#"{"_id": "d1", "title": "Cats", "text": "Cats purr and sleep all day."}
{"_id": "d2", "title": "Dogs", "text": "Dogs bark at cats and chase them."}
{"_id": "d3", "title": "Birds", "text": "Birds sing in the morning."}
{"_id": 4, "title": "Fish", "text": "Fish swim; cats watch fish."}
"#;

#[test]
fn beir_bad_input_names_file_line_and_column() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Malformed JSON on line 2.
    write_beir(
        dir,
        "{\"_id\": \"a\", \"text\": \"x\"}\n{\"_id\": \"b\", \"text\": }\n",
        "{\"_id\": \"q\", \"text\": \"x\"}\n",
        "query-id\tcorpus-id\tscore\nq\ta\t1\n",
    );
    let err = load_beir(dir, "test").unwrap_err();
    assert!(
        matches!(&err, EvalError::Malformed { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("corpus.jsonl:2:"), "{err}");
    // Duplicate document id.
    write_beir(
        dir,
        "{\"_id\": \"a\", \"text\": \"x\"}\n{\"_id\": \"a\", \"text\": \"y\"}\n",
        "{\"_id\": \"q\", \"text\": \"x\"}\n",
        "q\ta\t1\n",
    );
    let err = load_beir(dir, "test").unwrap_err();
    assert!(
        matches!(
            &err,
            EvalError::DuplicateId {
                line: 2,
                first_line: 1,
                ..
            }
        ),
        "{err}"
    );
    // Missing _id.
    write_beir(
        dir,
        "{\"text\": \"a\"}\n",
        "{\"_id\": \"q\", \"text\": \"x\"}\n",
        "q\ta\t1\n",
    );
    assert!(matches!(
        load_beir(dir, "test").unwrap_err(),
        EvalError::MissingField { line: 1, .. }
    ));
    // Non-integer grade on line 3, column 6.
    write_beir(
        dir,
        CORPUS,
        "{\"_id\": \"q\", \"text\": \"x\"}\n",
        "query-id\tcorpus-id\tscore\nq\td1\t1\nq\td2\tx\n",
    );
    let err = load_beir(dir, "test").unwrap_err();
    assert!(
        matches!(
            &err,
            EvalError::Malformed {
                line: 3,
                column: 6,
                ..
            }
        ),
        "{err}"
    );
    // Field values that are not text, and float ids, are errors naming the line and field.
    for (corpus, line, expect) in [
        (
            "{\"_id\": \"a\", \"text\": \"x\"}\n{\"_id\": \"b\", \"text\": [\"x\", \"y\"]}\n",
            2,
            "field `text` must be a string or null, got an array",
        ),
        (
            "{\"_id\": \"a\", \"title\": 3, \"text\": \"x\"}\n",
            1,
            "field `title` must be a string or null, got a number",
        ),
        (
            "{\"_id\": 1.0, \"text\": \"x\"}\n",
            1,
            "field `_id` must be a string or an integer",
        ),
        (
            "{\"_id\": \"a\", \"text\": \"x\"}\n{\"_id\": \"\", \"text\": \"x\"}\n",
            2,
            "field `_id` is empty",
        ),
    ] {
        write_beir(
            dir,
            corpus,
            "{\"_id\": \"q\", \"text\": \"x\"}\n",
            "q\ta\t1\n",
        );
        let err = load_beir(dir, "test").unwrap_err();
        assert!(
            matches!(&err, EvalError::Malformed { line: l, .. } if *l == line),
            "{err}"
        );
        assert!(err.to_string().contains(expect), "{err}");
    }
    // A fractional grade on line 1 of a headerless file is an error, not a header.
    write_beir(
        dir,
        CORPUS,
        "{\"_id\": \"q\", \"text\": \"x\"}\n",
        "q\td1\t1.5\nq\td2\t1\n",
    );
    let err = load_beir(dir, "test").unwrap_err();
    assert!(
        matches!(&err, EvalError::Malformed { line: 1, .. }),
        "{err}"
    );
    // So are a word on line 1 that names no column, and grades past i64.
    for (qrels, line) in [
        ("q\td1\tx\nq\td2\t1\n", 1),
        ("q\td1\t1\nq\td2\t1e30\n", 2),
        ("q\td1\t99999999999999999999\n", 1),
    ] {
        write_beir(dir, CORPUS, "{\"_id\": \"q\", \"text\": \"x\"}\n", qrels);
        let err = load_beir(dir, "test").unwrap_err();
        assert!(
            matches!(&err, EvalError::Malformed { line: l, .. } if *l == line),
            "{qrels:?}: {err}"
        );
    }
    // Byte-order marks at the start of the corpus, queries and qrels, and a TREC-style
    // header, are fine.
    write_beir(
        dir,
        &format!("\u{feff}{CORPUS}"),
        "\u{feff}{\"_id\": \"q\", \"text\": \"x\"}\n",
        "\u{feff}qid\tdocno\trelevance\nq\td1\t1\n",
    );
    let ds = load_beir(dir, "test").expect("byte-order marks");
    assert_eq!((ds.corpus.len(), ds.qrels["q"]["d1"]), (4, 1));
    // Unknown ids, repeated judgements and empty queries are counted, not fatal.
    write_beir(
        dir,
        CORPUS,
        "{\"_id\": \"q1\", \"text\": \"cats\"}\n{\"_id\": \"q2\", \"text\": \"  \"}\n",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\nq1\tnope\t1\nq9\td1\t1\nq2\td3\t1\n",
    );
    let ds = load_beir(dir, "test").expect("load");
    let i = &ds.issues;
    assert_eq!(
        (
            i.qrels_unknown_queries,
            i.qrels_unknown_doc_lines,
            i.qrels_duplicate_lines,
            i.empty_queries
        ),
        (1, 1, 1, 1),
        "{i:?}"
    );
    assert_eq!(ds.qrels["q1"]["d1"], 2, "last grade wins");
    let shown = i.to_string();
    for part in [
        "1 qrels lines with an unknown query",
        "1 qrels lines with a document not in the corpus",
        "1 repeated qrels lines",
        "1 empty queries",
        "; e.g. ",
    ] {
        assert!(shown.contains(part), "{shown}");
    }
    assert!(
        !shown.contains("candidate"),
        "zero counts are left out: {shown}"
    );
    // The empty query scores 0 and is counted.
    let opts = PipelineOptions {
        progress: false,
        ..Default::default()
    };
    let report = evaluate_pipeline(&ds, &[], &opts).expect("pipeline");
    assert_eq!((report.queries, report.queries_without_hits), (2, 1));
    // A missing split names the file.
    let err = load_beir(dir, "dev").unwrap_err();
    assert!(err.to_string().contains("dev.tsv"), "{err}");
}

#[test]
fn pipeline_runs_rescore_to_the_reported_numbers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_beir(
        tmp.path(),
        CORPUS,
        "{\"_id\": \"q1\", \"text\": \"cats\"}\n{\"_id\": \"q2\", \"text\": \"fish\"}\n",
        "query-id\tcorpus-id\tscore\nq1\td2\t2\nq1\td1\t1\nq2\t4\t1\n",
    );
    let ds = load_beir(tmp.path(), "test").expect("load");
    // Rerank by the number of "cats": ties on purpose (broken by doc id, descending).
    let reranker = |_q: &str, t: &[&str]| {
        Ok::<_, std::convert::Infallible>(
            t.iter().map(|t| t.matches("cats").count() as f32).collect(),
        )
    };
    let opts = PipelineOptions {
        progress: false,
        rerank: whole_docs(2),
        top_k: 10,
        ..Default::default()
    };
    let report = evaluate_pipeline(&ds, &[&reranker], &opts).expect("pipeline");
    assert_eq!(report.systems.len(), 2);
    assert!(report.systems[1].pairs_scored > 0);
    let table = rescores_to_the_report(&ds, &report, opts.top_k);
    assert!(table.contains("NDCG@10"), "{table}");
    assert!(
        table.contains("runs are cut at top_k = 10: Recall@100 and MAP@100 count only"),
        "{table}"
    );
}

/// Write `report`'s outputs, check that every run file re-scores to the reported numbers,
/// and return the table.
fn rescores_to_the_report(
    ds: &tantivy_rerank_eval::Dataset,
    report: &tantivy_rerank_eval::PipelineReport,
    top_k: usize,
) -> String {
    let out = tempfile::tempdir().expect("out");
    let full = EvalReport::Pipeline {
        dataset: "toy".into(),
        model: None,
        reports: vec![report.clone()],
    };
    full.write_outputs(out.path()).expect("write");
    for sys in &report.systems {
        let path = out.path().join(format!("{}.{}.trec", ds.name, sys.system));
        let rescored = score_run(ds, Run::read_trec(&path).expect("read"), top_k);
        assert_eq!(rescored.per_query, sys.per_query, "{}", sys.system);
    }
    full.table()
}

/// Candidates past the window keep their BM25 order in the rerank run even when the reranked
/// scores are so large that steps of 1 below them vanish in trec_eval's 32-bit scores.
#[test]
fn the_tail_keeps_bm25_order_below_huge_rerank_scores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // BM25 order a, b, c (most "cats" first): the reverse of trec_eval's tie order by id.
    write_beir(
        tmp.path(),
        concat!(
            "{\"_id\": \"a\", \"title\": \"\", \"text\": \"cats cats cats\"}\n",
            "{\"_id\": \"b\", \"title\": \"\", \"text\": \"cats cats dogs\"}\n",
            "{\"_id\": \"c\", \"title\": \"\", \"text\": \"cats dogs dogs\"}\n",
        ),
        "{\"_id\": \"q1\", \"text\": \"cats\"}\n",
        "query-id\tcorpus-id\tscore\nq1\tb\t1\n",
    );
    let ds = load_beir(tmp.path(), "test").expect("load");
    let reranker = |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(vec![1e8; t.len()]);
    let opts = PipelineOptions {
        progress: false,
        rerank: whole_docs(1),
        top_k: 10,
        ..Default::default()
    };
    let report = evaluate_pipeline(&ds, &[&reranker], &opts).expect("pipeline");
    // The run lists the hits best first: the reranked one, then the tail in BM25 order.
    let listed: Vec<String> = report.systems[1].run.queries[0]
        .1
        .iter()
        .map(|(d, _)| d.clone())
        .collect();
    assert_eq!(listed, ["a", "b", "c"]);
    let mut docs = report.systems[1].run.queries[0].1.clone();
    tantivy_rerank_eval::metrics::trec::trec_order(&mut docs);
    let ordered: Vec<String> = docs.into_iter().map(|(d, _)| d).collect();
    assert_eq!(ordered, listed);
}

/// `index_dir` reuses an index only when it holds the dataset's corpus.
#[test]
fn a_reused_index_must_hold_the_corpus() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, index) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("idx"),
    );
    let queries = "{\"_id\": \"q1\", \"text\": \"cats\"}\n";
    write_beir(&a, CORPUS, queries, "q1\td1\t1\n");
    // Same size, other ids.
    let other = CORPUS
        .replace("\"d", "\"e")
        .replace("\"_id\": 4", "\"_id\": \"e4\"");
    write_beir(&b, &other, queries, "q1\te1\t1\n");
    let opts = PipelineOptions {
        progress: false,
        index_dir: Some(index.clone()),
        ..Default::default()
    };
    let ds_a = load_beir(&a, "test").expect("a");
    let first = evaluate_pipeline(&ds_a, &[], &opts).expect("builds the index");
    let again = evaluate_pipeline(&ds_a, &[], &opts).expect("reuses it");
    assert_eq!(
        format!("{:?}", first.systems[0].per_query),
        format!("{:?}", again.systems[0].per_query)
    );
    let ds_b = load_beir(&b, "test").expect("b");
    let err = evaluate_pipeline(&ds_b, &[], &opts).unwrap_err();
    assert!(
        matches!(&err, EvalError::IndexMismatch { .. }) && err.to_string().contains("`e1`"),
        "{err}"
    );
    // A corpus of another size is caught by the count.
    write_beir(
        &b,
        &CORPUS[..CORPUS.rfind("{").unwrap_or(0)],
        queries,
        "q1\td1\t1\n",
    );
    let ds_c = load_beir(&b, "test").expect("c");
    let err = evaluate_pipeline(&ds_c, &[], &opts).unwrap_err();
    assert!(
        err.to_string().contains("has 4 documents, the corpus 3"),
        "{err}"
    );
}

/// BM25 on SciFact test: the run file re-scores to the same numbers.
#[test]
fn scifact_bm25_pipeline() {
    let dir = shared().join("data/scifact");
    let ds = load_beir(&dir, "test").expect("scifact");
    assert_eq!((ds.corpus.len(), ds.qrels.len()), (5183, 300));
    assert!(ds.issues.is_clean(), "{:?}", ds.issues);
    let opts = PipelineOptions {
        progress: false,
        ..Default::default()
    };
    let report = evaluate_pipeline(&ds, &[], &opts).expect("pipeline");
    let m = report.systems[0].mean;
    eprintln!("SciFact test BM25: {m:?}");
    assert_eq!(report.queries, 300);
    assert!(m.ndcg_10 > 0.66 && m.ndcg_10 < 0.72, "{m:?}");
    assert!(m.recall_100 > 0.85, "{m:?}");
    let out = tempfile::tempdir().expect("out");
    let path = out.path().join("bm25.trec");
    report.systems[0].run.write_trec(&path).expect("write");
    let rescored = score_run(&ds, Run::read_trec(&path).expect("read"), 100);
    assert_eq!(rescored.mean, m);
}

#[test]
fn zero_options_are_named_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_beir(
        tmp.path(),
        CORPUS,
        "{\"_id\": \"q1\", \"text\": \"cats\"}\n",
        "q1\td1\t1\n",
    );
    let ds = load_beir(tmp.path(), "test").expect("load");
    let reranker = |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(vec![1.0; t.len()]);
    let base = PipelineOptions {
        progress: false,
        ..Default::default()
    };
    for (options, with_model, name) in [
        (
            PipelineOptions {
                top_k: 0,
                ..base.clone()
            },
            false,
            "top_k",
        ),
        (
            PipelineOptions {
                max_queries: Some(0),
                ..base.clone()
            },
            false,
            "max_queries",
        ),
        (
            PipelineOptions {
                rerank: whole_docs(0),
                ..base.clone()
            },
            true,
            "window",
        ),
    ] {
        let model: Vec<&dyn tantivy_rerank_search::Reranker> = match with_model {
            true => vec![&reranker],
            false => vec![],
        };
        match evaluate_pipeline(&ds, &model, &options) {
            Err(EvalError::InvalidOption { option, .. }) => assert_eq!(option, name),
            other => panic!("{name}: expected InvalidOption, got {:?}", other.err()),
        }
    }
    // BM25 alone has no window to check.
    let bm25_only = PipelineOptions {
        rerank: whole_docs(0),
        ..base
    };
    assert!(evaluate_pipeline(&ds, &[], &bm25_only).is_ok());
    let options = tantivy_rerank_eval::RerankEvalOptions {
        max_queries: Some(0),
        progress: false,
        ..Default::default()
    };
    match tantivy_rerank_eval::evaluate_rerank(&[ds], &reranker, &options) {
        Err(EvalError::InvalidOption { option, .. }) => assert_eq!(option, "max_queries"),
        other => panic!("expected InvalidOption, got {:?}", other.err()),
    }
}

/// A cascade and a budget are evaluated as configurations side by side: BM25, each prefix of
/// the cascade, the whole cascade and the budgeted one, each with its quality and time.
#[test]
fn cascades_fusion_and_a_budget_are_configurations_with_quality_and_latency() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_beir(
        tmp.path(),
        CORPUS,
        "{\"_id\": \"q1\", \"text\": \"cats\"}\n{\"_id\": \"q2\", \"text\": \"fish cats\"}\n",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\t4\t1\n",
    );
    let ds = load_beir(tmp.path(), "test").expect("load");
    // Stage 1 prefers short texts; stage 2 prefers texts that mention "fish", and is slow.
    let short = |_q: &str, t: &[&str]| {
        Ok::<_, std::convert::Infallible>(t.iter().map(|t| -(t.len() as f32)).collect())
    };
    let fishy = |_q: &str, t: &[&str]| {
        std::thread::sleep(std::time::Duration::from_millis(30));
        Ok::<_, std::convert::Infallible>(
            t.iter().map(|t| t.matches("fish").count() as f32).collect(),
        )
    };
    let stage = |name: &str, window| StageOptions {
        name: Some(name.into()),
        window,
        passages: None,
        ..Default::default()
    };
    let opts = PipelineOptions {
        progress: false,
        top_k: 10,
        rerank: RerankOptions {
            stages: vec![stage("short", 4), stage("fishy", 2)],
            combination: Combination::rrf(),
            budget: Some(std::time::Duration::from_millis(10)),
        },
        ..Default::default()
    };
    let report = evaluate_pipeline(&ds, &[&short, &fishy], &opts).expect("pipeline");
    let names: Vec<&str> = report.systems.iter().map(|s| s.system.as_str()).collect();
    assert_eq!(names, ["bm25", "rerank[short]", "rerank", "rerank+budget"]);
    for sys in &report.systems {
        assert!(
            sys.latency.mean_ms > 0.0 && sys.latency.p95_ms >= sys.latency.p50_ms,
            "{sys:?}"
        );
        assert_eq!(sys.per_query.len(), 2);
        assert_eq!(sys.rerank.is_some(), sys.system != "bm25");
    }
    // The slow second stage costs time; within a 10 ms budget it is cut short (its first call
    // measures it at 30 ms).
    let by = |n: &str| report.systems.iter().find(|s| s.system == n).expect(n);
    assert!(
        by("rerank").latency.mean_ms >= 30.0,
        "{:?}",
        by("rerank").latency
    );
    assert_eq!(by("rerank").queries_budget_cut, 0);
    assert!(by("rerank+budget").queries_budget_cut >= 1);
    assert!(by("rerank[short]").latency.mean_ms < by("rerank").latency.mean_ms);
    // Stage counts mismatch: one reranker per stage.
    let err = evaluate_pipeline(&ds, &[&short], &opts).unwrap_err();
    assert!(
        err.to_string().contains("2 stages for 1 rerankers"),
        "{err}"
    );
    // Every run re-scores to its reported numbers, and the table shows the latency.
    let table = rescores_to_the_report(&ds, &report, opts.top_k);
    assert!(
        table.contains("ms/query") && table.contains("rerank+budget"),
        "{table}"
    );
}
