//! Parsed HTTP heads: a request from a client, a response from a backend. A head is parsed
//! once, when it is complete, and its header lines stay in the bytes that were read: the
//! headers are spans of those bytes, so a head costs the same few allocations however many
//! header lines it has.

use std::ops::Range;

/// The header lines of a head, in order: names (tokens, so ASCII) and raw values (which may
/// hold obs-text), as spans of one byte buffer.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

/// Where one header line's name and value are in [`Headers`]'s buffer.
#[derive(Debug, Clone)]
pub(super) struct Span {
    name: Range<usize>,
    value: Range<usize>,
}

impl Headers {
    /// The header lines at `spans` (from [`spans`]) of `head`, which becomes the buffer.
    pub(super) fn new(head: Vec<u8>, spans: Vec<Span>) -> Headers {
        Headers { bytes: head, spans }
    }

    /// The header lines, in order.
    pub fn iter(&self) -> Lines<'_> {
        Lines {
            bytes: &self.bytes,
            spans: self.spans.iter(),
        }
    }

    /// The bytes the header lines may span (the whole head, as read).
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// The header lines as raw bytes, names unchecked (lookups compare bytes).
    fn raw(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (self.spans.iter()).map(|s| (&self.bytes[s.name.clone()], &self.bytes[s.value.clone()]))
    }

    /// How many header lines there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Keeps the lines for which `keep(name, value)` holds (their bytes stay in the buffer).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        let bytes = &self.bytes;
        self.spans.retain(|s| {
            let name = std::str::from_utf8(&bytes[s.name.clone()]).unwrap_or_default();
            keep(name, &bytes[s.value.clone()])
        });
    }

    /// Appends a line.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.extend_from_slice(value);
        let mid = start + name.len();
        self.spans.push(Span {
            name: start..mid,
            value: mid..self.bytes.len(),
        });
    }
}

/// Where each of `parsed`'s names and values starts and ends in `head` (a line that does not
/// point into `head` is left out: httparse's always do).
pub(super) fn spans(head: &[u8], parsed: &[httparse::Header<'_>]) -> Vec<Span> {
    let base = head.as_ptr() as usize;
    let within = |part: &[u8]| {
        let start = (part.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(part.len())?;
        (end <= head.len()).then_some(start..end)
    };
    parsed
        .iter()
        .filter_map(|h| {
            Some(Span {
                name: within(h.name.as_bytes())?,
                value: within(h.value)?,
            })
        })
        .collect()
}

/// The header lines of a [`Headers`], as (name, value).
pub struct Lines<'a> {
    bytes: &'a [u8],
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Lines<'a> {
    fn line(&self, s: &Span) -> (&'a str, &'a [u8]) {
        let name = std::str::from_utf8(&self.bytes[s.name.clone()]).unwrap_or_default();
        (name, &self.bytes[s.value.clone()])
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let s = self.spans.next()?;
        Some(self.line(s))
    }
}

impl DoubleEndedIterator for Lines<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let s = self.spans.next_back()?;
        Some(self.line(s))
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Lines<'a>;
    fn into_iter(self) -> Lines<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(lines: I) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in lines {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, as sent.
    pub method: String,
    /// Request target (path and query), as sent.
    pub target: String,
    /// Minor HTTP version (1 for HTTP/1.1).
    pub minor_version: u8,
    /// The header lines.
    pub headers: Headers,
}

/// A parsed response head (from a backend).
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The header lines.
    pub headers: Headers,
}

/// Header lookups shared by request and response heads.
pub trait Head {
    /// The header lines.
    fn headers(&self) -> &Headers;

    /// Raw values of every header `name` (case-insensitive).
    fn header_raw<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .raw()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Values of every header `name` that are valid UTF-8.
    fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_raw(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// The first header `name`, if any.
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_all(name).next()
    }

    /// Whether the comma-separated header `name` holds `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

impl Head for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}

impl Head for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}
