//! Response content codings (`x-fake-encoding`): whole bodies, and streams compressed
//! incrementally with a flush after every piece so each event is decodable as it arrives.

use std::io::{self, Write};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};

/// The content coding the fake applies to a response body, whatever the request accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// No coding and no `content-encoding` header.
    #[default]
    Identity,
    Gzip,
    /// `deflate` as HTTP means it (RFC 9110): the zlib format, not raw deflate.
    Deflate,
    Br,
    Zstd,
    /// `content-encoding: x-unknown` on bytes sent as they are: a coding nobody can decode.
    Unknown,
}

/// brotli: quality (0–11) and window bits; zstd: level. Fast settings: tests compress a lot.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_LGWIN: u32 = 22;
const ZSTD_LEVEL: i32 = 3;

impl Encoding {
    pub(crate) fn parse(s: &str) -> Result<Encoding, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "identity" => Ok(Encoding::Identity),
            "gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            "br" => Ok(Encoding::Br),
            "zstd" => Ok(Encoding::Zstd),
            "x-unknown" => Ok(Encoding::Unknown),
            _ => Err(format!(
                "header x-fake-encoding: expected gzip, deflate, br, zstd, identity or x-unknown, got {s:?}"
            )),
        }
    }

    /// The `content-encoding` value; `None` for identity.
    pub(crate) fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Deflate => Some("deflate"),
            Encoding::Br => Some("br"),
            Encoding::Zstd => Some("zstd"),
            Encoding::Unknown => Some("x-unknown"),
        }
    }

    /// The bytes go out as they are (identity, or the undecodable `x-unknown` label).
    pub(crate) fn passes_through(self) -> bool {
        matches!(self, Encoding::Identity | Encoding::Unknown)
    }

    pub(crate) fn encoder(self) -> io::Result<Encoder> {
        Ok(match self {
            Encoding::Identity | Encoding::Unknown => Encoder::Plain,
            Encoding::Gzip => Encoder::Gzip(GzEncoder::new(Vec::new(), Compression::default())),
            Encoding::Deflate => {
                Encoder::Zlib(ZlibEncoder::new(Vec::new(), Compression::default()))
            }
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    /// A whole body in this coding (one complete stream, no intermediate flushes).
    pub(crate) fn compress(self, bytes: Bytes) -> io::Result<Bytes> {
        if self.passes_through() {
            return Ok(bytes);
        }
        let mut enc = self.encoder()?;
        enc.write_all(&bytes)?;
        enc.finish()
    }
}

/// A compressor writing into memory.
pub(crate) enum Encoder {
    Plain,
    Gzip(GzEncoder<Vec<u8>>),
    Zlib(ZlibEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain => Ok(()),
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Zlib(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Compresses `data` and flushes (deflate sync flush, brotli flush, zstd block flush):
    /// returns the bytes that make everything pushed so far decodable.
    pub(crate) fn push(&mut self, data: Bytes) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Plain => return Ok(data),
            Encoder::Gzip(e) => {
                e.write_all(&data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Zlib(e) => {
                e.write_all(&data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Br(e) => {
                e.write_all(&data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Zstd(e) => {
                e.write_all(&data)?;
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// Ends the stream: the bytes not handed out yet (the trailer, at least).
    pub(crate) fn finish(self) -> io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Encoder::Plain => Vec::new(),
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zlib(e) => e.finish()?,
            Encoder::Br(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn decode(enc: Encoding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match enc {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Deflate => {
                flate2::read::ZlibDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Br => {
                brotli::Decompressor::new(bytes, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => out = zstd::stream::decode_all(bytes).unwrap(),
            Encoding::Identity | Encoding::Unknown => out = bytes.to_vec(),
        }
        out
    }

    #[test]
    fn whole_and_streamed_bodies_round_trip() {
        for enc in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Br,
            Encoding::Zstd,
            Encoding::Identity,
            Encoding::Unknown,
        ] {
            let body = Bytes::from("data: {\"x\":1}\n\n".repeat(50));
            let whole = enc.compress(body.clone()).unwrap();
            assert_eq!(decode(enc, &whole), body, "{enc:?}");

            let mut e = enc.encoder().unwrap();
            let mut wire = Vec::new();
            for part in ["data: one\n\n", "data: two\n\n", "data: [DONE]\n\n"] {
                wire.extend_from_slice(&e.push(Bytes::from_static(part.as_bytes())).unwrap());
            }
            wire.extend_from_slice(&e.finish().unwrap());
            assert_eq!(
                decode(enc, &wire),
                b"data: one\n\ndata: two\n\ndata: [DONE]\n\n",
                "{enc:?}"
            );
        }
        assert_eq!(Encoding::parse(" GZIP ").unwrap(), Encoding::Gzip);
        assert!(Encoding::parse("lz4").is_err());
    }
}
