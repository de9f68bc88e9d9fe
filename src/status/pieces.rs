//! The status document serialized a piece at a time, so that the document of 10,000
//! miners (2.5 MB) is never whole in memory: the overview (everything but the miners'
//! entries, a few kilobytes) is serialized once and split where its empty miners list
//! is; the miners' entries are serialized between the halves as they come. The bytes
//! are exactly those of `serde_json::to_vec` of the whole document.

use super::{MinerStatus, StatusDoc};
use std::io;

/// The miners' list of the overview, as serde_json writes it. It is found only as the
/// document's own key: a string holding these bytes would be written with its quotes
/// escaped (`\"`), and the other `"miners"` keys (totals, pools, sub-accounts) hold
/// numbers.
const EMPTY_MINERS: &[u8] = b"\"miners\":[]";

/// Miners' entries per piece: about 25 KB of JSON, small enough that serializing one
/// piece keeps the executor from the miners for well under a millisecond.
pub const MINERS_PER_PIECE: usize = 100;

pub struct DocumentPieces<'a> {
    /// Starts with the `]` that closes the miners' list.
    tail: Vec<u8>,
    miners: Box<dyn Iterator<Item = MinerStatus> + 'a>,
    first_miner: bool,
    done: bool,
}

impl<'a> DocumentPieces<'a> {
    /// `overview` must have no miners (its `miners` is empty); `miners` gives their
    /// entries in order. Returns the pieces and the head of the document, which ends
    /// with the `[` that opens the miners' list.
    pub fn new(
        overview: &StatusDoc,
        miners: Box<dyn Iterator<Item = MinerStatus> + 'a>,
    ) -> io::Result<(DocumentPieces<'a>, Vec<u8>)> {
        if !overview.miners.is_empty() {
            return Err(io::Error::other("the overview holds miners"));
        }
        let mut head = serde_json::to_vec(overview).map_err(io::Error::other)?;
        let at = head
            .windows(EMPTY_MINERS.len())
            .position(|w| w == EMPTY_MINERS)
            .ok_or_else(|| io::Error::other("no miners' list in the document"))?;
        let split = at + EMPTY_MINERS.len() - 1;
        let tail = head.split_off(split);
        let pieces = DocumentPieces {
            tail,
            miners,
            first_miner: true,
            done: false,
        };
        Ok((pieces, head))
    }

    /// Appends the next piece to `out`: up to [`MINERS_PER_PIECE`] miners' entries, and
    /// after the last of them the rest of the document. Returns false once the
    /// document is complete (nothing is appended then).
    pub fn next_piece(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        for _ in 0..MINERS_PER_PIECE {
            let Some(miner) = self.miners.next() else {
                out.extend_from_slice(&self.tail);
                self.done = true;
                return Ok(true);
            };
            if !self.first_miner {
                out.push(b',');
            }
            self.first_miner = false;
            serde_json::to_writer(&mut *out, &miner).map_err(io::Error::other)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::{sample_doc, with_history};

    /// The whole document through the pieces, as the file writer and /status send it.
    fn streamed(doc: &StatusDoc) -> (Vec<u8>, usize) {
        let mut overview = doc.clone();
        let miners = std::mem::take(&mut overview.miners);
        let (mut pieces, mut out) =
            DocumentPieces::new(&overview, Box::new(miners.into_iter())).unwrap();
        let mut count = 0;
        let mut piece = Vec::new();
        while pieces.next_piece(&mut piece).unwrap() {
            out.extend_from_slice(&piece);
            piece.clear();
            count += 1;
        }
        assert!(!pieces.next_piece(&mut piece).unwrap(), "stays complete");
        assert!(piece.is_empty());
        (out, count)
    }

    #[test]
    fn pieces_make_exactly_the_whole_document() {
        for miners in [0, 1, 2, MINERS_PER_PIECE, MINERS_PER_PIECE + 1, 1234] {
            let doc = with_history(sample_doc(miners), 3);
            let (bytes, pieces) = streamed(&doc);
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                serde_json::to_string(&doc).unwrap(),
                "{miners} miners"
            );
            assert_eq!(pieces, miners / MINERS_PER_PIECE + 1, "{miners} miners");
        }
    }

    #[test]
    fn names_that_spell_the_miners_key_do_not_move_the_split() {
        let mut doc = sample_doc(2);
        doc.listen = "\"miners\":[]".into();
        doc.pools[0].subaccount = "x\",\"miners\":[],\"".into();
        doc.subaccounts[0].name = "\"miners\":[]".into();
        doc.miners[0].worker = "\"miners\":[]".into();
        let (bytes, _) = streamed(&doc);
        assert_eq!(
            serde_json::from_slice::<StatusDoc>(&bytes).unwrap(),
            doc,
            "the same document back"
        );
    }

    #[test]
    fn an_overview_with_miners_is_refused() {
        let doc = sample_doc(1);
        assert!(DocumentPieces::new(&doc, Box::new(std::iter::empty())).is_err());
    }
}
