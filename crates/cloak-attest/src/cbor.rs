//! The subset of CBOR (RFC 8949) that attestation evidence uses, with no dependencies: the
//! launcher encodes simulated evidence with it, the verifiers decode Nitro documents, COSE
//! envelopes and TCG DICE evidence.
//!
//! The decoder is strict on purpose, since every byte it reads is attacker-controlled: definite
//! lengths only, no floats, at most [`MAX_DEPTH`] levels of nesting, lengths never larger than
//! the bytes left (so a forged length cannot make it allocate), and [`decode`] rejects trailing
//! bytes.

use std::fmt;

/// Nesting limit for arrays, maps and tags; real evidence nests at most four levels deep.
pub const MAX_DEPTH: usize = 16;

/// A decoded CBOR data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Major type 0.
    Unsigned(u64),
    /// Major type 1: the value is `-1 - n`, kept as `n` so that no value overflows.
    Negative(u64),
    /// Major type 2.
    Bytes(Vec<u8>),
    /// Major type 3.
    Text(String),
    /// Major type 4.
    Array(Vec<Value>),
    /// Major type 5, in the order of the input.
    Map(Vec<(Value, Value)>),
    /// Major type 6.
    Tag(u64, Box<Value>),
    /// Simple values false and true.
    Bool(bool),
    /// Simple value null.
    Null,
}

/// Why bytes are not the CBOR this module accepts; `offset` is where decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the input.
    pub offset: usize,
    /// What was wrong there.
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

/// Decode exactly one data item that spans all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder { bytes, pos: 0 };
    let value = d.item(0)?;
    if d.pos != bytes.len() {
        return Err(d.err("trailing bytes after the CBOR item"));
    }
    Ok(value)
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err("truncated CBOR"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn argument(&mut self, info: u8) -> Result<u64, DecodeError> {
        let n = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Err(self.err("indefinite-length CBOR is not accepted")),
            _ => return Err(self.err("reserved CBOR additional information")),
        };
        let b = self.take(n)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A length that fits in what is left of the input (each element takes at least a byte).
    fn length(&mut self, info: u8) -> Result<usize, DecodeError> {
        let n = self.argument(info)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(self.err("CBOR length beyond the end of the input"));
        }
        Ok(n as usize)
    }

    fn item(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("CBOR nested too deeply"));
        }
        let initial = self.take(1)?[0];
        let (major, info) = (initial >> 5, initial & 0x1f);
        Ok(match major {
            0 => Value::Unsigned(self.argument(info)?),
            1 => Value::Negative(self.argument(info)?),
            2 => {
                let n = self.length(info)?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            3 => {
                let n = self.length(info)?;
                let start = self.pos;
                let raw = self.take(n)?.to_vec();
                Value::Text(String::from_utf8(raw).map_err(|_| DecodeError {
                    offset: start,
                    what: "CBOR text is not UTF-8",
                })?)
            }
            4 => {
                let n = self.length(info)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Value::Array(items)
            }
            5 => {
                let n = self.length(info)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.item(depth + 1)?;
                    let v = self.item(depth + 1)?;
                    entries.push((k, v));
                }
                Value::Map(entries)
            }
            6 => {
                let tag = self.argument(info)?;
                Value::Tag(tag, Box::new(self.item(depth + 1)?))
            }
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 => Value::Null,
                _ => return Err(self.err("unsupported CBOR simple value or float")),
            },
        })
    }
}

impl Value {
    /// The entry of a map whose key is the text `key`, if this is a map.
    #[cfg_attr(not(feature = "verify"), allow(dead_code))]
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entry of a map whose key is the integer `key`.
    pub fn get_int(&self, key: i64) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_i64() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The integer this value holds, if it fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Unsigned(n) => i64::try_from(n).ok(),
            Value::Negative(n) => i64::try_from(n).ok().map(|n| -1 - n),
            _ => None,
        }
    }

    /// Encode this value (definite lengths, shortest arguments, map entries in their order).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Unsigned(n) => head(out, 0, *n),
            Value::Negative(n) => head(out, 1, *n),
            Value::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Text(t) => {
                head(out, 3, t.len() as u64);
                out.extend_from_slice(t.as_bytes());
            }
            Value::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.encode_into(out);
                }
            }
            Value::Map(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.encode_into(out);
                    v.encode_into(out);
                }
            }
            Value::Tag(t, v) => {
                head(out, 6, *t);
                v.encode_into(out);
            }
            Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Value::Null => out.push(0xf6),
        }
    }
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::uint_small(Value::Unsigned(23), "17")]
    #[case::uint_1byte(Value::Unsigned(24), "1818")]
    #[case::uint_8byte(Value::Unsigned(u64::MAX), "1bffffffffffffffff")]
    #[case::negative(Value::Negative(34), "3822")]
    #[case::bytes(Value::Bytes(vec![1, 2]), "420102")]
    #[case::text(Value::Text("a".into()), "6161")]
    #[case::tag_60000(Value::Tag(60000, Box::new(Value::Null)), "d9ea60f6")]
    #[case::map(Value::Map(vec![(Value::Unsigned(1), Value::Negative(34))]), "a1013822")]
    fn encodes_like_rfc_8949_appendix_a(#[case] v: Value, #[case] hex_: &str) {
        assert_eq!(hex::encode(v.encode()), hex_);
        assert_eq!(decode(&v.encode()).unwrap(), v);
    }

    #[rstest::rstest]
    #[case::trailing("0000", "trailing")]
    #[case::truncated("19ff", "truncated")]
    #[case::indefinite("5f", "indefinite")]
    #[case::huge_length("5bffffffffffffffff", "beyond the end")]
    #[case::huge_array("9bffffffffffffffff", "beyond the end")]
    #[case::float("f93c00", "float")]
    #[case::bad_utf8("61ff", "UTF-8")]
    fn rejects(#[case] hex_: &str, #[case] what: &str) {
        let e = decode(&hex::decode(hex_).unwrap()).unwrap_err();
        assert!(e.what.contains(what), "{e}");
    }

    #[test]
    fn rejects_deep_nesting_without_recursing_further() {
        let bytes = vec![0x81; 10_000];
        assert!(decode(&bytes).unwrap_err().what.contains("deeply"));
    }
}
