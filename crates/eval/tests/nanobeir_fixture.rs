//! The NanoBEIR-schema parquet fixture (scripts/make_nanobeir_fixture.py) end to end in `rerank`
//! mode with the fixture cross-encoder, against the numbers sentence-transformers'
//! `CrossEncoderNanoBEIREvaluator` gives on the same files and model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use serde_json::Value;
use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions, DeviceSpec};
use tantivy_rerank_eval::{
    evaluate_rerank, load_nanobeir, EvalError, EvalReport, NanoBeirSource, RerankEvalOptions, Run,
};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nanobeir")
}

fn expected() -> Value {
    let text =
        std::fs::read_to_string(fixture_dir().join("expected_st.json")).expect("expected_st.json");
    serde_json::from_str(&text).expect("JSON")
}

fn model() -> CrossEncoder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../encoders/tests/fixtures/modernbert-1label-mean");
    CrossEncoder::from_dir(dir, CrossEncoderOptions::default().device(DeviceSpec::Cpu))
        .expect("fixture model")
}

#[test]
fn fixture_loads_with_the_published_schema() {
    let sets = load_nanobeir(
        &NanoBeirSource::Dir(fixture_dir()),
        &["msmarco", "NanoNFCorpus"],
    )
    .expect("load");
    assert_eq!(sets.len(), 2);
    let ms = &sets[0];
    assert_eq!(ms.name, "NanoMSMARCO");
    assert_eq!(
        (ms.corpus.len(), ms.queries.len(), ms.qrels.len()),
        (10, 3, 3)
    );
    let lists = ms.candidates.as_ref().expect("bm25 lists");
    assert_eq!(lists[0].0, "q1");
    assert_eq!(lists[0].1, ["1004", "1001", "1010", "1006", "1002"]);
    assert!(ms.issues.is_clean(), "{:?}", ms.issues);
    assert_eq!(sets[1].corpus.len(), 11);
}

#[test]
fn rerank_mode_equals_sentence_transformers() {
    let exp = expected();
    let model = model();
    let sets = load_nanobeir(
        &NanoBeirSource::Dir(fixture_dir()),
        &["msmarco", "nfcorpus"],
    )
    .expect("load");

    // The model's scores equal the Python ones pair by pair.
    let mut max_diff = 0f64;
    for (key, scores) in exp["pair_scores"].as_object().expect("pair scores") {
        let (split, qid) = key.split_once('/').expect("split/qid");
        let ds = sets.iter().find(|d| d.name == split).expect("split");
        let q = ds.queries.iter().find(|q| q.id == qid).expect("query");
        for (did, want) in scores.as_object().expect("scores") {
            let doc = ds.corpus.iter().find(|d| &d.id == did).expect("doc");
            let got = model
                .scores(&[(q.text.as_str(), doc.text.as_str())])
                .expect("score")[0];
            max_diff = max_diff.max((f64::from(got) - want.as_f64().expect("f64")).abs());
        }
    }
    eprintln!("max |score - sentence-transformers| = {max_diff:.2e}");
    assert!(max_diff < 1e-4, "{max_diff}");

    for (run_name, options) in [
        ("default", RerankEvalOptions::default()),
        (
            "no_always_positives",
            RerankEvalOptions {
                always_rerank_positives: false,
                ..Default::default()
            },
        ),
        (
            "rerank_k_2",
            RerankEvalOptions {
                rerank_k: 2,
                ..Default::default()
            },
        ),
    ] {
        let options = RerankEvalOptions {
            progress: false,
            ..options
        };
        let report = evaluate_rerank(&sets, &model, &options).expect("evaluate");
        let results = &exp["runs"][run_name]["results"];
        let k = options.rerank_k;
        let get = |key: String| {
            results[&key]
                .as_f64()
                .unwrap_or_else(|| panic!("{run_name}: no {key} in expected_st.json"))
        };
        let check = |ours: f64, key: String| {
            let want = get(key.clone());
            assert!(
                (ours - want).abs() < 1e-9,
                "{run_name} {key}: ours {ours}, sentence-transformers {want}"
            );
        };
        for d in &report.datasets {
            let p = format!("{}_R{k}_", d.dataset);
            check(d.reranked.map, format!("{p}map"));
            check(d.reranked.mrr_at_k, format!("{p}mrr@10"));
            check(d.reranked.ndcg_at_k, format!("{p}ndcg@10"));
            check(d.base.map, format!("{p}base_map"));
            check(d.base.mrr_at_k, format!("{p}base_mrr@10"));
            check(d.base.ndcg_at_k, format!("{p}base_ndcg@10"));
        }
        let p = format!("NanoBEIR_R{k}_mean_");
        check(report.mean_reranked.ndcg_at_k, format!("{p}ndcg@10"));
        check(report.mean_reranked.map, format!("{p}map"));
        check(report.mean_reranked.mrr_at_k, format!("{p}mrr@10"));
        check(report.mean_base.ndcg_at_k, format!("{p}base_ndcg@10"));

        if run_name == "default" {
            // Outputs: table, JSON and run files that read back.
            let out = tempfile::tempdir().expect("tempdir");
            let full = EvalReport::Rerank {
                dataset: "nanobeir:msmarco,nfcorpus".into(),
                model: "fixture".into(),
                report,
            };
            let table = full.table();
            assert!(
                table.contains("NDCG@10:") && table.contains("->"),
                "{table}"
            );
            let files = full.write_outputs(out.path()).expect("write");
            assert_eq!(files.len(), 5);
            let run =
                Run::read_trec(&out.path().join("NanoMSMARCO.rerank.trec")).expect("read run");
            assert_eq!(run.system, "rerank");
            assert_eq!(run.queries.len(), 3);
            let json: Value = serde_json::from_str(
                &std::fs::read_to_string(out.path().join("report.json")).expect("json"),
            )
            .expect("valid JSON");
            assert_eq!(json["mode"], "rerank");
            assert!(json["report"]["datasets"][0]["per_query"]
                .as_array()
                .is_some_and(|q| q.len() == 3));
        }
    }
}

/// Copy the fixture with one subset replaced by `batch`.
fn fixture_with(subset: &str, batch: RecordBatch) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for sub in ["corpus", "queries", "qrels", "bm25"] {
        std::fs::create_dir_all(tmp.path().join(sub)).expect("mkdir");
        let name = "NanoMSMARCO-00000-of-00001.parquet";
        let dst = tmp.path().join(sub).join(name);
        if sub == subset {
            write_parquet(&dst, &batch);
        } else {
            std::fs::copy(fixture_dir().join(sub).join(name), &dst).expect("copy");
        }
    }
    tmp
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

fn strings(cols: &[(&str, Vec<Option<&str>>)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, _)| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays = cols
        .iter()
        .map(|(_, v)| Arc::new(StringArray::from(v.clone())) as arrow_array::ArrayRef)
        .collect();
    RecordBatch::try_new(schema, arrays).expect("batch")
}

#[test]
fn bad_parquet_is_a_clear_error() {
    // bm25 without `corpus-ids`: the error names the file and the column.
    let tmp = fixture_with("bm25", strings(&[("query-id", vec![Some("q1")])]));
    let err = load_nanobeir(&NanoBeirSource::Dir(tmp.path().into()), &["msmarco"]).unwrap_err();
    assert!(
        matches!(&err, EvalError::MissingColumn { column, .. } if column == "corpus-ids"),
        "{err}"
    );
    assert!(err.to_string().contains("bm25/NanoMSMARCO"), "{err}");

    // A null id.
    let tmp = fixture_with(
        "queries",
        strings(&[
            ("_id", vec![Some("q1"), None]),
            ("text", vec![Some("a"), Some("b")]),
        ]),
    );
    let err = load_nanobeir(&NanoBeirSource::Dir(tmp.path().into()), &["msmarco"]).unwrap_err();
    assert!(matches!(&err, EvalError::NullValue { row: 2, .. }), "{err}");

    // Duplicate query ids.
    let tmp = fixture_with(
        "queries",
        strings(&[
            ("_id", vec![Some("q1"), Some("q1")]),
            ("text", vec![Some("a"), Some("b")]),
        ]),
    );
    let err = load_nanobeir(&NanoBeirSource::Dir(tmp.path().into()), &["msmarco"]).unwrap_err();
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

    // A query id repeated in a second file of the split: both files named.
    let tmp = fixture_with(
        "queries",
        strings(&[
            ("_id", vec![Some("q0"), Some("q1")]),
            ("text", vec![Some("a"), Some("b")]),
        ]),
    );
    let second = tmp
        .path()
        .join("queries/NanoMSMARCO-00001-of-00002.parquet");
    write_parquet(
        &second,
        &strings(&[("_id", vec![Some("q1")]), ("text", vec![Some("c")])]),
    );
    let err = load_nanobeir(&NanoBeirSource::Dir(tmp.path().into()), &["msmarco"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}:1:", second.display()))
            && msg.contains("00000-of-00001.parquet:2)"),
        "{msg}"
    );

    // Qrels naming unknown queries and documents: counted, not fatal.
    let tmp = fixture_with(
        "qrels",
        strings(&[
            ("query-id", vec![Some("q1"), Some("nope"), Some("q2")]),
            (
                "corpus-id",
                vec![Some("1001"), Some("1002"), Some("missing-doc")],
            ),
        ]),
    );
    let sets = load_nanobeir(&NanoBeirSource::Dir(tmp.path().into()), &["msmarco"]).expect("load");
    let issues = &sets[0].issues;
    assert_eq!(
        (issues.qrels_unknown_queries, issues.qrels_unknown_doc_lines),
        (1, 1),
        "{issues:?}"
    );

    // A missing split names what was looked for.
    let err = load_nanobeir(&NanoBeirSource::Dir(fixture_dir()), &["nq"]).unwrap_err();
    assert!(err.to_string().contains("NanoNQ"), "{err}");
}
