//! The response side (behaviour doc §14.4): answers to the `tools/list` requests of the same
//! exchange lose the tools the server policy does not list, in `application/json` bodies and
//! in every `text/event-stream` event; every JSON-RPC message seen gets an audit entry.
//!
//! SSE is filtered event by event as the stream arrives (an MCP server may keep it open for
//! progress and server requests): each complete event is passed on at once, byte-identical
//! unless tools were removed from it. A JSON body is read whole only when it may hold a
//! `tools/list` answer; otherwise it streams through and is parsed on the side for the audit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::Value;

use super::{Server, is_media};
use crate::audit::mcp::{McpMessage, McpMessages};
use crate::message::body::{self, BoxError, ProxyBody, ProxyResponse};
use crate::transform::TransformError;
use crate::transform::body::buffer_response;

/// How much of a passing JSON body is kept to audit its messages.
const OBSERVE_LIMIT: usize = 1 << 20;

/// What the response of one judged exchange is filtered against.
pub struct ResponseFilter {
    server: Arc<Server>,
    /// Ids of the exchange's `tools/list` requests.
    list_ids: Vec<Value>,
    messages: McpMessages,
}

impl ResponseFilter {
    pub fn new(server: Arc<Server>, list_ids: Vec<Value>, messages: McpMessages) -> Self {
        Self {
            server,
            list_ids,
            messages,
        }
    }

    /// Filters `resp` by its content type; other content types pass untouched.
    pub async fn apply(
        self,
        mut resp: ProxyResponse,
        limit: Option<u64>,
    ) -> Result<ProxyResponse, TransformError> {
        let mode = if is_media(resp.headers(), "text/event-stream") {
            // Events may change length: the body is re-framed.
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            Mode::Sse(BytesMut::new())
        } else if !is_media(resp.headers(), "application/json") {
            return Ok(resp);
        } else if self.list_ids.is_empty() {
            Mode::Observe(Some(BytesMut::new()))
        } else {
            let bytes = buffer_response(&mut resp, limit).await?;
            if let Some(new) = self.payload(&bytes) {
                let len = new.len();
                *resp.body_mut() = body::full(new);
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
            }
            return Ok(resp);
        };
        let inner = std::mem::replace(resp.body_mut(), body::empty());
        *resp.body_mut() = FilterBody {
            inner,
            mode,
            filter: self,
        }
        .boxed_unsync();
        Ok(resp)
    }

    /// Audits every message of a JSON payload (one message or a batch) and filters the
    /// `tools/list` answers; `Some` is the re-serialised payload when something was removed.
    fn payload(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(data).ok()?;
        let changed = match &mut v {
            Value::Array(msgs) => msgs.iter_mut().fold(false, |acc, m| self.message(m) | acc),
            m @ Value::Object(_) => self.message(m),
            _ => false,
        };
        if changed {
            serde_json::to_vec(&v).ok()
        } else {
            None
        }
    }

    fn message(&self, m: &mut Value) -> bool {
        let is_list =
            m.get("id").is_some_and(|id| self.list_ids.contains(id)) && m.get("method").is_none();
        let mut entry = McpMessage {
            direction: "response",
            decision: "allow",
            method: if is_list {
                Some("tools/list".into())
            } else {
                m.get("method").and_then(Value::as_str).map(str::to_string)
            },
            ..McpMessage::default()
        };
        let mut changed = false;
        if is_list && let Some(tools) = m.pointer_mut("/result/tools").and_then(Value::as_array_mut)
        {
            let before = tools.len();
            tools.retain(|t| {
                t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| self.server.allows_tool(n))
            });
            let removed = before - tools.len();
            if removed > 0 {
                entry.decision = "filtered";
                entry.filtered = Some(removed);
                changed = true;
            }
        }
        self.messages.push(entry);
        changed
    }

    /// One complete SSE event (its blank line included), as it goes to the client.
    fn event(&self, raw: &[u8], out: &mut BytesMut) {
        let lines: Vec<&[u8]> = lines(raw).collect();
        let data: Vec<&[u8]> = lines.iter().filter_map(|l| data_value(l)).collect();
        let new = if data.is_empty() {
            None
        } else {
            self.payload(&data.join(&b'\n'))
        };
        let Some(new) = new else {
            out.extend_from_slice(raw);
            return;
        };
        let mut wrote_data = false;
        for l in lines.iter().filter(|l| !l.is_empty()) {
            if data_value(l).is_none() {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\n");
            } else if !wrote_data {
                wrote_data = true;
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&new);
                out.extend_from_slice(b"\n");
            }
        }
        out.extend_from_slice(b"\n");
    }
}

/// The lines of `raw` without their `\n` / `\r\n` endings.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The value of a `data` field line (one leading space removed), `None` for other lines.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    if line == b"data" {
        return Some(b"");
    }
    let v = line.strip_prefix(b"data:")?;
    Some(v.strip_prefix(b" ").unwrap_or(v))
}

/// Where the first complete event in `buf` ends (just after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

enum Mode {
    /// Bytes of the event not complete yet.
    Sse(BytesMut),
    /// A JSON body passing through; what was seen of it (dropped past the limit).
    Observe(Option<BytesMut>),
}

struct FilterBody {
    inner: ProxyBody,
    mode: Mode,
    filter: ResponseFilter,
}

impl Body for FilterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(this.finish().map(Ok)),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => f,
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                // Trailers pass as they are.
                Err(f) => return Poll::Ready(Some(Ok(f))),
            };
            if let Some(out) = this.chunk(data) {
                if matches!(this.mode, Mode::Observe(_)) && this.inner.is_end_stream() {
                    // hyper stops polling a body whose length is complete: audit it now.
                    let _ = this.finish();
                }
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.mode {
            Mode::Observe(_) => self.inner.is_end_stream(),
            Mode::Sse(pending) => pending.is_empty() && self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            Mode::Observe(_) => self.inner.size_hint(),
            Mode::Sse(_) => SizeHint::default(),
        }
    }
}

impl FilterBody {
    /// What goes to the client for one upstream chunk (`None`: nothing complete yet).
    fn chunk(&mut self, data: Bytes) -> Option<Bytes> {
        match &mut self.mode {
            Mode::Observe(seen) => {
                if let Some(buf) = seen {
                    if buf.len() + data.len() > OBSERVE_LIMIT {
                        *seen = None;
                    } else {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(data)
            }
            Mode::Sse(pending) => {
                pending.extend_from_slice(&data);
                let mut out = BytesMut::new();
                while let Some(end) = event_end(pending) {
                    let raw = pending.split_to(end);
                    self.filter.event(&raw, &mut out);
                }
                (!out.is_empty()).then(|| out.freeze())
            }
        }
    }

    /// At the end of the upstream body: audit an observed JSON body, pass on the rest of an
    /// unterminated SSE stream as it was.
    fn finish(&mut self) -> Option<Frame<Bytes>> {
        match &mut self.mode {
            Mode::Observe(seen) => {
                if let Some(buf) = seen.take() {
                    let _ = self.filter.payload(&buf);
                }
                None
            }
            Mode::Sse(pending) if !pending.is_empty() => {
                Some(Frame::data(std::mem::take(pending).freeze()))
            }
            Mode::Sse(_) => None,
        }
    }
}
