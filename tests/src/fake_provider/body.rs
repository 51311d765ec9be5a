//! The response body: a precomputed list of pieces (data, pauses, a cut).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

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
