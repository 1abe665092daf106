//! How the second stage gets each candidate's document and the text its reranker reads:
//! [`DocLoader`], with [`StoredText`] for named stored fields and closures for anything else.

use std::borrow::Cow;

use tantivy::schema::{Field, FieldType, Schema, Value};
use tantivy::{DocAddress, Searcher, TantivyDocument};

use crate::error::{BoxError, Result, SearchError};
use crate::stored::{read_document, Walked};

/// Loads a candidate's document from the searcher that found it and gives the text the
/// reranker reads. Implemented by [`StoredText`] (named stored text fields, joined), by the
/// article index's [`ArticleLoader`](crate::ArticleLoader), and by every closure
/// `Fn(&Searcher, DocAddress) -> Result<String, E>`:
///
/// ```
/// use tantivy::{DocAddress, Searcher};
/// use tantivy_rerank_search::DocLoader;
/// // Text from anywhere: here, a made-up description of the address.
/// let describe = |_s: &Searcher, a: DocAddress| {
///     Ok::<_, std::convert::Infallible>(format!("segment {} doc {}", a.segment_ord, a.doc_id))
/// };
/// # fn takes(_: &impl DocLoader<Doc = String>) {}
/// takes(&describe);
/// ```
pub trait DocLoader: Send + Sync {
    /// What a hit carries: the loaded document.
    type Doc: Send + Sync;

    /// Load the document at `address` of `searcher`.
    fn load(&self, searcher: &Searcher, address: DocAddress) -> Result<Self::Doc, BoxError>;

    /// The text of `doc` that the reranker reads.
    fn text<'d>(&self, doc: &'d Self::Doc) -> Cow<'d, str>;
}

impl<F, E> DocLoader for F
where
    F: Fn(&Searcher, DocAddress) -> Result<String, E> + Send + Sync,
    E: Into<BoxError>,
{
    type Doc = String;

    fn load(&self, searcher: &Searcher, address: DocAddress) -> Result<String, BoxError> {
        self(searcher, address).map_err(Into::into)
    }

    fn text<'d>(&self, doc: &'d String) -> Cow<'d, str> {
        Cow::Borrowed(doc)
    }
}

/// The text of named stored text fields, joined with a separator (default `"\n"`). Every
/// value of a multi-valued field is taken, in order; empty values are left out. A document
/// without any of the fields has an empty text (the reranker still scores it).
///
/// ```
/// use tantivy::schema::{Schema, STORED, TEXT};
/// use tantivy_rerank_search::StoredText;
/// let mut builder = Schema::builder();
/// builder.add_text_field("headline", TEXT | STORED);
/// builder.add_text_field("content", TEXT | STORED);
/// let schema = builder.build();
/// let text = StoredText::new(&schema, ["headline", "content"])?.separator(". ");
/// assert_eq!(text.fields(), ["headline", "content"]);
/// assert!(StoredText::new(&schema, ["missing"]).is_err());
/// # Ok::<(), tantivy_rerank_search::SearchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoredText {
    fields: Vec<(Field, String)>,
    separator: String,
}

impl StoredText {
    /// Read `names` from `schema`. Each must be a stored text field
    /// ([`SearchError::UnusableField`] otherwise, naming it), and at least one is needed.
    pub fn new<I, S>(schema: &Schema, names: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut fields = Vec::new();
        for name in names {
            let name = name.as_ref();
            let unusable = |reason: &str| SearchError::UnusableField {
                field: name.to_string(),
                reason: reason.to_string(),
            };
            let field = schema
                .get_field(name)
                .map_err(|_| unusable("the schema has no such field"))?;
            let entry = schema.get_field_entry(field);
            if !matches!(entry.field_type(), FieldType::Str(_)) {
                return Err(unusable("it is not a text field"));
            }
            if !entry.is_stored() {
                return Err(unusable(
                    "it is not stored, so its text cannot be read back",
                ));
            }
            fields.push((field, name.to_string()));
        }
        if fields.is_empty() {
            return Err(SearchError::InvalidOption {
                option: "StoredText fields",
                value: "[]".into(),
                reason: "name at least one stored text field",
            });
        }
        Ok(StoredText {
            fields,
            separator: "\n".into(),
        })
    }

    /// Join the fields' values with `separator`.
    pub fn separator(mut self, separator: impl Into<String>) -> Self {
        self.separator = separator.into();
        self
    }

    /// The field names, in reading order.
    pub fn fields(&self) -> Vec<&str> {
        self.fields.iter().map(|(_, n)| n.as_str()).collect()
    }

    /// The joined text of a stored document.
    pub fn text_of(&self, doc: &TantivyDocument) -> String {
        let mut out = String::new();
        for (field, _) in &self.fields {
            for value in doc.get_all(*field) {
                if let Some(s) = value.as_str().filter(|s| !s.is_empty()) {
                    if !out.is_empty() {
                        out.push_str(&self.separator);
                    }
                    out.push_str(s);
                }
            }
        }
        out
    }
}

impl DocLoader for StoredText {
    type Doc = String;

    fn load(&self, searcher: &Searcher, address: DocAddress) -> Result<String, BoxError> {
        let wanted: Vec<Field> = self.fields.iter().map(|(f, _)| *f).collect();
        match read_document(searcher, address, &wanted)? {
            Walked::Values(values) => {
                let mut out = String::new();
                for s in values.iter().flatten().filter(|s| !s.is_empty()) {
                    if !out.is_empty() {
                        out.push_str(&self.separator);
                    }
                    out.push_str(s);
                }
                Ok(out)
            }
            Walked::Nested => {
                let doc: TantivyDocument = searcher.doc(address)?;
                Ok(self.text_of(&doc))
            }
        }
    }

    fn text<'d>(&self, doc: &'d String) -> Cow<'d, str> {
        Cow::Borrowed(doc)
    }
}

/// The first string value of `field` in `doc`, if any.
pub(crate) fn first_str(doc: &TantivyDocument, field: Field) -> Option<&str> {
    doc.get_first(field).and_then(|v| v.as_str())
}
