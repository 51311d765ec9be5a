//! The response body: a precomputed list of pieces (data, pauses, a cut), and the
//! [`Payload`] a handler produces before its content coding is applied.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::encoding::Encoding;

/// One step of a response body.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Send these bytes as one frame.
    Data(Bytes),
    /// Pause before the next piece.
    Delay(Duration),
    /// Drop the connection: hand hyper an error so it aborts without ending the message.
    Cut,
}

/// The frame size of a whole body sent without a length (`x-fake-chunked`).
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// How a whole body (sent with its `content-length`) is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// All at once.
    Whole,
    /// The first half, then the connection is dropped (`cut`).
    HalfThenCut,
    /// The first half, a pause, then the rest (`stall:MS`).
    Stall(Duration),
}

/// A response body as a handler builds it, before the content coding.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A whole body with a `content-length`.
    Full(Bytes, Delivery),
    /// A stream (chunked on HTTP/1.1): one `Data` piece per event (or group of events).
    Stream(Vec<Piece>),
}

impl Payload {
    /// Delivers the body in two parts with a pause of `d` between them: a whole body after
    /// half of its bytes, a stream after about half of its data pieces.
    pub(crate) fn stalled(self, d: Duration) -> Payload {
        match self {
            Payload::Full(bytes, Delivery::Whole) => Payload::Full(bytes, Delivery::Stall(d)),
            Payload::Full(bytes, delivery) => Payload::Full(bytes, delivery),
            Payload::Stream(pieces) => {
                let (mut first, rest) = split_half(pieces);
                first.push(Piece::Delay(d));
                first.extend(rest);
                Payload::Stream(first)
            }
        }
    }

    /// A whole body sent without a `content-length` (chunked on HTTP/1.1),
    /// in frames of at most [`CHUNK_BYTES`]; other bodies are unchanged.
    pub(crate) fn without_length(self) -> Payload {
        match self {
            Payload::Full(bytes, Delivery::Whole) => {
                let mut pieces = Vec::with_capacity(bytes.len() / CHUNK_BYTES + 1);
                let mut at = 0;
                while at < bytes.len() {
                    let end = (at + CHUNK_BYTES).min(bytes.len());
                    pieces.push(Piece::Data(bytes.slice(at..end)));
                    at = end;
                }
                Payload::Stream(pieces)
            }
            other => other,
        }
    }

    /// The body on the wire in `encoding`. A whole body is compressed at once (its
    /// `content-length` is the compressed size; cut and stall split the compressed bytes). A
    /// stream is compressed incrementally with a flush after every data piece, so each piece is
    /// decodable when it arrives; a cut stream never gets its trailer.
    pub(crate) fn into_body(self, encoding: Encoding) -> io::Result<FakeBody> {
        match self {
            Payload::Full(bytes, delivery) => {
                let bytes = encoding.compress(bytes)?;
                Ok(match delivery {
                    Delivery::Whole => FakeBody::full(bytes),
                    Delivery::HalfThenCut => FakeBody::half_then_cut(bytes),
                    Delivery::Stall(d) => FakeBody::half_pause_rest(bytes, d),
                })
            }
            Payload::Stream(pieces) if encoding.passes_through() => Ok(FakeBody::pieces(pieces)),
            Payload::Stream(pieces) => {
                let mut enc = encoding.encoder()?;
                let mut out = Vec::with_capacity(pieces.len() + 1);
                for piece in pieces {
                    match piece {
                        Piece::Data(bytes) => {
                            let bytes = enc.push(bytes)?;
                            if !bytes.is_empty() {
                                out.push(Piece::Data(bytes));
                            }
                        }
                        Piece::Delay(d) => out.push(Piece::Delay(d)),
                        Piece::Cut => {
                            out.push(Piece::Cut);
                            return Ok(FakeBody::pieces(out));
                        }
                    }
                }
                let tail = enc.finish()?;
                if !tail.is_empty() {
                    out.push(Piece::Data(tail));
                }
                Ok(FakeBody::pieces(out))
            }
        }
    }
}

/// Splits stream pieces after the first half of the data pieces: `(first, rest)`. The pauses
/// that follow the last kept data piece stay in `first`.
pub(crate) fn split_half(pieces: Vec<Piece>) -> (Vec<Piece>, Vec<Piece>) {
    let data = pieces
        .iter()
        .filter(|p| matches!(p, Piece::Data(_)))
        .count();
    let keep = data / 2;
    let mut first = Vec::with_capacity(pieces.len());
    let mut rest = Vec::new();
    let mut kept = 0;
    for p in pieces {
        if !rest.is_empty() {
            rest.push(p);
            continue;
        }
        if matches!(p, Piece::Data(_)) {
            if kept == keep {
                rest.push(p);
                continue;
            }
            kept += 1;
        }
        first.push(p);
    }
    (first, rest)
}

/// The fake's response body: precomputed frames, pauses between stream deltas, and cuts.
#[derive(Debug)]
pub struct FakeBody {
    pieces: VecDeque<Piece>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Pending once before a cut so hyper flushes what it buffered.
    flushed_before_cut: bool,
    exact_len: Option<u64>,
}

impl FakeBody {
    pub(crate) fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// A whole body sent at once, with a `content-length`.
    pub(crate) fn full(bytes: Bytes) -> Self {
        let len = bytes.len() as u64;
        let mut pieces = VecDeque::with_capacity(1);
        if !bytes.is_empty() {
            pieces.push_back(Piece::Data(bytes));
        }
        FakeBody {
            pieces,
            sleep: None,
            flushed_before_cut: false,
            exact_len: Some(len),
        }
    }

    /// A streamed body (chunked transfer encoding on HTTP/1.1).
    pub(crate) fn pieces(pieces: Vec<Piece>) -> Self {
        FakeBody {
            pieces: pieces.into(),
            sleep: None,
            flushed_before_cut: false,
            exact_len: None,
        }
    }

    /// The first half of `bytes`, then a cut, announced with the full `content-length`.
    pub(crate) fn half_then_cut(bytes: Bytes) -> Self {
        let len = bytes.len() as u64;
        let half = bytes.slice(..bytes.len() / 2);
        FakeBody {
            pieces: VecDeque::from([Piece::Data(half), Piece::Cut]),
            sleep: None,
            flushed_before_cut: false,
            exact_len: Some(len),
        }
    }

    /// The first half of `bytes`, a pause of `d`, then the rest, announced with the full
    /// `content-length` (hyper flushes the first half while the body is pending).
    pub(crate) fn half_pause_rest(bytes: Bytes, d: Duration) -> Self {
        let len = bytes.len() as u64;
        let mid = bytes.len() / 2;
        let (first, rest) = (bytes.slice(..mid), bytes.slice(mid..));
        let mut pieces = VecDeque::with_capacity(3);
        if !first.is_empty() {
            pieces.push_back(Piece::Data(first));
        }
        pieces.push_back(Piece::Delay(d));
        if !rest.is_empty() {
            pieces.push_back(Piece::Data(rest));
        }
        FakeBody {
            pieces,
            sleep: None,
            flushed_before_cut: false,
            exact_len: Some(len),
        }
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            match this.pieces.pop_front() {
                None => return Poll::Ready(None),
                Some(Piece::Data(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Piece::Delay(d)) => {
                    if !d.is_zero() {
                        this.sleep = Some(Box::pin(tokio::time::sleep(d)));
                    }
                }
                Some(Piece::Cut) => {
                    if !this.flushed_before_cut {
                        // Yield once: hyper flushes its write buffer when the body is pending,
                        // so the client really receives the part sent before the cut.
                        this.flushed_before_cut = true;
                        this.pieces.push_front(Piece::Cut);
                        this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(5))));
                        continue;
                    }
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake provider: response cut on purpose",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
