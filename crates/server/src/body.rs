//! Request bodies before the handlers read them: the payload limit on the declared length
//! (answered before the body is sent when the client waits for `100 Continue`), and
//! `Content-Encoding: gzip` or `deflate` decoded with the limit on the decoded size.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::error::{ApiError, ErrorType};
use crate::AppState;

/// How much of an oversized body is read (and dropped) before the 413 answer, so that a
/// client that writes its whole body before reading can read the answer instead of finding
/// the connection closed mid-write.
const DRAIN_MAX: usize = 64 << 20;

/// A content coding the service decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    /// zlib-wrapped deflate, as RFC 9110 defines it; raw deflate streams, which some
    /// clients send under this name, are read too.
    Deflate,
}

/// The coding a `Content-Encoding` value names: `None` for none (or `identity`), an error
/// naming the value for anything else.
fn coding(value: Option<&HeaderValue>) -> Result<Option<Coding>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("(not text)").trim();
    let codings: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .collect();
    match codings.as_slice() {
        [] => Ok(None),
        [c] if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") => {
            Ok(Some(Coding::Gzip))
        }
        [c] if c.eq_ignore_ascii_case("deflate") => Ok(Some(Coding::Deflate)),
        _ => Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_type: ErrorType::Validation,
            message: format!(
                "Content-Encoding `{text}` is not supported: send the body as it is (identity), or compressed with gzip or deflate"
            ),
        }),
    }
}

fn too_large(message: String) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error_type: ErrorType::Validation,
        message,
    }
}

/// Read and drop up to `max` bytes of `body`.
async fn drain(body: Body, max: usize) {
    let mut body = body;
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len());
        if read > max {
            break;
        }
    }
}

/// The answer with `Connection: close`: the body was not read, so the connection cannot
/// carry another request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `data` decoded from `coding`, at most `limit` bytes of it: more is 413 (a zip bomb stops
/// at the limit), a broken stream 400.
fn decode(coding: Coding, data: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let read = match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(data)
            .take(cap)
            .read_to_end(&mut out),
        // A zlib stream starts with a header whose two bytes, read as a big-endian number,
        // are a multiple of 31 with compression method 8; anything else is raw deflate.
        Coding::Deflate => match data {
            [cmf, flg, ..]
                if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 =>
            {
                flate2::read::ZlibDecoder::new(data)
                    .take(cap)
                    .read_to_end(&mut out)
            }
            _ => flate2::read::DeflateDecoder::new(data)
                .take(cap)
                .read_to_end(&mut out),
        },
    };
    let name = match coding {
        Coding::Gzip => "gzip",
        Coding::Deflate => "deflate",
    };
    if let Err(e) = read {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: ErrorType::Validation,
            message: format!("the request body is not valid {name} data: {e}"),
        });
    }
    if out.len() > limit {
        return Err(too_large(format!(
            "the request body decodes ({name}) to more than the payload limit of {limit} bytes"
        )));
    }
    Ok(out)
}

/// The payload limit and content codings, before any handler reads the body:
///
/// - a declared length over the limit is 413: at once, without reading the body, when the
///   client sent `Expect: 100-continue` (it sends the body only after a `100 Continue`, which
///   it is thus never sent); else after draining the body (up to [`DRAIN_MAX`]);
/// - `Content-Encoding: gzip` (or `x-gzip`) and `deflate` bodies are read (the compressed
///   size under the limit too), decoded, and handed on decoded; more than the limit decoded
///   is 413, other codings 415. A body without a declared length is cut at the limit by the
///   JSON reader (also 413).
pub(crate) async fn read_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.options.payload_limit;
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        let error = too_large(format!(
            "the request body of {declared} bytes is over the payload limit of {limit} bytes"
        ));
        if expects_continue {
            return closing(error);
        }
        drain(request.into_body(), DRAIN_MAX).await;
        return error.into_response();
    }
    let coding = match coding(headers.get(header::CONTENT_ENCODING)) {
        Ok(None) => return next.run(request).await,
        Ok(Some(c)) => c,
        Err(error) => {
            if expects_continue {
                return closing(error);
            }
            drain(request.into_body(), limit).await;
            return error.into_response();
        }
    };
    let (mut parts, body) = request.into_parts();
    let compressed = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let error = if e.is::<http_body_util::LengthLimitError>() {
                too_large(format!(
                    "the compressed request body is over the payload limit of {limit} bytes"
                ))
            } else {
                ApiError {
                    status: StatusCode::BAD_REQUEST,
                    error_type: ErrorType::Validation,
                    message: format!("reading the request body failed: {e}"),
                }
            };
            return closing(error);
        }
    };
    let decoded = match decode(coding, &compressed, limit) {
        Ok(d) => d,
        Err(error) => return error.into_response(),
    };
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(decoded.len()));
    next.run(Request::from_parts(parts, Body::from(Bytes::from(decoded))))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codings_are_named_or_refused() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(coding(None).unwrap(), None);
        assert_eq!(coding(Some(&v("identity"))).unwrap(), None);
        assert_eq!(coding(Some(&v("GZIP"))).unwrap(), Some(Coding::Gzip));
        assert_eq!(coding(Some(&v("x-gzip"))).unwrap(), Some(Coding::Gzip));
        assert_eq!(coding(Some(&v("deflate"))).unwrap(), Some(Coding::Deflate));
        for bad in ["br", "zstd", "gzip, deflate", "compress"] {
            let e = coding(Some(&v(bad))).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }

    #[test]
    fn bodies_decode_within_the_limit_and_bombs_stop_at_it() {
        let text = br#"{"query": "q", "texts": ["a"]}"#;
        assert_eq!(decode(Coding::Gzip, &gzip(text), 100).unwrap(), text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(text).unwrap();
        assert_eq!(
            decode(Coding::Deflate, &z.finish().unwrap(), 100).unwrap(),
            text
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(text).unwrap();
        assert_eq!(
            decode(Coding::Deflate, &raw.finish().unwrap(), 100).unwrap(),
            text
        );
        // 100 MB of zeros in about 100 kB: refused once 1 MB is decoded.
        let bomb = gzip(&vec![0u8; 100 << 20]);
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let e = decode(Coding::Gzip, &bomb, 1 << 20).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Exactly the limit is fine.
        assert_eq!(
            decode(Coding::Gzip, &gzip(&[7; 1000]), 1000).unwrap().len(),
            1000
        );
        let e = decode(Coding::Gzip, b"not gzip at all", 100).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("gzip"), "{}", e.message);
    }
}
