//! Property tests of the dataset readers: any qrels or queries file gives a dataset or an
//! error naming the file and line, never a panic; valid files read back what they hold.

use std::path::Path;

use proptest::prelude::*;
use tantivy_rerank_eval::{load_beir, read_qrels, DataIssues};

fn write(dir: &Path, corpus: &str, queries: &str, qrels: &str) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
}

const CORPUS: &str = "{\"_id\": \"d1\", \"title\": \"\", \"text\": \"cats\"}\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any text as a qrels file.
    #[test]
    fn any_qrels_file_reads_or_names_its_line(text in "[a-z0-9\t \n.\\-eE+]{0,300}") {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("q.tsv");
        std::fs::write(&path, &text).unwrap();
        let mut issues = DataIssues::default();
        match read_qrels(&path, &mut issues) {
            Ok(qrels) => {
                for judged in qrels.values() {
                    prop_assert!(!judged.is_empty());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("q.tsv:"), "{}", e),
        }
    }

    /// Valid qrels lines read back as written (last grade of a repeated pair wins).
    #[test]
    fn valid_qrels_read_back(rows in proptest::collection::vec(("q[0-9]{1,2}", "d[0-9]{1,3}", -3i64..4), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("q.tsv");
        let mut text = String::from("query-id\tcorpus-id\tscore\n");
        for (q, d, g) in &rows {
            text.push_str(&format!("{q}\t{d}\t{g}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let qrels = read_qrels(&path, &mut DataIssues::default()).unwrap();
        let mut expected = std::collections::HashMap::new();
        for (q, d, g) in &rows {
            expected.insert((q.clone(), d.clone()), *g);
        }
        for ((q, d), g) in expected {
            prop_assert_eq!(qrels[&q][&d], g);
        }
    }

    /// Any lines as queries.jsonl: a dataset or an error naming queries.jsonl.
    #[test]
    fn any_queries_file_loads_or_names_the_file(
        lines in proptest::collection::vec(
            prop_oneof![
                "\\{\"_id\": \"[a-z0-9]{0,4}\", \"text\": \"[a-z ]{0,10}\"\\}",
                "\\{\"_id\": [0-9.e\\-]{1,6}, \"text\": [0-9a-z\"\\[\\]]{0,8}\\}",
                ".{0,40}",
            ],
            0..8,
        )
    ) {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), CORPUS, &lines.join("\n"), "q\td1\t1\n");
        match load_beir(tmp.path(), "test") {
            Ok(ds) => prop_assert!(ds.queries.iter().all(|q| !q.id.is_empty())),
            Err(e) => prop_assert!(e.to_string().contains("queries.jsonl"), "{}", e),
        }
    }
}
