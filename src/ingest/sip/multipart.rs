//! `multipart/mixed` bodies as SBCs send them with SIPREC INVITEs (RFC 7866 §9):
//! an SDP part and an `rs-metadata` part. Tolerant of what real SBCs do: bare LF
//! line endings, a missing closing delimiter, a preamble, quoted boundaries.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("multipart body without a boundary parameter")]
    NoBoundary,
    #[error("multipart boundary is not found in the body")]
    BoundaryNotFound,
    #[error("multipart body has more than {0} parts")]
    TooManyParts(usize),
}

/// Most parts accepted (SDP, metadata, and a few spare).
pub const MAX_PARTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// Media type, lower-cased, without parameters (`application/sdp`).
    pub content_type: Option<String>,
    pub body: &'a [u8],
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The `boundary` parameter of a `Content-Type` value (quotes removed).
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
    })
}

/// Splits `body` on `--boundary` delimiter lines.
pub fn split<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, MultipartError> {
    if boundary.is_empty() {
        return Err(MultipartError::NoBoundary);
    }
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    // Delimiter positions: at the start of the body or of a line.
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(off) = find(&body[i..], delim) {
        let at = i + off;
        if at == 0 || body[at - 1] == b'\n' {
            starts.push(at);
        }
        i = at + delim.len();
    }
    if starts.is_empty() {
        return Err(MultipartError::BoundaryNotFound);
    }
    let mut parts = Vec::new();
    for (n, &at) in starts.iter().enumerate() {
        let after = at + delim.len();
        if body[after..].starts_with(b"--") {
            break; // closing delimiter
        }
        // Skip the rest of the delimiter line (transport padding, then CRLF or LF).
        let Some(eol) = body[after..].iter().position(|&b| b == b'\n') else { break };
        let content_start = after + eol + 1;
        let mut content_end = starts.get(n + 1).copied().unwrap_or(body.len());
        // The line break before the next delimiter belongs to the delimiter.
        if starts.get(n + 1).is_some() {
            if content_end > content_start && body[content_end - 1] == b'\n' {
                content_end -= 1;
            }
            if content_end > content_start && body[content_end - 1] == b'\r' {
                content_end -= 1;
            }
        }
        let content = &body[content_start..content_end.max(content_start)];
        if parts.len() == MAX_PARTS {
            return Err(MultipartError::TooManyParts(MAX_PARTS));
        }
        parts.push(parse_part(content));
    }
    Ok(parts)
}

fn parse_part(content: &[u8]) -> Part<'_> {
    // Headers end at the first empty line (CRLF CRLF or LF LF); a part may have none.
    let mut content_type = None;
    let mut pos = 0;
    let mut body_start = 0;
    // No line end: no headers, all body (unless it is a lone header).
    while let Some(eol) = content[pos..].iter().position(|&b| b == b'\n') {
        let line = &content[pos..pos + eol];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            body_start = pos + eol + 1;
            break;
        }
        let text = String::from_utf8_lossy(line);
        match text.split_once(':') {
            Some((name, value)) if is_header_name(name) => {
                let name = name.trim();
                if name.eq_ignore_ascii_case("content-type") || name == "c" {
                    content_type = Some(media_type(value));
                }
            }
            // Not a header: the part has no header block.
            _ => {
                body_start = 0;
                content_type = None;
                break;
            }
        }
        pos += eol + 1;
    }
    Part { content_type, body: &content[body_start..] }
}

fn is_header_name(s: &str) -> bool {
    let s = s.trim_end();
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRLF: &str = "--foobar\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=x\r\n\r\n--foobar\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n<recording/>\r\n--foobar--\r\n";

    #[test]
    fn splits_a_siprec_body() {
        let parts = split(CRLF.as_bytes(), "foobar").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type.as_deref(), Some("application/sdp"));
        assert_eq!(parts[0].body, b"v=0\r\no=x\r\n");
        assert_eq!(parts[1].content_type.as_deref(), Some("application/rs-metadata+xml"));
        assert_eq!(parts[1].body, b"<recording/>");
    }

    #[test]
    fn bare_lf_preamble_and_no_closing_delimiter() {
        let body = "preamble\n--b1\ncontent-type: Application/SDP\n\nv=0\n--b1\nContent-Type: application/rs-metadata+xml\n\n<recording/>\n";
        let parts = split(body.as_bytes(), "b1").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type.as_deref(), Some("application/sdp"));
        assert_eq!(parts[0].body, b"v=0");
        assert_eq!(parts[1].body, b"<recording/>\n");
    }

    #[test]
    fn boundary_parameter() {
        assert_eq!(boundary("multipart/mixed;boundary=foobar").as_deref(), Some("foobar"));
        assert_eq!(boundary("multipart/mixed; Boundary=\"uniqueBoundary\"").as_deref(), Some("uniqueBoundary"));
        assert_eq!(boundary("multipart/mixed"), None);
        assert_eq!(media_type(" Multipart/Mixed ; boundary=x"), "multipart/mixed");
    }

    #[test]
    fn errors() {
        assert_eq!(split(b"no delimiters here", "x"), Err(MultipartError::BoundaryNotFound));
        assert_eq!(split(b"--x\r\n\r\n", ""), Err(MultipartError::NoBoundary));
        let many: String = (0..20).map(|_| "--x\r\n\r\nbody\r\n").collect();
        assert_eq!(split(many.as_bytes(), "x"), Err(MultipartError::TooManyParts(MAX_PARTS)));
    }

    #[test]
    fn delimiter_inside_a_line_is_not_a_delimiter() {
        let body = "--x\r\nContent-Type: text/plain\r\n\r\nsee --x inline\r\n--x--";
        let parts = split(body.as_bytes(), "x").unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].body, b"see --x inline");
    }
}
