//! Checks of a query string before tantivy's query parser sees it: the parser recurses once
//! per parenthesis and per `NOT`, so a deeply nested query overflows the stack and aborts
//! the process; a boost written out in full (`term^1e39`) turns every score infinite; and
//! the lenient parser reads fuzzy terms and wildcards (`cell~2`, `cel*`, `body:*`) as
//! something else or drops them, so they would silently match nothing.

use crate::error::{Result, SearchError};

/// The deepest a query may nest: parentheses plus stacked `NOT`s. Real queries stay far
/// below; tantivy's parser overflows a 2 MiB thread stack past a few thousand.
pub const MAX_QUERY_DEPTH: usize = 64;

/// The largest boost a query may give a clause (`term^2`), in size: beyond it BM25 scores
/// near f32's limit, and sums of them overflow to infinity.
pub const MAX_QUERY_BOOST: f64 = 1e6;

/// Refuse a query tantivy's parser cannot take safely: nesting deeper than
/// [`MAX_QUERY_DEPTH`] (parentheses, also inside quotes, plus stacked `NOT`s), or a boost
/// (`^N`) that is not a finite number of at most [`MAX_QUERY_BOOST`]; and syntax the
/// lenient parser would quietly turn into no match: a fuzzy term (`cell~2`), a wildcard in a
/// word (`cel*`, `ce?l`), a field wildcard (`body:*`) or a phrase prefix of one word
/// (`"cel"*`). A lone `*` (every document), `"a phrase"~2` (slop), `"big bad wo"*` (phrase
/// prefix) and a question mark ending a word stay as they are. Called by
/// [`ArticleIndex::search`](crate::ArticleIndex::search); call it yourself before your own
/// `QueryParser` on text that users type.
///
/// ```
/// use tantivy_rerank_search::check_query;
/// assert!(check_query("(cats OR dogs) AND NOT birds^2").is_ok());
/// assert!(check_query(&"(".repeat(10_000)).is_err());
/// assert!(check_query("cats^1e39").is_err());
/// ```
pub fn check_query(query: &str) -> Result<()> {
    let depth = query_depth(query);
    if depth > MAX_QUERY_DEPTH {
        return Err(SearchError::InvalidQuery {
            reason: format!(
                "it nests {depth} levels deep (parentheses and NOTs); at most {MAX_QUERY_DEPTH}"
            ),
        });
    }
    if let Some(reason) = unsupported_syntax(query) {
        return Err(SearchError::InvalidQuery { reason });
    }
    for boost in boosts(query) {
        // What is no number, tantivy does not read as a boost either.
        let Ok(value) = boost.parse::<f64>() else {
            continue;
        };
        if !(value.is_finite() && value.abs() <= MAX_QUERY_BOOST) {
            return Err(SearchError::InvalidQuery {
                reason: format!(
                    "the boost ^{boost} is not a number of at most {MAX_QUERY_BOOST:e}"
                ),
            });
        }
    }
    Ok(())
}

/// Why the query holds syntax that the lenient parser would turn into no match (see
/// [`check_query`]), naming the offending word; `None` when it holds none.
fn unsupported_syntax(query: &str) -> Option<String> {
    let chars: Vec<(usize, char)> = query.char_indices().collect();
    // Where the current quoted phrase opened, and where the last one closed.
    let (mut open, mut closed): (Option<usize>, Option<(usize, usize)>) = (None, None);
    let word_at = |i: usize| -> &str {
        let start = query[..i]
            .rfind(|c: char| c.is_whitespace() || c == '(' || c == '"')
            .map_or(0, |j| j + 1);
        let end = query[i..]
            .find(|c: char| c.is_whitespace() || c == ')')
            .map_or(query.len(), |j| i + j);
        &query[start..end]
    };
    for (k, &(i, c)) in chars.iter().enumerate() {
        if c == '"' {
            match open.take() {
                Some(start) => closed = Some((start, i)),
                None => open = Some(i),
            }
            continue;
        }
        if open.is_some() {
            continue;
        }
        let before = k.checked_sub(1).map(|j| chars[j].1);
        let after = chars.get(k + 1).map(|&(_, c)| c);
        let after_phrase = before == Some('"') && closed.is_some_and(|(_, end)| end + 1 == i);
        match c {
            '~' if before.is_some_and(char::is_alphanumeric) => {
                return Some(format!(
                    "`{}` is a fuzzy term, which this search does not support: search the word itself (`~N` after a quoted phrase is its slop)",
                    word_at(i)
                ));
            }
            '*' if before == Some(':') => {
                return Some(format!(
                    "`{}` is a field wildcard, which this search does not support: search words of the field (`field:word`), or `*` alone for every document",
                    word_at(i)
                ));
            }
            '*' if after_phrase => {
                let (start, end) = closed.unwrap_or((i, i));
                let phrase = &query[start + 1..end];
                if phrase.split_whitespace().count() < 2 {
                    return Some(format!(
                        "`\"{phrase}\"*` is a phrase prefix of one word, which this search does not support: a phrase prefix needs at least two words (`\"big bad wo\"*`)"
                    ));
                }
            }
            '*' if before.is_some_and(|b| !(b.is_whitespace() || "(+-!".contains(b))) => {
                return Some(format!(
                    "`{}` holds a wildcard, which this search does not support: search whole words, or `*` alone for every document",
                    word_at(i)
                ));
            }
            '?' if before.is_some_and(char::is_alphanumeric)
                && after.is_some_and(char::is_alphanumeric) =>
            {
                return Some(format!(
                    "`{}` holds a wildcard, which this search does not support: search whole words",
                    word_at(i)
                ));
            }
            _ => {}
        }
    }
    None
}

/// Parenthesis depth plus the longest run of `NOT`s (and `-`/`+` signs) in front of a
/// clause, at the deepest point.
fn query_depth(query: &str) -> usize {
    let (mut depth, mut max, mut nots) = (0usize, 0usize, 0usize);
    for word in query.split_whitespace() {
        if word == "NOT" {
            nots += 1;
            max = max.max(depth + nots);
            continue;
        }
        for c in word.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                '-' | '+' | '!' => nots += 1,
                _ => {
                    max = max.max(depth + nots);
                    nots = 0;
                }
            }
            max = max.max(depth + nots);
        }
    }
    max.max(depth + nots)
}

/// The text after each `^` up to the next character that cannot be part of a number.
fn boosts(query: &str) -> impl Iterator<Item = &str> {
    query.match_indices('^').map(move |(i, _)| {
        let rest = &query[i + 1..];
        let end = rest
            .char_indices()
            .find(|&(j, c)| {
                !(c.is_ascii_digit()
                    || c == '.'
                    || c == 'e'
                    || c == 'E'
                    || ((c == '+' || c == '-') && j > 0))
            })
            .map_or(rest.len(), |(j, _)| j);
        &rest[..end]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_parentheses_and_stacked_nots() {
        assert_eq!(query_depth("cats dogs"), 0);
        assert_eq!(query_depth("(cats OR (dogs AND birds))"), 2);
        assert_eq!(query_depth("NOT NOT NOT cats"), 3);
        assert_eq!(query_depth("a AND NOT b AND NOT c"), 1);
        assert_eq!(
            query_depth(&format!("{}a{}", "(".repeat(70), ")".repeat(70))),
            70
        );
        assert_eq!(query_depth(&"NOT ".repeat(100)), 100);
        assert_eq!(query_depth("-(-(-a))"), 5);
        // Unbalanced closing parentheses never go below 0.
        assert_eq!(query_depth(")))(a"), 1);
    }

    #[test]
    fn fuzzy_terms_and_wildcards_are_refused_by_name() {
        for (query, word, kind) in [
            ("cell~2", "cell~2", "fuzzy term"),
            ("dividing cell~ biology", "cell~", "fuzzy term"),
            ("cel*", "cel*", "wildcard"),
            ("(cel* OR nucleus)", "cel*", "wildcard"),
            ("ce?l growth", "ce?l", "wildcard"),
            ("/cel.*/", "/cel.*/", "wildcard"),
            ("body:*", "body:*", "field wildcard"),
            ("cats AND title:*", "title:*", "field wildcard"),
            ("\"cel\"*", "\"cel\"*", "phrase prefix of one word"),
        ] {
            let err = check_query(query)
                .err()
                .unwrap_or_else(|| panic!("{query}: accepted"))
                .to_string();
            assert!(
                err.contains(&format!("`{word}`")) && err.contains(kind),
                "{query}: {err}"
            );
        }
        for fine in [
            "*",
            "cats *",
            "(*)",
            "\"cell divides\"~2",
            "\"big bad wo\"*",
            "what is a cell?",
            "is it? yes",
            "\"a*b and c~2\"",
            "cell^2",
            "-cats",
        ] {
            assert!(check_query(fine).is_ok(), "{fine}: {:?}", check_query(fine));
        }
    }

    #[test]
    fn boosts_are_read_up_to_the_number_end() {
        let got: Vec<&str> = boosts("a^2 b^1e39 c^0.5) d^ e^1e-3x").collect();
        assert_eq!(got, ["2", "1e39", "0.5", "", "1e-3"]);
        assert!(check_query("a^2 b^0.5").is_ok());
        for bad in [
            "a^1e39",
            "a^100000000000000000000000000000000000000000",
            "a^1e7",
            "a^1e400",
        ] {
            let err = check_query(bad).unwrap_err().to_string();
            assert!(err.contains("boost"), "{bad}: {err}");
        }
        // Not numbers: no boost for tantivy either.
        assert!(check_query("a^ b^. c^x").is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any text: the check returns, and what it accepts nests no deeper than the limit.
        #[test]
        fn any_text_is_checked_without_panicking(query in "[ ()NOT+\\-^a-z0-9.eE\"]{0,400}") {
            if check_query(&query).is_ok() {
                proptest::prop_assert!(query_depth(&query) <= MAX_QUERY_DEPTH);
            }
        }

        /// Any text with quotes, wildcards and tildes: the syntax check returns, and never
        /// refuses a text free of `~`, `*` and `?`.
        #[test]
        fn any_wildcard_text_is_checked_without_panicking(query in "[ ()a-zé:\"~*?]{0,200}") {
            let refused = unsupported_syntax(&query);
            if !query.contains(['~', '*', '?']) {
                proptest::prop_assert!(refused.is_none(), "{}: {:?}", query, refused);
            }
        }

        /// Nesting past the limit is always refused, whatever surrounds it.
        #[test]
        fn deep_nesting_is_always_refused(
            extra in 1usize..200,
            before in "[a-z ]{0,20}",
            after in "[a-z )]{0,20}",
        ) {
            let q = format!("{before}{}x{after}", "(".repeat(MAX_QUERY_DEPTH + extra));
            proptest::prop_assert!(check_query(&q).is_err());
        }

        /// Any boost written as a number (plain or with an exponent) is refused exactly when
        /// it is past the limit (or past f64, as `1e400`).
        #[test]
        fn boosts_are_refused_exactly_when_too_large(
            mantissa in 0.0f64..10.0,
            exponent in -320i32..400,
        ) {
            let q = format!("cats^{mantissa}e{exponent}");
            let value: f64 = format!("{mantissa}e{exponent}").parse().unwrap();
            let fine = value.is_finite() && value <= MAX_QUERY_BOOST;
            proptest::prop_assert_eq!(check_query(&q).is_ok(), fine, "{}", q);
            let plain = format!("cats^{}", value);
            if value.is_finite() {
                proptest::prop_assert_eq!(check_query(&plain).is_ok(), fine, "{}", plain);
            }
        }
    }
}
