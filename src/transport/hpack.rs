//! HPACK (RFC 7541) for the header blocks clients send on the Unix socket: a decoder that keeps the
//! client's dynamic table, and the one representation they are re-encoded in (literals that neither read
//! nor write a dynamic table), so that h2 can decode the result without any table state.
//!
//! Written here rather than taken from a crate: `hpack` (2015) and `httlib-hpack` (2020) are unmaintained
//! and panic on one-byte inputs; `loona-hpack` does not panic, but builds its Huffman tables anew for every
//! string and walks them bit by bit through hash maps (about 17 µs a string), which a hostile client could
//! turn into a long stall of a worker thread. Huffman decoding here is canonical: a few comparisons a bit,
//! from the code lengths of RFC 7541 Appendix B, with no table built at run time.
//!
//! Every size is bounded: integers take at most 4 continuation octets, strings cannot outrun the block,
//! Huffman output is at most 8/5 of its input, the dynamic table is capped by the size the server
//! advertises, and a decoded header list by the caller's limit.

use std::collections::VecDeque;

/// Errors in a header block. Each one is a COMPRESSION_ERROR for HTTP/2: the connection cannot go on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HpackError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer in the header block is too large")]
    IntegerOverflow,
    #[error("index {0} is in neither the static nor the dynamic table")]
    BadIndex(usize),
    #[error("a Huffman-coded string is malformed")]
    Huffman,
    #[error("a dynamic table size update to {asked} exceeds the {limit} bytes allowed")]
    TableSizeTooLarge { asked: usize, limit: usize },
    #[error("a dynamic table size update follows a header field")]
    LateTableSizeUpdate,
    #[error("the decoded header list exceeds {0} bytes")]
    ListTooLarge(usize),
}

/// The per-entry overhead RFC 7541 §4.1 adds to a field's name and value lengths.
const ENTRY_OVERHEAD: usize = 32;

/// Continuation octets an integer may take: enough for 2^28, far above any size we accept.
const MAX_INTEGER_CONTINUATIONS: u32 = 4;

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// The decoding context of one connection's client-to-server direction.
pub(crate) struct Decoder {
    /// Newest entry first, as HPACK indexes them.
    table: VecDeque<Entry>,
    /// Sum of the entries' sizes (name + value + 32).
    size: usize,
    /// The table's current maximum size, as the client last set it.
    max_size: usize,
    /// The largest table the server allows (SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
    /// The largest decoded header list accepted, counted as RFC 7540 §6.5.2 counts it.
    max_list_size: usize,
}

impl Decoder {
    /// A decoder for a peer that may use a dynamic table of up to `table_limit` bytes, refusing header lists
    /// larger than `max_list_size`.
    pub(crate) fn new(table_limit: usize, max_list_size: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: table_limit,
            limit: table_limit,
            max_list_size,
        }
    }

    /// Decodes one complete header block, calling `field(name, value, never_indexed)` for every field in
    /// order, and updates the dynamic table as the block says.
    pub(crate) fn decode(&mut self, block: &[u8], mut field: impl FnMut(&[u8], &[u8], bool)) -> Result<(), HpackError> {
        let mut input = Input { bytes: block, pos: 0 };
        let mut list_size = 0usize;
        let mut seen_field = false;
        let mut name = Vec::new();
        let mut value = Vec::new();
        while let Some(first) = input.peek() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = input.integer(7)?;
                let (name, value) = self.entry(index)?;
                list_size = self.count(list_size, name, value)?;
                field(name, value, false);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only at the start of a block (§4.2).
                if seen_field {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let asked = input.integer(5)?;
                if asked > self.limit {
                    return Err(HpackError::TableSizeTooLarge {
                        asked,
                        limit: self.limit,
                    });
                }
                self.max_size = asked;
                self.evict_to(asked);
                continue;
            } else {
                // Literal field (§6.2): with incremental indexing, without indexing, or never indexed.
                let (prefix, indexed, never) = match first {
                    b if b & 0x40 != 0 => (6, true, false),
                    b if b & 0x10 != 0 => (4, false, true),
                    _ => (4, false, false),
                };
                let index = input.integer(prefix)?;
                name.clear();
                if index == 0 {
                    input.string(&mut name)?;
                } else {
                    name.extend_from_slice(self.entry(index)?.0);
                }
                value.clear();
                input.string(&mut value)?;
                list_size = self.count(list_size, &name, &value)?;
                field(&name, &value, never);
                if indexed {
                    self.insert(&name, &value);
                }
            }
            seen_field = true;
        }
        Ok(())
    }

    /// Adds one field to the running size of the header list, refusing a list over the limit.
    fn count(&self, list_size: usize, name: &[u8], value: &[u8]) -> Result<usize, HpackError> {
        let size = list_size + name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_list_size {
            return Err(HpackError::ListTooLarge(self.max_list_size));
        }
        Ok(size)
    }

    /// The field at `index` of the combined static and dynamic table (§2.3.3).
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if let Some(&(name, value)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
            return Ok((name, value));
        }
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|i| self.table.get(i))
            .map(|(name, value)| (&name[..], &value[..]))
            .ok_or(HpackError::BadIndex(index))
    }

    /// Adds a field to the dynamic table, evicting the oldest entries to make room (§4.4). A field larger
    /// than the whole table empties it and is not added.
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);
        self.table.push_front((name.into(), value.into()));
        self.size += size;
    }

    /// Evicts the oldest entries until the table takes at most `size` bytes.
    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// A cursor over a header block.
struct Input<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, HpackError> {
        let byte = self.peek().ok_or(HpackError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// An integer with an N-bit prefix (§5.1).
    fn integer(&mut self, prefix: u32) -> Result<usize, HpackError> {
        let mask = (1usize << prefix) - 1;
        let mut value = usize::from(self.next()?) & mask;
        if value < mask {
            return Ok(value);
        }
        for shift in (0..MAX_INTEGER_CONTINUATIONS).map(|i| 7 * i) {
            let byte = self.next()?;
            value += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(HpackError::IntegerOverflow)
    }

    /// A string literal (§5.2), Huffman-decoded when its H bit is set, appended to `out`.
    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), HpackError> {
        let huffman = self.peek().ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = self.integer(7)?;
        let end = self.pos.checked_add(len).filter(|&end| end <= self.bytes.len());
        let raw = &self.bytes[self.pos..end.ok_or(HpackError::Truncated)?];
        self.pos += len;
        if huffman {
            huffman_decode(raw, out)
        } else {
            out.extend_from_slice(raw);
            Ok(())
        }
    }
}

/// Appends `name: value` as a literal field that is not added to any table (§6.2.2), or that is never to
/// be indexed (§6.2.3), with both strings raw (no Huffman coding) and a literal name.
pub(crate) fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    out.push(if never_indexed { 0x10 } else { 0x00 });
    encode_string(out, name);
    encode_string(out, value);
}

/// A raw string literal: its length as a 7-bit-prefix integer, then its bytes.
fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(bytes);
}

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The length in bits of the Huffman code of every symbol, 0 to 255 and EOS (256), from RFC 7541
/// Appendix B. The code is canonical (codes of one length are consecutive, in symbol order, and each length
/// starts where the shorter ones end), so these lengths define every code.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26, 30,
];

/// The longest code (EOS and a few control characters).
const MAX_CODE_LENGTH: usize = 30;

/// The symbol value of EOS, which must never appear inside a string.
const EOS: u16 = 256;

/// The canonical code in the form decoding needs, for every length: the first code, how many codes there
/// are, and where their symbols start in `symbols` (sorted by length, then value).
struct Canonical {
    first: [u32; MAX_CODE_LENGTH + 1],
    count: [u32; MAX_CODE_LENGTH + 1],
    start: [usize; MAX_CODE_LENGTH + 1],
    symbols: [u16; 257],
}

const CANONICAL: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u32; MAX_CODE_LENGTH + 1];
    let mut i = 0;
    while i < CODE_LENGTHS.len() {
        count[CODE_LENGTHS[i] as usize] += 1;
        i += 1;
    }
    let mut first = [0u32; MAX_CODE_LENGTH + 1];
    let mut start = [0usize; MAX_CODE_LENGTH + 1];
    let mut code = 0u32;
    let mut len = 1;
    while len <= MAX_CODE_LENGTH {
        code = (code + count[len - 1]) << 1;
        first[len] = code;
        start[len] = start[len - 1] + count[len - 1] as usize;
        len += 1;
    }
    let mut next = start;
    let mut symbols = [0u16; 257];
    let mut symbol = 0;
    while symbol < CODE_LENGTHS.len() {
        let len = CODE_LENGTHS[symbol] as usize;
        symbols[next[len]] = symbol as u16;
        next[len] += 1;
        symbol += 1;
    }
    Canonical {
        first,
        count,
        start,
        symbols,
    }
}

/// Decodes a Huffman-coded string (§5.2) onto `out`. Its padding must be at most 7 bits, all ones (the
/// start of EOS), and EOS itself must not appear.
fn huffman_decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let table = &CANONICAL;
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in input {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            let offset = code.wrapping_sub(table.first[len]);
            if offset < table.count[len] {
                match table.symbols[table.start[len] + offset as usize] {
                    EOS => return Err(HpackError::Huffman),
                    symbol => out.push(symbol as u8),
                }
                code = 0;
                len = 0;
            } else if len == MAX_CODE_LENGTH {
                // Unreachable for a complete code; kept so that no input can index past the tables.
                return Err(HpackError::Huffman);
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

/// A Huffman encoder built from the same lengths, for tests: every symbol both ways, and clients' strings.
#[cfg(test)]
pub(super) fn huffman_encode(input: &[u8]) -> Vec<u8> {
    let mut codes = [0u32; 257];
    for len in 1..=MAX_CODE_LENGTH {
        for i in 0..CANONICAL.count[len] {
            codes[CANONICAL.symbols[CANONICAL.start[len] + i as usize] as usize] = CANONICAL.first[len] + i;
        }
    }
    let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for &b in input {
        let len = u32::from(CODE_LENGTHS[b as usize]);
        acc = (acc << len) | u64::from(codes[b as usize]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TABLE_SIZE: usize = 4096;
    const LIST_LIMIT: usize = 64 * 1024;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).expect("hex")
    }

    type Fields = Vec<(String, String, bool)>;

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, |n, v, never| {
            fields.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
                never,
            ))
        })?;
        Ok(fields)
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string(), false))
            .collect()
    }

    fn table(decoder: &Decoder) -> Vec<(String, String)> {
        decoder
            .table
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    // RFC 7541 C.3: requests without Huffman coding, one connection.
    #[test]
    fn rfc7541_c3_requests_share_the_dynamic_table() {
        let mut decoder = Decoder::new(TABLE_SIZE, LIST_LIMIT);
        let first = unhex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        assert_eq!(
            decode(&mut decoder, &first).unwrap(),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(decoder.size, 57);
        let second = unhex("8286 84be 5808 6e6f 2d63 6163 6865");
        assert_eq!(
            decode(&mut decoder, &second).unwrap(),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let third = unhex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65");
        assert_eq!(
            decode(&mut decoder, &third).unwrap(),
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(decoder.size, 164);
    }

    // RFC 7541 C.4: the same requests, Huffman-coded.
    #[test]
    fn rfc7541_c4_huffman_coded_requests_decode() {
        let mut decoder = Decoder::new(TABLE_SIZE, LIST_LIMIT);
        let blocks = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        let decoded: Vec<Fields> = blocks
            .iter()
            .map(|b| decode(&mut decoder, &unhex(b)).unwrap())
            .collect();
        assert_eq!(decoded[0][3], (":authority".into(), "www.example.com".into(), false));
        assert_eq!(decoded[1][4], ("cache-control".into(), "no-cache".into(), false));
        assert_eq!(decoded[2][4], ("custom-key".into(), "custom-value".into(), false));
        assert_eq!(
            table(&decoder),
            vec![
                ("custom-key".into(), "custom-value".into()),
                ("cache-control".into(), "no-cache".into()),
                (":authority".into(), "www.example.com".into())
            ]
        );
    }

    // RFC 7541 C.6: Huffman-coded responses with a 256-byte table, which evicts.
    #[test]
    fn rfc7541_c6_small_table_evicts_the_oldest_entries() {
        let mut decoder = Decoder::new(256, LIST_LIMIT);
        let first = unhex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        );
        assert_eq!(
            decode(&mut decoder, &first).unwrap(),
            fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(decoder.size, 222);
        let second = unhex("4883 640e ffc1 c0bf");
        assert_eq!(decode(&mut decoder, &second).unwrap()[0].1, "307");
        assert_eq!(decoder.size, 222);
        assert_eq!(table(&decoder)[0], (":status".into(), "307".into()));
        let third = unhex(
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        );
        let decoded = decode(&mut decoder, &third).unwrap();
        assert_eq!(decoded[5].1, "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1");
        assert_eq!(decoder.size, 215);
        assert_eq!(decoder.table.len(), 3);
    }

    #[test]
    fn huffman_code_is_complete() {
        let kraft: f64 = CODE_LENGTHS.iter().map(|&l| 0.5f64.powi(l.into())).sum();
        assert_eq!(kraft, 1.0);
        // EOS is the last code of the longest length: thirty ones.
        assert_eq!(CANONICAL.symbols[256], EOS);
        assert_eq!(CANONICAL.first[30] + CANONICAL.count[30] - 1, (1 << 30) - 1);
    }

    #[test]
    fn every_byte_survives_huffman_coding() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        huffman_decode(&huffman_encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn huffman_padding_must_be_short_and_all_ones() {
        // "a" is 00011 (5 bits): three bits of ones pad it to a byte.
        let mut out = Vec::new();
        huffman_decode(&[0b0001_1111], &mut out).unwrap();
        assert_eq!(out, b"a");
        assert_eq!(
            huffman_decode(&[0b0001_1110], &mut Vec::new()),
            Err(HpackError::Huffman)
        );
        // A whole byte of ones is padding longer than 7 bits.
        assert_eq!(
            huffman_decode(&[0b0001_1111, 0xff], &mut Vec::new()),
            Err(HpackError::Huffman)
        );
        // EOS itself (thirty ones) inside a string.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut Vec::new()),
            Err(HpackError::Huffman)
        );
    }

    #[test]
    fn table_size_update_evicts_and_is_bounded_by_the_limit() {
        let mut decoder = Decoder::new(TABLE_SIZE, LIST_LIMIT);
        decode(&mut decoder, &unhex("410f 7777 772e 6578 616d 706c 652e 636f 6d")).unwrap();
        assert_eq!(decoder.table.len(), 1);
        // Size 0 empties the table; index 62 is then gone.
        assert_eq!(decode(&mut decoder, &[0x20, 0xbe]), Err(HpackError::BadIndex(62)));
        // 4097 > 4096: 001 11111, then 4097 - 31 = 4066 = 0xe2 0x1f.
        assert_eq!(
            decode(&mut decoder, &[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSizeTooLarge {
                asked: 4097,
                limit: TABLE_SIZE
            })
        );
        assert_eq!(
            decode(&mut decoder, &[0x82, 0x20]),
            Err(HpackError::LateTableSizeUpdate)
        );
    }

    #[test]
    fn field_larger_than_the_table_empties_it() {
        let mut decoder = Decoder::new(64, LIST_LIMIT);
        decode(&mut decoder, &unhex("4103 6162 63")).unwrap();
        assert_eq!(decoder.table.len(), 1);
        // :authority (10) + 40 + 32 = 82 > 64.
        let mut block = vec![0x41, 40];
        block.extend_from_slice(&[b'x'; 40]);
        decode(&mut decoder, &block).unwrap();
        assert!(decoder.table.is_empty());
        assert_eq!(decoder.size, 0);
    }

    #[test]
    fn header_list_over_the_limit_is_refused() {
        // One 3000-byte entry, then indexed again and again.
        let mut decoder = Decoder::new(TABLE_SIZE, LIST_LIMIT);
        let mut block = vec![0x40, 0x01, b'x', 0x7f];
        let mut len = 3000 - 0x7f;
        while len >= 0x80 {
            block.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        block.push(len as u8);
        block.extend_from_slice(&[b'v'; 3000]);
        block.extend_from_slice(&[0xbe; 64]);
        assert_eq!(decode(&mut decoder, &block), Err(HpackError::ListTooLarge(LIST_LIMIT)));
    }

    #[test]
    fn malformed_blocks_are_errors() {
        for (block, error) in [
            (&[0xff][..], HpackError::Truncated),
            (&[0xff, 0x80, 0x80, 0x80, 0x80, 0x01][..], HpackError::IntegerOverflow),
            (&[0x80][..], HpackError::BadIndex(0)),
            (&[0xbe][..], HpackError::BadIndex(62)),
            (&[0x00, 0x05, b'a'][..], HpackError::Truncated),
            (&[0x00][..], HpackError::Truncated),
            (&[0x3f][..], HpackError::Truncated),
            (&[0x00, 0x81, 0x00, 0x00][..], HpackError::Huffman),
        ] {
            let mut decoder = Decoder::new(TABLE_SIZE, LIST_LIMIT);
            assert_eq!(decode(&mut decoder, block), Err(error), "{block:02x?}");
        }
    }

    #[test]
    fn literals_round_trip_through_a_decoder_without_a_table() {
        let mut out = Vec::new();
        let long = "v".repeat(300);
        encode_literal(&mut out, b"x-long", long.as_bytes(), false);
        encode_literal(&mut out, b"authorization", b"secret", true);
        encode_literal(&mut out, b"e", b"", false);
        let mut decoder = Decoder::new(0, LIST_LIMIT);
        assert_eq!(
            decode(&mut decoder, &out).unwrap(),
            vec![
                ("x-long".into(), long, false),
                ("authorization".into(), "secret".into(), true),
                ("e".into(), "".into(), false)
            ]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_blocks_never_panic(blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
            let mut decoder = Decoder::new(TABLE_SIZE, 4096);
            for block in blocks {
                let _ = decode(&mut decoder, &block);
                prop_assert!(decoder.size <= TABLE_SIZE);
            }
        }

        #[test]
        fn arbitrary_strings_round_trip_through_huffman(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            huffman_decode(&huffman_encode(&bytes), &mut out).unwrap();
            prop_assert_eq!(out, bytes);
        }
    }
}
