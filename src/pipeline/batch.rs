//! Coalescing: the bytes of every frame already waiting upstream are gathered into one write,
//! without a copy when there is only one.

use bytes::Bytes;

/// Bytes gathered for one write.
#[derive(Default)]
pub struct Batch {
    first: Option<Bytes>,
    more: Option<bytes::BytesMut>,
    pub len: usize,
}

impl Batch {
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        match (&self.first, &mut self.more) {
            (None, _) => self.first = Some(b),
            (Some(_), Some(more)) => more.extend_from_slice(&b),
            (Some(first), None) => {
                let mut more = bytes::BytesMut::from(&first[..]);
                more.extend_from_slice(&b);
                self.more = Some(more);
            }
        }
    }

    pub fn take(self) -> Option<Bytes> {
        match self.more {
            Some(more) => Some(more.freeze()),
            None => self.first,
        }
    }
}
