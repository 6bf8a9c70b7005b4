//! A gRPC codec that passes message bytes through untouched, so the mesh forwards requests and
//! responses without decoding them.

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Raw-bytes codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// Encoder half.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// Decoder half.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Raw bytes out, where an item may be an error: the codec for forwarding a client's stream.
/// An `Err` item fails the outgoing body, so the other side sees its stream reset (never a
/// clean end) when the client's stream broke.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamCodec;

/// Encoder half of [`StreamCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamEncoder;

impl Encoder for StreamEncoder {
    type Item = Result<Bytes, Status>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Result<Bytes, Status>,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        dst.put(item?);
        Ok(())
    }
}

impl Codec for StreamCodec {
    type Encode = Result<Bytes, Status>;
    type Decode = Bytes;
    type Encoder = StreamEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> StreamEncoder {
        StreamEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
