//! Content codings: decoding a compressed response for the taps.
//!
//! The sidecar asks providers for `accept-encoding: identity`, but an
//! upstream may compress anyway (RFC 9110 lets a server ignore the header,
//! and gateways in between do). The bytes still go to the app as they
//! came; the taps read the decoded text, so a compressed reply is metered
//! like any other. Decoding is incremental (a chunk at a time, whatever its
//! boundaries) and bounded: input is fed in small slices and the output of
//! each is handed on at once, so a highly compressed body never sits
//! decoded in memory: a step that would decode to more than
//! [`MAX_STEP_OUTPUT`] fails the body's decoding. brotli emits output at
//! its meta-block boundaries, so a brotli stream cut between two of them
//! loses what the decoder held (an encoder that flushes per event, as
//! servers do for event streams, leaves nothing held).

use std::io::Write;

use http::{HeaderMap, header::CONTENT_ENCODING};

/// Input fed to a decoder per step; its output is drained after each.
const STEP: usize = 1024;

/// Most output one step may produce. deflate cannot pass ~1 MiB from a
/// 1 KiB step, but brotli and zstd can describe gigabytes in a few bytes
/// (fuzzing found 1 GiB from one brotli step): past this the body counts
/// as undecodable (the taps then count it by its size).
pub const MAX_STEP_OUTPUT: usize = 8 << 20;

/// A decoder's output buffer that refuses to grow past
/// [`MAX_STEP_OUTPUT`].
#[derive(Default)]
struct Bounded(Vec<u8>);

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + data.len() > MAX_STEP_OUTPUT {
            return Err(std::io::Error::other(
                "decoded output too large for one step",
            ));
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response's content coding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coding {
    /// None (or `identity`).
    Identity,
    /// `gzip` / `x-gzip`.
    Gzip,
    /// `deflate`: the zlib format (RFC 9110 §8.4.1.2).
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
    /// Anything else, or several codings: the taps cannot read it.
    Unknown(String),
}

// === impl Coding ===

impl Coding {
    /// The coding of a response from its `content-encoding` header(s).
    pub fn of(headers: &HeaderMap) -> Coding {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(first) = values.next() else {
            return Coding::Identity;
        };
        let text = String::from_utf8_lossy(first.as_bytes())
            .trim()
            .to_ascii_lowercase();
        if values.next().is_some() || text.contains(',') {
            return Coding::Unknown(text);
        }
        match text.as_str() {
            "" | "identity" => Coding::Identity,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => Coding::Unknown(text),
        }
    }

    /// A decoder for this coding; `None` for identity and unknown codings.
    pub fn decoder(&self) -> Option<Decoder> {
        let sink = Bounded::default();
        let inner = match self {
            Coding::Identity | Coding::Unknown(_) => return None,
            Coding::Gzip => Inner::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink))),
            Coding::Deflate => Inner::Deflate(Box::new(flate2::write::ZlibDecoder::new(sink))),
            Coding::Brotli => Inner::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(sink, 4096),
            )),
            Coding::Zstd => match zstd::stream::write::Decoder::new(sink) {
                Ok(d) => Inner::Zstd(Box::new(d)),
                Err(_) => return None,
            },
        };
        Some(Decoder {
            inner,
            failed: false,
        })
    }
}

enum Inner {
    Gzip(Box<flate2::write::MultiGzDecoder<Bounded>>),
    Deflate(Box<flate2::write::ZlibDecoder<Bounded>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Bounded>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Bounded>>),
}

/// An incremental decoder of one response body.
pub struct Decoder {
    inner: Inner,
    failed: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

// === impl Decoder ===

impl Decoder {
    /// Decode the next chunk, handing each piece of output to `out`.
    /// After a decoding error nothing more is produced ([`Decoder::failed`]).
    pub fn push(&mut self, chunk: &[u8], mut out: impl FnMut(&[u8])) {
        for step in chunk.chunks(STEP) {
            if self.failed {
                return;
            }
            let written = match &mut self.inner {
                Inner::Gzip(d) => d.write_all(step).and_then(|()| d.flush()),
                Inner::Deflate(d) => d.write_all(step).and_then(|()| d.flush()),
                Inner::Brotli(d) => d.write_all(step).and_then(|()| d.flush()),
                Inner::Zstd(d) => d.write_all(step).and_then(|()| d.flush()),
            };
            if written.is_err() {
                self.failed = true;
            }
            self.drain(&mut out);
        }
    }

    /// Whether the data was not valid in its coding.
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn drain(&mut self, out: &mut impl FnMut(&[u8])) {
        let sink = match &mut self.inner {
            Inner::Gzip(d) => &mut d.get_mut().0,
            Inner::Deflate(d) => &mut d.get_mut().0,
            Inner::Brotli(d) => &mut d.get_mut().0,
            Inner::Zstd(d) => &mut d.get_mut().0,
        };
        if !sink.is_empty() {
            out(sink);
            sink.clear();
        }
    }
}

/// Decode a whole body (`None`: identity or an unknown coding, or not valid
/// in its coding).
pub fn decode_all(coding: &Coding, body: &[u8]) -> Option<Vec<u8>> {
    let mut d = coding.decoder()?;
    let mut out = Vec::new();
    d.push(body, |piece| out.extend_from_slice(piece));
    (!d.failed()).then_some(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn headers(v: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in v {
            h.append(CONTENT_ENCODING, HeaderValue::from_static(v));
        }
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            e.write_all(data).unwrap();
        }
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    #[test]
    fn codings_from_headers() {
        assert_eq!(Coding::of(&headers(&[])), Coding::Identity);
        assert_eq!(Coding::of(&headers(&["identity"])), Coding::Identity);
        assert_eq!(Coding::of(&headers(&["GZIP"])), Coding::Gzip);
        assert_eq!(Coding::of(&headers(&["x-gzip"])), Coding::Gzip);
        assert_eq!(Coding::of(&headers(&["deflate"])), Coding::Deflate);
        assert_eq!(Coding::of(&headers(&["br"])), Coding::Brotli);
        assert_eq!(Coding::of(&headers(&["zstd"])), Coding::Zstd);
        assert_eq!(
            Coding::of(&headers(&["gzip, br"])),
            Coding::Unknown("gzip, br".into())
        );
        assert!(matches!(
            Coding::of(&headers(&["gzip", "br"])),
            Coding::Unknown(_)
        ));
        assert!(Coding::Unknown("x".into()).decoder().is_none());
    }

    #[test]
    fn every_coding_round_trips_in_small_pieces() {
        let text = br#"{"usage":{"prompt_tokens":12,"completion_tokens":7}}"#.repeat(300);
        for (coding, bytes) in [
            (Coding::Gzip, gzip(&text)),
            (Coding::Deflate, zlib(&text)),
            (Coding::Brotli, brotli(&text)),
            (Coding::Zstd, zstd(&text)),
        ] {
            let mut d = coding.decoder().unwrap();
            let mut out = Vec::new();
            for piece in bytes.chunks(7) {
                d.push(piece, |p| out.extend_from_slice(p));
            }
            assert!(!d.failed(), "{coding:?}");
            assert_eq!(out, text, "{coding:?}");
            assert_eq!(decode_all(&coding, &bytes).unwrap(), text);
        }
    }

    #[test]
    fn garbage_fails_without_output_explosion() {
        assert_eq!(decode_all(&Coding::Gzip, b"<html>not gzip"), None);
        // A bomb: 64 MiB of zeros in ~64 KB; each step's output is handed
        // on at once, never held whole.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        let mut d = Coding::Gzip.decoder().unwrap();
        let (mut largest, mut total) = (0, 0);
        d.push(&bomb, |p| {
            largest = largest.max(p.len());
            total += p.len();
        });
        assert_eq!(total, 64 << 20);
        assert!(largest <= 4 << 20, "{largest}");
    }

    /// Fuzzing found a brotli body of 841 bytes that decodes to 1 GiB in
    /// one step: it fails instead of allocating it.
    #[test]
    fn a_step_that_decodes_to_too_much_fails() {
        let bomb = brotli(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1024, "{}", bomb.len());
        let mut d = Coding::Brotli.decoder().unwrap();
        let mut largest = 0;
        d.push(&bomb, |p| largest = largest.max(p.len()));
        assert!(d.failed());
        assert!(largest <= MAX_STEP_OUTPUT);
    }

    proptest! {
        #[test]
        fn gzip_splits_do_not_matter(data in proptest::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096) {
            let z = gzip(&data);
            let cut = cut.min(z.len());
            let mut d = Coding::Gzip.decoder().unwrap();
            let mut out = Vec::new();
            d.push(&z[..cut], |p| out.extend_from_slice(p));
            d.push(&z[cut..], |p| out.extend_from_slice(p));
            prop_assert!(!d.failed());
            prop_assert_eq!(out, data);
        }
    }
}
