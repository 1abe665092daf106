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
/// Any limit is safe, `usize::MAX` included: the buffers are sized by the documents a
/// segment (or the whole search) can return, never by the limit alone.
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
}

impl RerankCollector {
    /// Collect `max(window, top_n)` candidates (at least 1).
    pub fn new(window: usize, top_n: usize) -> Self {
        let limit = window.max(top_n).max(1);
        RerankCollector { window, limit }
    }

    /// A [`TopDocs`] for at most `available` results: tantivy preallocates its limit, so an
    /// unclamped huge limit would overflow or abort on allocation.
    fn top_docs(&self, available: usize) -> TopDocs {
        TopDocs::with_limit(self.limit.min(available).max(1))
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
        self.top_docs(segment_docs(segment))
            .for_segment(segment_local_id, segment)
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(
        &self,
        segment_fruits: Vec<<Self::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Candidates> {
        let available = segment_fruits.iter().map(Vec::len).sum();
        self.top_docs(available).merge_fruits(segment_fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<<Self::Child as SegmentCollector>::Fruit> {
        self.top_docs(segment_docs(reader))
            .collect_segment(weight, segment_ord, reader)
    }
}

/// Live documents of a segment: the most it can contribute.
fn segment_docs(segment: &SegmentReader) -> usize {
    usize::try_from(segment.num_docs()).unwrap_or(usize::MAX)
}
