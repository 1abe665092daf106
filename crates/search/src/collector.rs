//! [`RerankCollector`]: a tantivy collector that reranks what a child collector keeps.

use std::sync::Mutex;
use std::time::Instant;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, TantivyError};

use crate::cascade::{check_top_n, Cascade};
use crate::error::Result;
use crate::loader::DocLoader;
use crate::rerank::RerankResults;

/// A first-stage score that orders candidates: tantivy's `Score`, or the value of a fast
/// field a `TopDocs` orders by.
pub trait FirstStageScore {
    /// The score as an `f32` (what hits report as `first_stage_score`).
    fn as_f32(&self) -> f32;
}

impl FirstStageScore for f32 {
    fn as_f32(&self) -> f32 {
        *self
    }
}

impl FirstStageScore for f64 {
    fn as_f32(&self) -> f32 {
        *self as f32
    }
}

impl FirstStageScore for u64 {
    fn as_f32(&self) -> f32 {
        *self as f32
    }
}

impl FirstStageScore for i64 {
    fn as_f32(&self) -> f32 {
        *self as f32
    }
}

/// A missing fast-field value ranks as the lowest score.
impl<T: FirstStageScore> FirstStageScore for Option<T> {
    fn as_f32(&self) -> f32 {
        self.as_ref().map_or(f32::MIN, T::as_f32)
    }
}

/// A tantivy [`Collector`] that runs a [`Cascade`] on the best documents of a child
/// collector, the way tantivy's own adaptors wrap [`TopDocs`](tantivy::collector::TopDocs):
/// the child collects per segment (keeping its pruning), its fruits are merged once, the
/// candidates' documents are loaded with a [`DocLoader`], and each stage makes one batched
/// model call for the query (see [`Cascade::collector`]).
///
/// Its fruit is the second stage's own result: `searcher.search(..)` fails with a tantivy
/// error when collection fails, and gives `Err` of [`SearchError`](crate::SearchError) when
/// loading or reranking does. The latency budget and the `retrieve` timing count from the
/// first segment collected.
///
/// ```
/// use tantivy::collector::TopDocs;
/// use tantivy::query::{AllQuery};
/// use tantivy::schema::{Schema, STORED, TEXT};
/// use tantivy::{doc, Index};
/// use tantivy_rerank_search::{Cascade, StoredText};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut builder = Schema::builder();
/// let body = builder.add_text_field("body", TEXT | STORED);
/// let index = Index::create_in_ram(builder.build());
/// let mut writer = index.writer(15_000_000)?;
/// for text in ["short", "a longer text", "the longest text of all"] {
///     writer.add_document(doc!(body => text))?;
/// }
/// writer.commit()?;
/// let searcher = index.reader()?.searcher();
///
/// let longest = |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(t.iter().map(|t| t.len() as f32).collect());
/// let cascade = Cascade::of(longest);
/// let text = StoredText::new(&index.schema(), ["body"])?;
/// let collector = cascade.collector(TopDocs::with_limit(10), &searcher, "text", &text, 2);
/// let results = searcher.search(&AllQuery, &collector)??;
/// assert_eq!(results.hits.len(), 2);
/// assert_eq!(results.hits[0].doc, "the longest text of all");
/// # Ok(()) }
/// ```
pub struct RerankCollector<'c, 'a, C, L> {
    cascade: &'c Cascade<'a>,
    child: C,
    searcher: &'c tantivy::Searcher,
    query: &'c str,
    loader: &'c L,
    top_n: usize,
    started: Mutex<Option<Instant>>,
}

impl<'a> Cascade<'a> {
    /// A tantivy collector that runs this cascade over the top documents of `child` (any
    /// collector whose fruit is `Vec<(score, DocAddress)>`, e.g. [`TopDocs`](tantivy::collector::TopDocs)):
    /// per-segment collection by `child`, one merge, then one batched model call per stage.
    /// `searcher` must be the one that runs the search (it is checked).
    pub fn collector<'c, C, L>(
        &'c self,
        child: C,
        searcher: &'c tantivy::Searcher,
        query: &'c str,
        loader: &'c L,
        top_n: usize,
    ) -> RerankCollector<'c, 'a, C, L>
    where
        L: DocLoader,
    {
        RerankCollector::new(self, child, searcher, query, loader, top_n)
    }
}

impl<'c, 'a, C, L> RerankCollector<'c, 'a, C, L> {
    pub(crate) fn new(
        cascade: &'c Cascade<'a>,
        child: C,
        searcher: &'c tantivy::Searcher,
        query: &'c str,
        loader: &'c L,
        top_n: usize,
    ) -> Self {
        RerankCollector {
            cascade,
            child,
            searcher,
            query,
            loader,
            top_n,
            started: Mutex::new(None),
        }
    }

    fn mark_start(&self) {
        if let Ok(mut s) = self.started.lock() {
            s.get_or_insert_with(Instant::now);
        }
    }
}

/// The child's segment collector, remembering which segment it collected.
pub struct TaggedSegmentCollector<S> {
    inner: S,
    segment: (SegmentOrdinal, tantivy::index::SegmentId),
}

impl<S: SegmentCollector> SegmentCollector for TaggedSegmentCollector<S> {
    type Fruit = (S::Fruit, (SegmentOrdinal, tantivy::index::SegmentId));

    fn collect(&mut self, doc: DocId, score: Score) {
        self.inner.collect(doc, score);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        self.inner.collect_block(docs);
    }

    fn harvest(self) -> Self::Fruit {
        (self.inner.harvest(), self.segment)
    }
}

impl<C, L, S> Collector for RerankCollector<'_, '_, C, L>
where
    C: Collector<Fruit = Vec<(S, DocAddress)>>,
    S: FirstStageScore + Send + 'static,
    L: DocLoader,
    L::Doc: Sync + 'static,
{
    type Fruit = Result<RerankResults<L::Doc>>;
    type Child = TaggedSegmentCollector<C::Child>;

    fn for_segment(
        &self,
        segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        self.mark_start();
        Ok(TaggedSegmentCollector {
            inner: self.child.for_segment(segment_local_id, segment)?,
            segment: (segment_local_id, segment.segment_id()),
        })
    }

    fn requires_scoring(&self) -> bool {
        self.child.requires_scoring()
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<<Self::Child as SegmentCollector>::Fruit> {
        self.mark_start();
        // The child's own loop keeps its optimisations (block-max pruning in `TopDocs`).
        let fruit = self.child.collect_segment(weight, segment_ord, reader)?;
        Ok((fruit, (segment_ord, reader.segment_id())))
    }

    fn merge_fruits(
        &self,
        segment_fruits: Vec<<Self::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Self::Fruit> {
        let mut fruits = Vec::with_capacity(segment_fruits.len());
        for (fruit, (ord, segment)) in segment_fruits {
            fruits.push(fruit);
            // Each fruit's addresses must mean the same documents in our searcher.
            let same = self
                .searcher
                .segment_readers()
                .get(ord as usize)
                .is_some_and(|r| r.segment_id() == segment);
            if !same {
                return Err(TantivyError::InvalidArgument(format!(
                    "RerankCollector: segment {} was collected by a searcher other than the one \
                     the collector was given; pass the searcher that runs the search",
                    segment.short_uuid_string()
                )));
            }
        }
        let merged = self.child.merge_fruits(fruits)?;
        let started = self
            .started
            .lock()
            .ok()
            .and_then(|s| *s)
            .unwrap_or_else(Instant::now);
        let retrieve = started.elapsed();
        let candidates: Vec<(f32, DocAddress)> =
            merged.iter().map(|(s, a)| (s.as_f32(), *a)).collect();
        let checked = check_top_n(self.top_n).and_then(|()| self.cascade.validate());
        Ok(checked.and_then(|()| {
            self.cascade.rerank_since(
                self.searcher,
                self.query,
                &candidates,
                self.loader,
                self.top_n,
                started,
                retrieve,
                None,
            )
        }))
    }
}
