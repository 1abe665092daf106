//! [`RerankCollector`]: the first-stage collector of a rerank search.

use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::query::Weight;
use tantivy::{DocAddress, Score, SegmentOrdinal, SegmentReader};

/// First-stage candidates: `(bm25 score, address)`, best first.
pub type Candidates = Vec<(Score, DocAddress)>;

/// A tantivy [`Collector`] that keeps the first-stage top `max(window, top_n)` documents of
/// any query: the top per segment, then merged across segments (it composes [`TopDocs`], so
/// block-max WAND pruning still applies). Its fruit feeds
/// [`ArticleIndex::rerank_candidates`](crate::ArticleIndex::rerank_candidates), which
/// fetches stored text and calls the reranker once per query; that step lives outside the
/// collector because it needs the searcher's doc store and a whole-query batch.
///
/// ```
/// use tantivy_rerank_search::RerankCollector;
/// let collector = RerankCollector::new(100, 10);
/// assert_eq!(collector.limit(), 100);
/// ```
#[derive(Debug)]
pub struct RerankCollector {
    window: usize,
    limit: usize,
    top_docs: TopDocs,
}

impl RerankCollector {
    /// Collect `max(window, top_n)` candidates (at least 1).
    pub fn new(window: usize, top_n: usize) -> Self {
        let limit = window.max(top_n).max(1);
        RerankCollector {
            window,
            limit,
            top_docs: TopDocs::with_limit(limit),
        }
    }

    /// The rerank window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// How many candidates are collected.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Collector for RerankCollector {
    type Fruit = Candidates;
    type Child = <TopDocs as Collector>::Child;

    fn for_segment(
        &self,
        segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        self.top_docs.for_segment(segment_local_id, segment)
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(
        &self,
        segment_fruits: Vec<<Self::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Candidates> {
        self.top_docs.merge_fruits(segment_fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<<Self::Child as SegmentCollector>::Fruit> {
        self.top_docs.collect_segment(weight, segment_ord, reader)
    }
}
