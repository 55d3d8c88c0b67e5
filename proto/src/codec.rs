//! The protobuf codec of `vault.v1`: tonic-prost's, with smaller buffers.
//!
//! tonic starts every call's encode and decode buffer at 8 KiB. vault.v1's
//! messages are mostly far smaller (an `Execute` request is a few hundred
//! bytes), and each 8 KiB buffer cost the daemon a large malloc (which makes
//! glibc consolidate its fast bins) and, under vaultd's zeroing allocator, an
//! 8 KiB wipe when it is freed: two of each per call on each side. A larger
//! message grows its buffer as before.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Initial size of a call's encode and decode buffer.
pub const BUFFER_SIZE: usize = 1024;
/// tonic's default: how much an encoder writes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_SIZE`] buffers; named by `build.rs` as the
/// generated client's and server's codec.
#[derive(Debug, Clone)]
pub struct VaultCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for VaultCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for VaultCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}
