//! Decoding of untrusted XDR (RFC 4506): a reader over one received RPC record.
//!
//! Invariant: decoding never panics and never allocates on the strength of a length the
//! peer claims. Every variable-length item is a slice borrowed from the record, checked
//! against the bytes actually present (and against the item's own bound) before it is
//! taken; a claimed length beyond either is an error, not an allocation. This is why the
//! server decodes calls here instead of with `nfs3_types`' derived `Unpack`, which
//! allocates `vec![0; claimed_len]` first (up to 4 GiB for a 40-byte call) — results are
//! still encoded with `nfs3_types`, since those bytes are ours.

use std::fmt;

/// The bytes are not valid XDR for what was expected (RPC: `GARBAGE_ARGS`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Garbage;

impl fmt::Display for Garbage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed XDR")
    }
}

/// Result of a decoding step.
pub type XdrResult<T> = Result<T, Garbage>;

/// A cursor over a received record.
#[derive(Clone, Debug)]
pub struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> XdrReader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        XdrReader { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(Garbage);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self) -> XdrResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned 64-bit integer (`unsigned hyper`).
    pub fn u64(&mut self) -> XdrResult<u64> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }

    /// A boolean: exactly 0 or 1.
    pub fn bool(&mut self) -> XdrResult<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Garbage),
        }
    }

    /// Fixed-length opaque data of `n` bytes, plus padding to a multiple of four.
    pub fn fixed(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    /// Variable-length opaque data (or a string) of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> XdrResult<&'a [u8]> {
        let len = usize::try_from(self.u32()?).map_err(|_| Garbage)?;
        if len > max {
            return Err(Garbage);
        }
        self.fixed(len)
    }

    /// Succeeds only if every byte was consumed: a call with trailing bytes is garbage.
    pub fn finish(&self) -> XdrResult<()> {
        if self.remaining() == 0 { Ok(()) } else { Err(Garbage) }
    }
}

/// Padding after `n` bytes of opaque data.
pub fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// A variable-length item with no bound of its own in the protocol (`filename3`,
/// `nfspath3`): bounded by the record it arrived in.
pub const UNBOUNDED: usize = usize::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_it_should() {
        let bytes = [
            0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 1,
        ];
        let mut r = XdrReader::new(&bytes);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.u64(), Ok((1 << 32) | 2));
        assert_eq!(r.opaque(3), Ok(&b"abc"[..]));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(r.u32(), Err(Garbage));
    }

    #[test]
    fn claimed_lengths_beyond_the_record_or_the_bound_are_garbage() {
        let huge = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
        assert_eq!(XdrReader::new(&huge).opaque(UNBOUNDED), Err(Garbage));
        let five = [0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(XdrReader::new(&five).opaque(4), Err(Garbage));
        assert_eq!(XdrReader::new(&five).opaque(5), Ok(&[1, 2, 3, 4, 5][..]));
        // Missing padding is garbage too.
        assert_eq!(XdrReader::new(&five[..9]).opaque(5), Err(Garbage));
        assert_eq!(XdrReader::new(&[0, 0, 0, 2]).bool(), Err(Garbage));
    }

    proptest! {
        /// Any bytes, any sequence of reads: an answer or `Garbage`, never a panic, and
        /// the reader never claims more than it was given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), ops in proptest::collection::vec(0u8..5, 0..32)) {
            let mut r = XdrReader::new(&bytes);
            for op in ops {
                let _ = match op {
                    0 => r.u32().map(|_| ()),
                    1 => r.u64().map(|_| ()),
                    2 => r.bool().map(|_| ()),
                    3 => r.opaque(UNBOUNDED).map(|_| ()),
                    _ => r.fixed(3).map(|_| ()),
                };
                prop_assert!(r.remaining() <= bytes.len());
            }
        }
    }
}
