//! Reading stored text fields with every length checked against the bytes that hold it.
//!
//! tantivy's document deserializer trusts the lengths written in the doc store: a corrupted
//! length makes it reserve that many bytes before reading them, and an allocation of
//! petabytes aborts the whole process (Rust cannot turn a failed allocation into a panic or
//! an error). So [`read_text_fields`] walks the document's bytes itself (tantivy's binary
//! document format: a VInt value count, then per value a little-endian `u32` field id, a type
//! code and the value: text, facets and bytes as a VInt byte length and the bytes, numbers,
//! dates, booleans and IP addresses in fixed sizes) and refuses any length that runs past
//! the end. Nested values (arrays, objects, pre-tokenised text) are left to tantivy.

use tantivy::index::SegmentComponent;
use tantivy::schema::Field;
use tantivy::{DocAddress, Index, Searcher};

use crate::error::BoxError;

/// tantivy's doc store footer: version (u32), offset of the skip index (u64), compressor
/// (u8), 15 reserved bytes.
const STORE_FOOTER: usize = 28;

/// Check what tantivy sizes allocations by when it opens each segment's doc store: the skip
/// index's offset and its count of layers (a corrupted count made tantivy reserve
/// petabytes and abort). Reads only the footer and the skip index's first bytes.
pub(crate) fn check_store_footers(index: &Index) -> Result<(), String> {
    let metas = index
        .searchable_segment_metas()
        .map_err(|e| format!("listing segments: {e}"))?;
    for meta in metas {
        let name = meta.relative_path(SegmentComponent::Store);
        let name = name.display();
        let file = index
            .segment(meta)
            .open_read(SegmentComponent::Store)
            .map_err(|e| format!("{name}: {e}"))?;
        let len = usize::try_from(file.num_bytes().get_bytes()).unwrap_or(usize::MAX);
        let Some(body) = len.checked_sub(STORE_FOOTER) else {
            return Err(format!("{name}: {len} bytes, shorter than its footer"));
        };
        let footer = file
            .read_bytes_slice(body..len)
            .map_err(|e| format!("{name}: {e}"))?;
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&footer.as_slice()[4..12]);
        let offset = u64::from_le_bytes(offset);
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o <= body)
            .ok_or_else(|| format!("{name}: skip index at {offset}, past the end ({body})"))?;
        let head = file
            .read_bytes_slice(start..body.min(start + 10))
            .map_err(|e| format!("{name}: {e}"))?;
        let mut at = 0;
        let layers = read_vint(head.as_slice(), &mut at).map_err(|e| format!("{name}: {e}"))?;
        if layers > (body - start) as u64 {
            return Err(format!(
                "{name}: the skip index claims {layers} layers in {} bytes",
                body - start
            ));
        }
    }
    Ok(())
}

/// Walk the stored document at `address` (see [`read_text_fields`]).
pub(crate) fn read_document(
    searcher: &Searcher,
    address: DocAddress,
    wanted: &[Field],
) -> Result<Walked, BoxError> {
    let segment = searcher
        .segment_readers()
        .get(address.segment_ord as usize)
        .ok_or_else(|| format!("no segment {} in this searcher", address.segment_ord))?;
    let bytes = segment
        .get_store_reader(1)?
        .get_document_bytes(address.doc_id)?;
    Ok(read_text_fields(bytes.as_slice(), wanted)
        .map_err(|problem| format!("stored document corrupted: {problem}"))?)
}

/// tantivy's type codes (`schema::document::type_codes`).
const TEXT_CODE: u8 = 0;

/// The payload size of a value type that is not text, where the walk can skip it.
enum Payload {
    Fixed(usize),
    Sized,
}

fn payload(code: u8) -> Option<Payload> {
    match code {
        // u64, i64, date, f64
        1 | 2 | 5 | 6 => Some(Payload::Fixed(8)),
        // facet, bytes
        3 | 4 => Some(Payload::Sized),
        // bool
        9 => Some(Payload::Fixed(1)),
        // IP address (u128)
        10 => Some(Payload::Fixed(16)),
        // null
        11 => Some(Payload::Fixed(0)),
        _ => None,
    }
}

/// What the walk found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Walked {
    /// Every text value of each wanted field, in stored order.
    Values(Vec<Vec<String>>),
    /// The document holds a nested value (array, object, pre-tokenised text) the walk does
    /// not size; the caller reads the document with tantivy's own deserializer.
    Nested,
}

/// Every text value of each of `wanted` in one stored document, or a description of what
/// is corrupted.
pub(crate) fn read_text_fields(bytes: &[u8], wanted: &[Field]) -> Result<Walked, String> {
    let mut at = 0usize;
    let values = read_vint(bytes, &mut at)?;
    // Every value takes at least 5 bytes (a field id and a type code).
    let left = bytes.len() - at;
    if values > (left / 5) as u64 {
        return Err(format!(
            "the document claims {values} values in {left} bytes"
        ));
    }
    let mut found: Vec<Vec<String>> = vec![Vec::new(); wanted.len()];
    for _ in 0..values {
        let id = take(bytes, &mut at, 4, "a field id")?;
        let field = Field::from_field_id(u32::from_le_bytes([id[0], id[1], id[2], id[3]]));
        let code = take(bytes, &mut at, 1, "a type code")?[0];
        if code != TEXT_CODE {
            match payload(code) {
                Some(Payload::Fixed(n)) => {
                    take(bytes, &mut at, n, "a value")?;
                }
                Some(Payload::Sized) => {
                    let len = read_len(bytes, &mut at)?;
                    take(bytes, &mut at, len, "a value")?;
                }
                None => return Ok(Walked::Nested),
            }
            continue;
        }
        let len = read_len(bytes, &mut at)?;
        let text = take(bytes, &mut at, len, "a text value")?;
        let text =
            std::str::from_utf8(text).map_err(|e| format!("a text value is not UTF-8: {e}"))?;
        for (slot, _) in wanted.iter().enumerate().filter(|(_, &w)| w == field) {
            found[slot].push(text.to_string());
        }
    }
    Ok(Walked::Values(found))
}

/// A value's byte length, refused when more bytes than are left.
fn read_len(bytes: &[u8], at: &mut usize) -> Result<usize, String> {
    let len = read_vint(bytes, at)?;
    let left = bytes.len() - *at;
    usize::try_from(len)
        .ok()
        .filter(|&l| l <= left)
        .ok_or_else(|| format!("a value claims {len} bytes where {left} are left"))
}

fn take<'b>(bytes: &'b [u8], at: &mut usize, n: usize, what: &str) -> Result<&'b [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("{what} runs past the end of the document"))?;
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

/// tantivy's VInt: 7 bits per byte, least significant first, the last byte's high bit set.
fn read_vint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*at)
            .ok_or_else(|| "a length runs past the end of the document".to_string())?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 != 0 {
            return Ok(value);
        }
    }
    Err("a length longer than ten bytes".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::{Schema, STORED, STRING, TEXT};
    use tantivy::{doc, Index, TantivyDocument};

    /// A real segment's stored bytes for a document with the given fields.
    fn stored_bytes(id: &str, title: &str, body: &str) -> (Vec<u8>, [Field; 3]) {
        let mut builder = Schema::builder();
        let f_id = builder.add_text_field("id", STRING | STORED);
        let f_title = builder.add_text_field("title", TEXT | STORED);
        let f_body = builder.add_text_field("body", TEXT | STORED);
        let index = Index::create_in_ram(builder.build());
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut d: TantivyDocument = doc!(f_id => id, f_body => body);
        if !title.is_empty() {
            d.add_text(f_title, title);
        }
        writer.add_document(d).unwrap();
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let store = searcher.segment_reader(0).get_store_reader(1).unwrap();
        let bytes = store.get_document_bytes(0).unwrap();
        (bytes.as_slice().to_vec(), [f_id, f_title, f_body])
    }

    #[test]
    fn store_footers_of_a_sound_index_pass_and_a_blown_up_layer_count_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = Schema::builder();
        let f = builder.add_text_field("body", TEXT | STORED);
        let index = Index::create_in_dir(dir.path(), builder.build()).unwrap();
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.add_document(doc!(f => "cats purr")).unwrap();
        writer.commit().unwrap();
        drop(writer);
        check_store_footers(&index).unwrap();
        let store = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "store"))
            .unwrap();
        let mut bytes = std::fs::read(&store).unwrap();
        // tantivy's own footer (version, CRC) follows the doc store's; find the store footer
        // by the skip index offset it holds.
        let managed = bytes.len()
            - (0..bytes.len())
                .rev()
                .find(|&end| {
                    end >= STORE_FOOTER && {
                        let f = &bytes[end - STORE_FOOTER..end];
                        f[..4] == [2, 0, 0, 0] && f[13..] == [0; 15]
                    }
                })
                .unwrap();
        let footer = bytes.len() - managed - STORE_FOOTER;
        let offset = u64::from_le_bytes(bytes[footer + 4..footer + 12].try_into().unwrap());
        bytes[offset as usize] = 0x7f; // the layer count no longer ends where it did
        bytes[offset as usize + 1] = 0x7f;
        std::fs::write(&store, &bytes).unwrap();
        let reopened = Index::open_in_dir(dir.path()).unwrap();
        let err = check_store_footers(&reopened).unwrap_err();
        assert!(err.contains(".store"), "{err}");
    }

    #[test]
    fn reads_what_tantivy_wrote() {
        let (bytes, fields) = stored_bytes("a1", "Cats", "Cats purr. ünïcödé");
        assert_eq!(
            read_text_fields(&bytes, &fields).unwrap(),
            Walked::Values(vec![
                vec!["a1".to_string()],
                vec!["Cats".to_string()],
                vec!["Cats purr. ünïcödé".to_string()]
            ])
        );
        let (bytes, fields) = stored_bytes("a2", "", "x");
        assert_eq!(
            read_text_fields(&bytes, &fields).unwrap(),
            Walked::Values(vec![vec!["a2".to_string()], vec![], vec!["x".to_string()]])
        );
    }

    #[test]
    fn lengths_past_the_end_are_refused_without_reserving_them() {
        let (bytes, fields) = stored_bytes("a1", "Cats", "Cats purr");
        // A value count of about 2^50.
        let mut huge = vec![0x7f; 7];
        huge.push(0x81);
        huge.extend_from_slice(&bytes[1..]);
        let err = read_text_fields(&huge, &fields).unwrap_err();
        assert!(err.contains("claims"), "{err}");
        // id (4) + type code (1) put the first text length at offset 6.
        let mut long = bytes.clone();
        long[6] = 0x7f;
        long.insert(7, 0xff);
        let err = read_text_fields(&long, &fields).unwrap_err();
        assert!(err.contains("bytes where"), "{err}");
        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(
                read_text_fields(&bytes[..cut], &fields).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn values_that_are_not_text_are_skipped_and_nested_ones_hand_over_to_tantivy() {
        let mut bytes = vec![0x83]; // three values
        bytes.extend(0u32.to_le_bytes());
        bytes.push(1); // u64
        bytes.extend(7u64.to_le_bytes());
        bytes.extend(1u32.to_le_bytes());
        bytes.push(4); // bytes
        bytes.extend([0x82, 9, 9]);
        bytes.extend(0u32.to_le_bytes());
        bytes.push(TEXT_CODE);
        bytes.extend([0x81, b'z']);
        let wanted = [Field::from_field_id(0)];
        assert_eq!(
            read_text_fields(&bytes, &wanted).unwrap(),
            Walked::Values(vec![vec!["z".to_string()]])
        );
        let mut nested = vec![0x81];
        nested.extend(0u32.to_le_bytes());
        nested.extend([12, 0x80]); // an empty array
        assert_eq!(read_text_fields(&nested, &wanted).unwrap(), Walked::Nested);
    }
}
